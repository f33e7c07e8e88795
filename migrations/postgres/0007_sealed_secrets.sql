-- Secrets at rest are sealed with the master key (see src/domain/sealing.rs). This row
-- holds a known value sealed with it, so a start with the wrong key is refused before
-- anything is read or written, instead of failing later or sealing with a new key.
CREATE TABLE master_key_check (
    id BIGINT PRIMARY KEY NOT NULL,
    sealed BYTEA NOT NULL
);
