-- A grant names the command that made it, so that the same command handled
-- again (Telegram delivering its update twice, an admin repeating it by its
-- id after a partial failure) credits once. Grants recorded before this
-- migration have none.
ALTER TABLE payments ADD COLUMN grant_id TEXT UNIQUE;
ALTER TABLE payments ADD CONSTRAINT payments_grant_id_is_a_grant
    CHECK (grant_id IS NULL OR payment_method = 'grant');
