-- Payments that expire (issue 24): a deadline, and the status `expired` it leads to.

ALTER TABLE payments ADD COLUMN expires_at timestamptz;

-- The status check is rebuilt with every status of shared/payment.py (005 rebuilt it with
-- partially_refunded; 001 named it payments_status_check inline). Only it, by name:
-- 005's payments_refund_status_check also mentions status and must stay.
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'processing', 'completed', 'failed', 'cancelled', 'refunded', 'partially_refunded', 'expired'));
