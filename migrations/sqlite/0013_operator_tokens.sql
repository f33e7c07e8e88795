-- Operator tokens for the OperatorService (many tenants); only hashes are kept. The
-- service is off while this table is empty.
CREATE TABLE operator_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
);
