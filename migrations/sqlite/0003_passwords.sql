-- Email + password accounts: project settings, failed-login counters, reset tokens.
-- (users.password_hash exists since 0001.) Times are Unix seconds; flags are 0/1.

-- When 1, Register answers ALREADY_EXISTS for a known email instead of mailing its owner.
ALTER TABLE projects ADD COLUMN password_reveal_existing INTEGER NOT NULL DEFAULT 0;
-- The page the reset link points to (`?token=...` is appended); NULL: the page this
-- service hosts at PUBLIC_URL/project/{id}/auth/password/reset.
ALTER TABLE projects ADD COLUMN password_reset_url TEXT;
ALTER TABLE projects ADD COLUMN password_reset_lifetime_seconds INTEGER NOT NULL DEFAULT 3600;

-- Password checks per key ('account:<project>:<email>' or 'address:<ip>') in a fixed
-- window that starts at the first check: failures, and checks still running (pending),
-- which count against the limit until they are judged. In the database, so the limits
-- hold across replicas.
CREATE TABLE password_failures (
    key TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    window_started_at INTEGER NOT NULL
);

-- At most one reset token per user: a new request replaces the previous token.
CREATE TABLE password_resets (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
