//! Rows to structs and back, written once per struct.
//!
//! `record!` declares a struct and implements `sqlx::FromRow` for it, reading each field
//! from the column of its name (or the one after `=>`), plus the list of its columns for
//! SELECTs and the binds for writes. It does what `#[derive(sqlx::FromRow)]` would; the
//! derive is not used because it pulls in `sqlx-macros-core`, which builds sqlx's SQLite
//! and PostgreSQL drivers (and SQLite's C code) a second time for the host: 76 more
//! crates to compile on every clean CI build.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row};

pub(super) type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// A value (or, for a nested record, a group of values) stored in columns of a row.
pub(super) trait Column: Sized {
    fn read(row: &AnyRow, column: &'static str) -> sqlx::Result<Self>;

    fn bind<'q>(&self, query: Query<'q>) -> Query<'q>;

    /// The columns this value occupies (one, unless it is a nested record).
    fn columns(column: &'static str, out: &mut Vec<&'static str>) {
        out.push(column);
    }
}

/// A struct read from and written to the columns of a row.
pub(super) trait Record: Column {
    /// Its columns, comma-separated, for SELECT and RETURNING lists.
    fn column_list() -> &'static str;

    /// Its columns, in the order [`Column::bind`] binds them.
    fn column_names() -> Vec<&'static str> {
        let mut out = Vec::new();
        Self::columns("", &mut out);
        out
    }
}

macro_rules! plain_column {
    ($($ty:ty),*) => {$(
        impl Column for $ty {
            fn read(row: &AnyRow, column: &'static str) -> sqlx::Result<Self> {
                row.try_get(column)
            }
            fn bind<'q>(&self, query: Query<'q>) -> Query<'q> {
                query.bind(self.clone())
            }
        }
    )*};
}

plain_column!(i64, String, Option<i64>, Option<String>, Vec<u8>);

/// Flags are stored as 0 or 1 (SQLite has no boolean type); anything else is an error.
impl Column for bool {
    fn read(row: &AnyRow, column: &'static str) -> sqlx::Result<Self> {
        match row.try_get::<i64, _>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(decode_error(column, format!("{other} is not a 0/1 flag"))),
        }
    }
    fn bind<'q>(&self, query: Query<'q>) -> Query<'q> {
        query.bind(i64::from(*self))
    }
}

impl Column for u32 {
    fn read(row: &AnyRow, column: &'static str) -> sqlx::Result<Self> {
        let value: i64 = row.try_get(column)?;
        u32::try_from(value).map_err(|_| decode_error(column, format!("{value} is out of range")))
    }
    fn bind<'q>(&self, query: Query<'q>) -> Query<'q> {
        query.bind(i64::from(*self))
    }
}

pub(super) fn decode_error(column: &str, reason: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: reason.into(),
    }
}

/// Declares a struct stored in a row; see the module comment. A field whose type is itself
/// a `record!` reads its own columns from the same row.
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident : $ty:ty $(=> $column:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::store::rows::Column for $name {
            fn read(row: &sqlx::any::AnyRow, _: &'static str) -> sqlx::Result<Self> {
                Ok($name {
                    $( $field: <$ty as $crate::store::rows::Column>::read(
                        row,
                        record!(@column $field $($column)?),
                    )?, )*
                })
            }
            fn bind<'q>(
                &self,
                query: $crate::store::rows::Query<'q>,
            ) -> $crate::store::rows::Query<'q> {
                $( let query = $crate::store::rows::Column::bind(&self.$field, query); )*
                query
            }
            fn columns(_: &'static str, out: &mut Vec<&'static str>) {
                $( <$ty as $crate::store::rows::Column>::columns(
                    record!(@column $field $($column)?),
                    out,
                ); )*
            }
        }

        impl $crate::store::rows::Record for $name {
            fn column_list() -> &'static str {
                static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                LIST.get_or_init(|| Self::column_names().join(", "))
            }
        }

        impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for $name {
            fn from_row(row: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
                <$name as $crate::store::rows::Column>::read(row, "")
            }
        }
    };
    (@column $field:ident) => { stringify!($field) };
    (@column $field:ident $column:literal) => { $column };
}

pub(super) use record;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Channel;

    async fn row(sql: &str) -> AnyRow {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect("sqlite::memory:").await.unwrap();
        sqlx::query(sql).fetch_one(&pool).await.unwrap()
    }

    #[tokio::test]
    async fn flags_read_0_and_1_and_refuse_anything_else() {
        let row = row("SELECT 0 AS off, 1 AS on_, 2 AS other").await;
        assert!(!bool::read(&row, "off").unwrap());
        assert!(bool::read(&row, "on_").unwrap());
        assert!(bool::read(&row, "other").is_err());
    }

    #[tokio::test]
    async fn an_unknown_stored_channel_is_an_error_not_a_default() {
        let row = row("SELECT 'sms' AS known, 'fax' AS unknown").await;
        assert_eq!(Channel::read(&row, "known").unwrap(), Channel::Sms);
        let error = Channel::read(&row, "unknown").unwrap_err().to_string();
        assert!(error.contains("\"fax\" is not a channel"), "{error}");
    }

    #[tokio::test]
    async fn a_nested_record_reads_its_columns_from_the_same_row() {
        let row = row(
            "SELECT 's1' AS session_id, 99 AS session_expires_at, 98 AS session_created_at,
                    7 AS id, 'u' AS uid,
                    'p' AS project_id, NULL AS name, 1 AS root, 0 AS encrypted,
                    NULL AS encryption_text, 5 AS created_at, NULL AS verified_at",
        )
        .await;
        let session: crate::store::SessionUser = sqlx::FromRow::from_row(&row).unwrap();
        assert_eq!((session.expires_at, session.user.id), (99, 7));
        assert!(session.user.root && !session.user.encrypted);
        assert_eq!(
            crate::store::SessionUser::column_names()[..4],
            [
                "session_id",
                "session_expires_at",
                "session_created_at",
                "id"
            ]
        );
    }
}
