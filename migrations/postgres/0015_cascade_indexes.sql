-- Every foreign key that cascades has an index starting with its column: deleting a user
-- (or a project) looked for its login requests, events and messages by reading the whole
-- table, while holding the writer on SQLite. login_requests_by_name served no query and,
-- keyed by a random name, cost each code start a random page: project_id and user_id
-- grow with the rows, so their indexes are written at their ends.
DROP INDEX login_requests_by_name;
CREATE INDEX login_requests_by_project ON login_requests (project_id);
CREATE INDEX login_requests_by_user ON login_requests (user_id);
CREATE INDEX events_by_owner ON events (owner_id);
CREATE INDEX outbox_by_project ON outbox (project_id);
