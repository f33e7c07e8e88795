-- Limits that hold under concurrency and across code tokens.
-- Times are Unix seconds.

-- Every wrong login code, by name (email or phone): a name's failure budget spans all of
-- its code tokens, so asking for new codes does not buy new guesses.
CREATE TABLE code_failures (
    name TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX code_failures_by_name ON code_failures (name, failed_at);

-- Password checks still running count against a key only until this time: a check whose
-- process died (or whose result never came back) is forgotten, so it cannot lock the
-- account for the rest of the window.
ALTER TABLE password_failures ADD COLUMN pending_until BIGINT NOT NULL DEFAULT 0;
