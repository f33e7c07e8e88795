-- Projects, users, login requests, sessions, signing keys, server secrets, outbox.
-- Times are Unix seconds; flags are 0/1 integers (one representation on both backends).

CREATE TABLE projects (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    app_token TEXT NOT NULL UNIQUE,
    admin_token_hash BLOB NOT NULL UNIQUE,
    anonymous_login INTEGER NOT NULL DEFAULT 0,
    recovery INTEGER NOT NULL DEFAULT 0,
    code_length INTEGER NOT NULL DEFAULT 4,
    code_lifetime_seconds INTEGER NOT NULL DEFAULT 600,
    code_attempts INTEGER NOT NULL DEFAULT 3,
    mail_sender TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT,
    root INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT,
    encrypted INTEGER NOT NULL DEFAULT 0,
    encryption_text TEXT,
    created_at INTEGER NOT NULL,
    verified_at INTEGER,
    UNIQUE (project_id, name)
);

CREATE TABLE login_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    code_hmac BLOB NOT NULL,
    link_token_hash BLOB UNIQUE,
    attempts_left INTEGER NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    consumed_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX login_requests_by_name ON login_requests (project_id, name, created_at);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    private_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sender TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (sent_at, next_attempt_at);
