-- callwatch's system of record: money and history.
-- Applied by `callwatch migrate` (and at service start) inside one
-- transaction, in the schema the operator chose (search_path is set to it).
-- Every table that takes rows from a queue has a natural key, so a retried
-- batch inserts with ON CONFLICT DO NOTHING and lands each row once.

-- A chat's current subscription. Written from payments, never before them.
CREATE TABLE subscriptions (
    chat_id        BIGINT PRIMARY KEY CHECK (chat_id <> 0),
    plan           TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('active', 'expired', 'cancelled')),
    expires_at     TIMESTAMPTZ NOT NULL,
    payment_method TEXT,
    amount_sol     NUMERIC(20, 9),
    amount_usd     NUMERIC(20, 2),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every credit, paid or granted. A transaction signature credits once.
CREATE TABLE payments (
    id             BIGSERIAL PRIMARY KEY,
    chat_id        BIGINT      NOT NULL CHECK (chat_id <> 0),
    payment_method TEXT        NOT NULL CHECK (payment_method IN ('solana', 'grant')),
    signature      TEXT UNIQUE,
    reference      TEXT,
    plan           TEXT        NOT NULL,
    days           INTEGER     NOT NULL CHECK (days > 0),
    amount_sol     NUMERIC(20, 9),
    amount_usd     NUMERIC(20, 2),
    granted_by     BIGINT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A Solana payment names its transaction; a grant names its admin.
    CHECK ((payment_method = 'solana') = (signature IS NOT NULL)),
    CHECK ((payment_method = 'grant') = (granted_by IS NOT NULL))
);
CREATE INDEX payments_chat_id ON payments (chat_id, created_at);

-- What users did (commands, settings); keyed by the queue entry that
-- carried it.
CREATE TABLE activity_log (
    event_id      TEXT PRIMARY KEY,
    chat_id       BIGINT      NOT NULL,
    activity_type TEXT        NOT NULL,
    metadata      JSONB,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX activity_log_chat_id ON activity_log (chat_id, created_at);

-- One row per alert the engine decided, and, once sent, Telegram's id for it.
-- `threshold` is 0 for call alerts; an alert is identified by what it is
-- about and when it fired.
CREATE TABLE alert_audit (
    chat_id             BIGINT           NOT NULL,
    token               TEXT             NOT NULL,
    kind                TEXT             NOT NULL CHECK (kind IN ('call_alert', 'multiplier_alert')),
    threshold           DOUBLE PRECISION NOT NULL DEFAULT 0,
    alert_at            TIMESTAMPTZ      NOT NULL,
    fdv_usd             DOUBLE PRECISION NOT NULL,
    fdv_at_call         DOUBLE PRECISION,
    multiplier          DOUBLE PRECISION,
    callers             BIGINT[],
    telegram_message_id BIGINT,
    sent_at             TIMESTAMPTZ,
    PRIMARY KEY (chat_id, token, kind, threshold, alert_at)
);

-- Calls as they arrived, for the leaderboard and for replays.
CREATE TABLE calls (
    token      TEXT             NOT NULL,
    channel_id BIGINT           NOT NULL CHECK (channel_id <> 0),
    called_at  TIMESTAMPTZ      NOT NULL,
    fdv_usd    DOUBLE PRECISION NOT NULL CHECK (fdv_usd > 0),
    PRIMARY KEY (token, channel_id, called_at)
);
CREATE INDEX calls_channel ON calls (channel_id, called_at);
