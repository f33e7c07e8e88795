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
