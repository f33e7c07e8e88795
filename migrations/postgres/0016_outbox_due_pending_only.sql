-- outbox_due found the messages due, but held every message ever queued: each delivery
-- moved its entry from the unsent end to the sent one, an index write that no query
-- reads. Only unsent messages are in it now; it stays as small as the backlog.
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE sent_at IS NULL;
