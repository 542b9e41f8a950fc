-- Partial refunds (issue 24): a payment holds what was refunded of it and its refunds,
-- on its own row, so the row lock a refund takes (SELECT ... FOR UPDATE) guards both and
-- concurrent refunds can never refund more than the amount; the CHECKs say so again.

ALTER TABLE payments ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN refunds jsonb NOT NULL DEFAULT '[]'::jsonb;

-- A payment refunded before partial refunds existed was refunded in full.
UPDATE payments SET amount_refunded = amount WHERE status = 'refunded';

ALTER TABLE payments ADD CONSTRAINT payments_amount_refunded_check
    CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
ALTER TABLE payments ADD CONSTRAINT payments_refund_status_check
    CHECK ((status = 'partially_refunded') = (amount_refunded > 0 AND amount_refunded < amount)
           AND (status <> 'refunded' OR amount_refunded = amount));

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('processing', 'completed', 'failed', 'cancelled', 'refunded', 'partially_refunded'));
