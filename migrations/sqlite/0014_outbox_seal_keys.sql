-- A message's subject and body are sealed to a random key of the row's own, known before
-- the insert, so queueing a message is one statement (sealing to the id took an insert
-- and an update). Rows queued before keep NULL here and stay sealed to their id.
ALTER TABLE outbox ADD COLUMN seal_key TEXT;
