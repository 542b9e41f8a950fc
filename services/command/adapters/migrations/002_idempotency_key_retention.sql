-- Idempotency keys expire (PAYMENTS_IDEMPOTENCY_KEY_RETENTION_SECONDS, 24 h by default):
-- the relay's purge deletes old ones by creation time.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
