-- Issue 23: the outbox becomes the permanent event log. Rows are no longer deleted once
-- published (the relay marks them, and nothing purges them): every event of every payment
-- is kept, with who caused it and which command, for the history and for
-- `payments replay --from postgres`. One write per event, as before.

ALTER TABLE outbox ADD COLUMN actor text;
ALTER TABLE outbox ADD COLUMN command_id text;
UPDATE outbox SET actor = convert_from(payload, 'UTF8')::jsonb ->> 'actor',
                  command_id = convert_from(payload, 'UTF8')::jsonb ->> 'commandid';

-- Only the purge read it, and every publish paid for it.
DROP INDEX IF EXISTS outbox_published_at;

COMMENT ON TABLE outbox IS
    'The event log: one row per payment event, kept for good; published_at IS NULL until the relay sent it';
