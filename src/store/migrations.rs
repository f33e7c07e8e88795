//! Migrations, embedded in the binary so a deployed service needs no files beside it.
//! Each backend has its own folder with the same file names.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

use super::Backend;

/// (version, description, SQLite SQL, PostgreSQL SQL)
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../../migrations/sqlite/0001_foundation.sql"),
        include_str!("../../migrations/postgres/0001_foundation.sql"),
    ),
    (
        2,
        "passwordless complete",
        include_str!("../../migrations/sqlite/0002_passwordless_complete.sql"),
        include_str!("../../migrations/postgres/0002_passwordless_complete.sql"),
    ),
    (
        3,
        "passwords",
        include_str!("../../migrations/sqlite/0003_passwords.sql"),
        include_str!("../../migrations/postgres/0003_passwords.sql"),
    ),
    (
        4,
        "allowed origins",
        include_str!("../../migrations/sqlite/0004_allowed_origins.sql"),
        include_str!("../../migrations/postgres/0004_allowed_origins.sql"),
    ),
    (
        5,
        "login request clients",
        include_str!("../../migrations/sqlite/0005_login_request_clients.sql"),
        include_str!("../../migrations/postgres/0005_login_request_clients.sql"),
    ),
    (
        6,
        "limits",
        include_str!("../../migrations/sqlite/0006_limits.sql"),
        include_str!("../../migrations/postgres/0006_limits.sql"),
    ),
    (
        7,
        "sealed secrets",
        include_str!("../../migrations/sqlite/0007_sealed_secrets.sql"),
        include_str!("../../migrations/postgres/0007_sealed_secrets.sql"),
    ),
    (
        8,
        "email verification",
        include_str!("../../migrations/sqlite/0008_email_verification.sql"),
        include_str!("../../migrations/postgres/0008_email_verification.sql"),
    ),
    (
        9,
        "retired uids",
        include_str!("../../migrations/sqlite/0009_retired_uids.sql"),
        include_str!("../../migrations/postgres/0009_retired_uids.sql"),
    ),
    (
        10,
        "outbox leases",
        include_str!("../../migrations/sqlite/0010_outbox_leases.sql"),
        include_str!("../../migrations/postgres/0010_outbox_leases.sql"),
    ),
    (
        11,
        "health checks",
        include_str!("../../migrations/sqlite/0011_health_checks.sql"),
        include_str!("../../migrations/postgres/0011_health_checks.sql"),
    ),
    (
        12,
        "hasura jwt claims",
        include_str!("../../migrations/sqlite/0012_hasura_jwt_claims.sql"),
        include_str!("../../migrations/postgres/0012_hasura_jwt_claims.sql"),
    ),
    (
        13,
        "operator tokens",
        include_str!("../../migrations/sqlite/0013_operator_tokens.sql"),
        include_str!("../../migrations/postgres/0013_operator_tokens.sql"),
    ),
    (
        14,
        "outbox seal keys",
        include_str!("../../migrations/sqlite/0014_outbox_seal_keys.sql"),
        include_str!("../../migrations/postgres/0014_outbox_seal_keys.sql"),
    ),
    (
        15,
        "cascade indexes",
        include_str!("../../migrations/sqlite/0015_cascade_indexes.sql"),
        include_str!("../../migrations/postgres/0015_cascade_indexes.sql"),
    ),
    (
        16,
        "login requests leaner",
        include_str!("../../migrations/sqlite/0016_login_requests_leaner.sql"),
        include_str!("../../migrations/postgres/0016_login_requests_leaner.sql"),
    ),
];

pub(super) fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sqlite, postgres)| {
            let sql = match backend {
                Backend::Sqlite => sqlite,
                Backend::Postgres => postgres,
            };
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn run(pool: &sqlx::AnyPool, sql: &str) {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }

    async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
        sqlx::query(sql).fetch_one(pool).await.expect(sql).get(0)
    }

    /// Migration 16 rebuilds SQLite's login_requests: the rows of a database made before
    /// it survive as they were, new ones get new ids, and they still go with their user
    /// and with their project (through its users), though no key names the project now.
    #[tokio::test]
    async fn the_login_requests_rebuild_keeps_rows_and_cascades() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let mut before = migrator(Backend::Sqlite);
        before.migrations = Cow::Owned(
            before
                .migrations
                .iter()
                .filter(|m| m.version < 16)
                .cloned()
                .collect(),
        );
        before.run(&pool).await.unwrap();
        run(&pool, "INSERT INTO projects (id, name, app_token, admin_token_hash, created_at) VALUES ('p', 'P', 'app_p', x'01', 1), ('q', 'Q', 'app_q', x'02', 1)").await;
        run(&pool, "INSERT INTO users (uid, project_id, name, created_at) VALUES ('u1', 'p', 'a@example.com', 1), ('u2', 'p', 'b@example.com', 1), ('u3', 'q', 'c@example.com', 1)").await;
        run(&pool, "INSERT INTO login_requests (token_hash, project_id, user_id, name, code_hmac, link_token_hash, attempts_left, attempted, expires_at, confirmed_at, consumed_at, created_at, client_block)
             SELECT x'aa' || id, project_id, id, name, x'cc', x'dd' || id, 3, 1, 600, 7, NULL, 5, '10.0.0' FROM users").await;
        let rows = "SELECT group_concat(id || hex(token_hash) || project_id || user_id || name || hex(code_hmac) || hex(link_token_hash) || attempts_left || attempted || expires_at || ifnull(confirmed_at, '-') || ifnull(consumed_at, '-') || created_at || client_block, '|') FROM login_requests ORDER BY id";
        let kept: String = sqlx::query(rows).fetch_one(&pool).await.unwrap().get(0);

        migrator(Backend::Sqlite).run(&pool).await.unwrap();
        let after: String = sqlx::query(rows).fetch_one(&pool).await.unwrap().get(0);
        assert_eq!(after, kept, "every row as it was");
        let by_project =
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'login_requests_by_project'";
        assert_eq!(count(&pool, by_project).await, 0);
        let foreign = "SELECT COUNT(*) FROM pragma_foreign_key_list('login_requests')";
        assert_eq!(count(&pool, foreign).await, 1, "only user_id's key is left");

        run(&pool, "INSERT INTO login_requests (token_hash, project_id, user_id, name, code_hmac, attempts_left, expires_at, created_at) VALUES (x'ee', 'p', 1, 'a@example.com', x'cc', 3, 600, 9)").await;
        assert_eq!(count(&pool, "SELECT MAX(id) FROM login_requests").await, 4);
        run(&pool, "DELETE FROM users WHERE uid = 'u1'").await;
        let left = "SELECT COUNT(*) FROM login_requests";
        assert_eq!(
            count(&pool, left).await,
            2,
            "the user's two requests went with it"
        );
        run(&pool, "DELETE FROM projects WHERE id = 'p'").await;
        assert_eq!(
            count(&pool, left).await,
            1,
            "the project's went with its users"
        );
        assert_eq!(count(&pool, "SELECT user_id FROM login_requests").await, 3);
    }
}
