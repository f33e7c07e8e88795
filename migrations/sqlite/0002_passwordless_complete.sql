-- The rest of the passwordless API: project settings for links, texts and external
-- tokens; recovery tokens; events and their logs; the project of each queued message.

ALTER TABLE projects ADD COLUMN link_base TEXT;
ALTER TABLE projects ADD COLUMN sms_webhook_url TEXT;
ALTER TABLE projects ADD COLUMN sms_webhook_secret TEXT;
ALTER TABLE projects ADD COLUMN external_issuer TEXT;
ALTER TABLE projects ADD COLUMN external_audience TEXT;
ALTER TABLE projects ADD COLUMN external_key_pem TEXT;

ALTER TABLE outbox ADD COLUMN project_id TEXT REFERENCES projects(id) ON DELETE CASCADE;

CREATE TABLE recovery_tokens (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_project ON events (project_id);

CREATE TABLE logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    data TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX logs_by_event ON logs (event_id, id);
CREATE INDEX outbox_by_recipient ON outbox (recipient, created_at);
