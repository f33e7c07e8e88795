-- The uids of deleted users: a uid once given to a user is never given to another (an
-- import naming one is refused), so a token, log line or foreign row that still carries
-- it can never point at someone else.
CREATE TABLE retired_uids (
    uid TEXT PRIMARY KEY NOT NULL,
    retired_at INTEGER NOT NULL
);
