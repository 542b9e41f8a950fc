"""The webhooks wing (issue 27): endpoints an organization registers, and the deliveries
of its payment events to them, signed, in version order per payment, retried on Temporal."""
