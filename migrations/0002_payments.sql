-- Payments in SOL: quotes, the watcher's place in the chain, payments that
-- matched nothing, and the reminders sent. Credits themselves land in
-- `payments` and `subscriptions` (0001), with a unique signature.

-- What a chat was asked to pay. The reference is a random public key the
-- payer's wallet adds to the transfer (Solana Pay), so a transaction names
-- its quote.
CREATE TABLE payment_quotes (
    reference         TEXT PRIMARY KEY,
    chat_id           BIGINT      NOT NULL CHECK (chat_id <> 0),
    plan              TEXT        NOT NULL,
    days              INTEGER     NOT NULL CHECK (days > 0),
    lamports          BIGINT      NOT NULL CHECK (lamports > 0),
    receiving_address TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    expires_at        TIMESTAMPTZ NOT NULL CHECK (expires_at > created_at)
);
CREATE INDEX payment_quotes_created_at ON payment_quotes (created_at);

-- Per receiving address, the newest signature below which every
-- transaction has been handled: a restart reads on from here.
CREATE TABLE payment_cursor (
    address    TEXT PRIMARY KEY,
    signature  TEXT        NOT NULL,
    slot       BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Credited transactions whose subscribe event is published and whose
-- confirmation was handed over. A credit committed without one (a crash,
-- Redis down) is announced when the transaction is read again.
CREATE TABLE payments_announced (
    signature    TEXT PRIMARY KEY,
    announced_at TIMESTAMPTZ NOT NULL
);

-- Transactions that brought money, or named a quote, but credited nothing;
-- kept for an admin, who may credit one to a chat (once: the credit carries
-- the transaction's signature).
CREATE TABLE unmatched_payments (
    signature        TEXT PRIMARY KEY,
    reason           TEXT        NOT NULL CHECK (reason IN
                         ('underpaid', 'wrong_recipient', 'unknown_reference',
                          'quote_expired', 'failed')),
    -- What the receiving address's balance did, in lamports.
    received         BIGINT      NOT NULL,
    -- The quote it named, if any, and what that quote asked.
    reference        TEXT,
    chat_id          BIGINT,
    wanted           BIGINT,
    block_time       TIMESTAMPTZ,
    seen_at          TIMESTAMPTZ NOT NULL,
    resolved_by      BIGINT,
    resolved_chat_id BIGINT,
    resolved_at      TIMESTAMPTZ,
    CHECK ((resolved_by IS NULL) = (resolved_at IS NULL)),
    CHECK ((resolved_by IS NULL) = (resolved_chat_id IS NULL))
);
CREATE INDEX unmatched_payments_open ON unmatched_payments (seen_at)
    WHERE resolved_at IS NULL;

-- Expiry reminders, each sent once per expiry: a renewal has a new
-- expires_at and so gets reminders of its own.
CREATE TABLE subscription_reminders (
    chat_id    BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    kind       TEXT        NOT NULL CHECK (kind IN ('3d', '1d')),
    sent_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (chat_id, expires_at, kind)
);
