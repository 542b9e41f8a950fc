-- Write side of payments-cqs: payments, the transactional outbox, command results and
-- idempotency records. Applied by `payments migrate` (and at start-up), once.

CREATE TABLE payments (
    id              text        PRIMARY KEY,
    organization_id text        NOT NULL,
    user_id         text,
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    status          text        NOT NULL
                    CHECK (status IN ('processing', 'completed', 'failed', 'cancelled', 'refunded')),
    description     text        NOT NULL DEFAULT '',
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version         integer     NOT NULL CHECK (version >= 1),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX payments_org_created ON payments (organization_id, created_at);

-- One row per event, written in the same transaction as the payment change.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    payment_id      text        NOT NULL,          -- the Kafka message key
    payment_version integer     NOT NULL,
    event_type      text        NOT NULL,
    payload         bytea       NOT NULL,          -- the CloudEvent, JSON bytes as sent
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    UNIQUE (payment_id, payment_version)
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_unpublished_key ON outbox (payment_id, id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Result of every executed command: makes a retried activity return the first result.
CREATE TABLE commands (
    organization_id text        NOT NULL,
    command_id      text        NOT NULL,
    command_type    text        NOT NULL,
    payment_id      text,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, command_id)
);

-- HTTP Idempotency-Key records: the first response is replayed for the same key + body.
CREATE TABLE idempotency_keys (
    organization_id text        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    status_code     integer,
    response_body   bytea,
    response_headers jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, key)
);
