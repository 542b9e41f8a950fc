-- Payments that expire (issue 24): a deadline, and the status `expired` it leads to.

ALTER TABLE payments ADD COLUMN expires_at timestamptz;

-- The status check is rebuilt whatever it was named (inline in 001, or rebuilt by 005):
-- every check constraint of payments that names the status column goes, and one that
-- allows every status of shared/payment.py comes back (partially_refunded included, so
-- that the order in which 005 and 006 land does not matter).
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'payments'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%status%'
    LOOP
        EXECUTE format('ALTER TABLE payments DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'processing', 'completed', 'failed', 'cancelled', 'refunded', 'partially_refunded', 'expired'));
