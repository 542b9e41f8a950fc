-- Webhooks (issue 27): endpoints per organization and one delivery per (endpoint, event).
-- Signing secrets are stored encrypted (services/webhooks/adapters/secret_box.py): a dump
-- of this table does not reveal them.

CREATE TABLE webhook_endpoints (
    organization_id text NOT NULL,
    id text NOT NULL,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    events text[] NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    secret_encrypted bytea NOT NULL,
    -- The secret before the last rotation keeps signing until previous_secret_until.
    previous_secret_encrypted bytea,
    previous_secret_until timestamptz,
    -- Set at the first failed attempt after a success, cleared by the next success.
    failing_since timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    organization_id text NOT NULL,
    endpoint_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    payment_id text NOT NULL,
    payment_version integer NOT NULL,
    payload bytea NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    -- Bumped by each redelivery, so that the workflow takes the same delivery again.
    generation integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error text,
    next_attempt_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    UNIQUE (endpoint_id, organization_id, event_id),
    FOREIGN KEY (organization_id, endpoint_id) REFERENCES webhook_endpoints (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (organization_id, endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, created_at) WHERE status = 'pending';
