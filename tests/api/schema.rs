//! The two migration folders describe one schema: after migrating, SQLite and PostgreSQL
//! have the same tables and columns, of the same kind (integer, text, bytes) and
//! nullability. A migration added to one folder and forgotten in the other fails here.

use crate::helpers::*;
use sqlx::Row;
use std::collections::BTreeMap;

/// (table, column) → (kind, nullable).
type Schema = BTreeMap<(String, String), (&'static str, bool)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrate_to_the_same_tables_columns_and_types() {
    if postgres_admin_url().is_none() {
        return;
    }
    let sqlite = TestDatabase::new(Backend::Sqlite).await;
    let postgres = TestDatabase::new(Backend::Postgres).await;
    for db in [&sqlite, &postgres] {
        let store = portcullis::store::Store::connect(&db.url).expect("connect");
        store.migrate().await.expect("migrate");
        store.close().await;
    }
    let on_sqlite = sqlite_schema(&sqlite.url).await;
    let on_postgres = postgres_schema(&postgres.url).await;
    assert!(
        on_sqlite.len() > 50,
        "the schema was read: {} columns",
        on_sqlite.len()
    );
    let only = |a: &Schema, b: &Schema| -> Vec<String> {
        a.iter()
            .filter(|(key, value)| b.get(*key) != Some(value))
            .map(|((table, column), (kind, nullable))| {
                format!(
                    "{table}.{column} {kind}{}",
                    if *nullable { " NULL" } else { "" }
                )
            })
            .collect()
    };
    assert_eq!(
        (
            only(&on_sqlite, &on_postgres),
            only(&on_postgres, &on_sqlite)
        ),
        (Vec::new(), Vec::new()),
        "(SQLite only, PostgreSQL only): the migration folders drifted apart"
    );
}

async fn sqlite_schema(url: &str) -> Schema {
    let pool = sqlx::AnyPool::connect(url).await.expect("open SQLite");
    let rows = sqlx::query(
        "SELECT m.name AS table_name, p.name AS column_name, p.type AS declared,
                p.\"notnull\" AS not_null, p.pk AS pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx_%'",
    )
    .fetch_all(&pool)
    .await
    .expect("read SQLite's schema");
    pool.close().await;
    rows.iter()
        .map(|row| {
            let declared: String = row.get("declared");
            let not_null: i64 = row.get("not_null");
            // A primary key column never holds NULL, declared so or not.
            let pk: i64 = row.get("pk");
            (
                (row.get("table_name"), row.get("column_name")),
                (kind(&declared), not_null == 0 && pk == 0),
            )
        })
        .collect()
}

async fn postgres_schema(url: &str) -> Schema {
    let pool = sqlx::AnyPool::connect(url).await.expect("open PostgreSQL");
    let rows = sqlx::query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name,
                data_type::text AS declared, is_nullable::text AS nullable
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx\\_%'",
    )
    .fetch_all(&pool)
    .await
    .expect("read PostgreSQL's schema");
    pool.close().await;
    rows.iter()
        .map(|row| {
            let declared: String = row.get("declared");
            let nullable: String = row.get("nullable");
            (
                (row.get("table_name"), row.get("column_name")),
                (kind(&declared), nullable == "YES"),
            )
        })
        .collect()
}

/// The kind of value a declared type holds, by SQLite's affinity rules (which also read
/// PostgreSQL's type names right).
fn kind(declared: &str) -> &'static str {
    let declared = declared.to_ascii_lowercase();
    if declared.contains("int") {
        "integer"
    } else if declared.contains("char") || declared.contains("text") || declared.contains("clob") {
        "text"
    } else if declared.contains("blob") || declared == "bytea" {
        "bytes"
    } else if declared.contains("bool") {
        "boolean"
    } else {
        "other"
    }
}

/// Every foreign key that cascades has an index starting with its column, on both
/// backends: without one, deleting a user or a project reads the whole child table (on
/// SQLite while holding the one writer, so every login waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cascading_foreign_key_is_indexed() {
    let mut databases = vec![TestDatabase::new(Backend::Sqlite).await];
    if postgres_admin_url().is_some() {
        databases.push(TestDatabase::new(Backend::Postgres).await);
    }
    for db in &databases {
        let store = portcullis::store::Store::connect(&db.url).expect("connect");
        store.migrate().await.expect("migrate");
        store.close().await;
        let sql = if db.url.starts_with("sqlite") {
            "SELECT m.name AS table_name, f.\"from\" AS column_name
             FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
             WHERE m.type = 'table' AND f.on_delete = 'CASCADE'
               AND NOT EXISTS (
                 SELECT 1 FROM pragma_index_list(m.name) l
                 JOIN pragma_index_info(l.name) i ON i.seqno = 0
                 WHERE i.name = f.\"from\")
               -- An INTEGER PRIMARY KEY is the table's own key, with no index of its own.
               AND NOT EXISTS (
                 SELECT 1 FROM pragma_table_info(m.name) t
                 WHERE t.name = f.\"from\" AND t.pk = 1)"
        } else {
            "SELECT c.conrelid::regclass::text AS table_name, a.attname::text AS column_name
             FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             WHERE c.contype = 'f' AND c.confdeltype = 'c'
               AND NOT EXISTS (SELECT 1 FROM pg_index i
                               WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])"
        };
        let pool = db.pool().await;
        let unindexed: Vec<String> = sqlx::query(sql)
            .fetch_all(&pool)
            .await
            .expect("read the foreign keys")
            .iter()
            .map(|row| {
                format!(
                    "{}.{}",
                    row.get::<String, _>("table_name"),
                    row.get::<String, _>("column_name")
                )
            })
            .collect();
        pool.close().await;
        assert!(unindexed.is_empty(), "{}: {unindexed:?}", db.url);
    }
}
