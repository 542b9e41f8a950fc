-- Payment ids belong to their organization (issue 11): the same id may exist in two
-- organizations, and one organization can neither block nor detect another's ids.

ALTER TABLE payments DROP CONSTRAINT payments_pkey;
ALTER TABLE payments ADD PRIMARY KEY (organization_id, id);

-- The outbox names the payment by (organization, id) too; existing rows take the
-- organization from their CloudEvent.
ALTER TABLE outbox ADD COLUMN organization_id text;
UPDATE outbox SET organization_id = convert_from(payload, 'UTF8')::jsonb ->> 'organizationid';
ALTER TABLE outbox ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_payment_id_payment_version_key;
ALTER TABLE outbox ADD UNIQUE (organization_id, payment_id, payment_version);
