-- Session JWTs of the project carry Hasura's claim (https://hasura.io/jwt/claims).
ALTER TABLE projects ADD COLUMN hasura_jwt_claims INTEGER NOT NULL DEFAULT 0;
