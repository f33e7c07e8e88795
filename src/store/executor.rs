//! Where the store's writes run: sqlx on PostgreSQL, the native writer on SQLite (see
//! `sqlite_writer`). Both are sqlx executors, so every query is written once, with sqlx's
//! builders, and runs on either.

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyPool, Either, Execute, Executor};
use sqlx_core::describe::Describe;
use std::sync::Arc;

use super::sqlite_writer;

/// The connection of one transaction.
pub(super) enum TxConnection {
    Sqlx(sqlx::Transaction<'static, Any>),
    Sqlite(sqlite_writer::Transaction),
}

impl std::fmt::Debug for TxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxConnection::Sqlx(_) => f.write_str("TxConnection::Sqlx"),
            TxConnection::Sqlite(tx) => tx.fmt(f),
        }
    }
}

/// Writes outside a transaction: the pool on PostgreSQL; on SQLite the writer, each
/// statement in a transaction of its own.
#[derive(Clone, Debug)]
pub(super) enum Writer {
    Pool(AnyPool),
    Sqlite(Arc<sqlite_writer::Writer>),
}

/// What the native writer's statements yield, in `fetch_many`'s order: rows, then the
/// statement's result.
type Step = Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>;

fn steps(outcome: Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error>) -> Vec<Step> {
    match outcome {
        Ok((rows, done)) => rows
            .into_iter()
            .map(|row| Ok(Either::Right(row)))
            .chain([Ok(Either::Left(done))])
            .collect(),
        Err(error) => vec![Err(error)],
    }
}

fn run_native<'q>(
    tx: &mut sqlite_writer::Transaction,
    mut query: impl Execute<'q, Any>,
) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
    let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
    tx.run(query.sql(), arguments)
}

fn unsupported<'e, T: Send + 'e>() -> BoxFuture<'e, Result<T, sqlx::Error>> {
    Box::pin(async {
        Err(sqlx::Error::Protocol(
            "the SQLite writer runs statements; it does not describe them".into(),
        ))
    })
}

impl<'c> Executor<'c> for &'c mut TxConnection {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Step>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            TxConnection::Sqlx(tx) => (&mut **tx).fetch_many(query),
            TxConnection::Sqlite(tx) => stream::iter(steps(run_native(tx, query))).boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            TxConnection::Sqlx(tx) => (&mut **tx).fetch_optional(query),
            TxConnection::Sqlite(tx) => {
                let row = run_native(tx, query).map(|(rows, _)| rows.into_iter().next());
                Box::pin(async move { row })
            }
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            TxConnection::Sqlx(tx) => (&mut **tx).prepare_with(sql, parameters),
            TxConnection::Sqlite(_) => unsupported(),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            TxConnection::Sqlx(tx) => (&mut **tx).describe(sql),
            TxConnection::Sqlite(_) => unsupported(),
        }
    }
}

impl<'c> Executor<'c> for &'c Writer {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Step>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Writer::Pool(pool) => pool.fetch_many(query),
            Writer::Sqlite(writer) => stream::once(async move {
                let outcome = async {
                    let mut tx = writer.begin().await?;
                    let outcome = run_native(&mut tx, query)?;
                    tx.commit(Box::new(|| {})).await?;
                    Ok(outcome)
                };
                stream::iter(steps(outcome.await))
            })
            .flatten()
            .boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Writer::Pool(pool) => pool.fetch_optional(query),
            Writer::Sqlite(_) => Box::pin(async move {
                let mut steps = self.fetch_many(query);
                while let Some(step) = steps.next().await {
                    if let Either::Right(row) = step? {
                        return Ok(Some(row));
                    }
                }
                Ok(None)
            }),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Writer::Pool(pool) => pool.prepare_with(sql, parameters),
            Writer::Sqlite(_) => unsupported(),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Writer::Pool(pool) => pool.describe(sql),
            Writer::Sqlite(_) => unsupported(),
        }
    }
}
