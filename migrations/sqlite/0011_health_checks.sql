-- One row the health check rewrites: a database that answers reads but refuses writes
-- (a full disk, a read-only replica) must show as NOT_SERVING.
CREATE TABLE health_checks (
    id INTEGER PRIMARY KEY NOT NULL,
    checked_at INTEGER NOT NULL
);
INSERT INTO health_checks (id, checked_at) VALUES (1, 0);
