-- Each message is leased by one worker at a time (short leases, renewed while sending):
-- the owner's token, so only the worker still holding the lease records the outcome.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
