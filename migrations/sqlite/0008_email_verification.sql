-- Projects may require a confirmed email before a password logs in; Register then mails
-- a verification link. Times are Unix seconds; flags are 0/1.
ALTER TABLE projects ADD COLUMN password_require_verified_email INTEGER NOT NULL DEFAULT 0;

-- At most one verification link per user: a new one replaces the previous.
CREATE TABLE email_verifications (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
