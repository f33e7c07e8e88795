-- Browser origins allowed to call a project's HTTP endpoints (CORS), space-separated.

ALTER TABLE projects ADD COLUMN allowed_origins TEXT;
