-- The project_id foreign key of login requests goes, with the index that served only its
-- cascade: the rows already go with their user, whose project deletes it. (On SQLite this
-- saves each code start an index insert in the one writer; here the schemas stay alike.)
ALTER TABLE login_requests DROP CONSTRAINT login_requests_project_id_fkey;
DROP INDEX login_requests_by_project;
