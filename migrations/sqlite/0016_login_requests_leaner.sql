-- Login requests lose what every code start paid for in SQLite's one writer and nothing
-- used: the project_id foreign key (with login_requests_by_project, the index that served
-- only its cascade; the rows already go with their user, whose project deletes it) and
-- AUTOINCREMENT (its counter in sqlite_sequence was read and rewritten by each insert).
-- Ids never leave a transaction, so one reused after the newest request's user is
-- deleted is harmless. SQLite drops a foreign key only by rebuilding the table.
CREATE TABLE login_requests_rebuilt (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    code_hmac BLOB NOT NULL,
    link_token_hash BLOB UNIQUE,
    attempts_left INTEGER NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    consumed_at INTEGER,
    created_at INTEGER NOT NULL,
    client_block TEXT
);
INSERT INTO login_requests_rebuilt (
    id, token_hash, project_id, user_id, name, code_hmac, link_token_hash, attempts_left,
    attempted, expires_at, confirmed_at, consumed_at, created_at, client_block
)
SELECT
    id, token_hash, project_id, user_id, name, code_hmac, link_token_hash, attempts_left,
    attempted, expires_at, confirmed_at, consumed_at, created_at, client_block
FROM login_requests;
DROP TABLE login_requests;
ALTER TABLE login_requests_rebuilt RENAME TO login_requests;
CREATE INDEX login_requests_by_client ON login_requests (client_block, created_at);
CREATE INDEX login_requests_by_user ON login_requests (user_id);
