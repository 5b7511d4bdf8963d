//! Database pools for SQLite (the embedded default) and PostgreSQL, and a
//! per-component migration runner.
//!
//! Components keep their own SQL. Most statements are written once with
//! `$1`-style parameters, which both drivers accept, and run on either pool
//! through [`with_db!`], which type-checks the body against each driver.
//! DDL differs per backend, so each [`Migration`] carries both texts.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::OwnedMutexGuard;

pub use sqlx;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported database url {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration {component}/{version} failed: {source}")]
    Migration { component: String, version: i64, source: sqlx::Error },
}

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$pool` bound to the concrete pool of `$db`.
/// The body is compiled once per driver, so SQL and bound types must suit both.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// Readers of a WAL database do not block each other or the writer; every
/// component of the process shares the pool.
const SQLITE_CONNECTIONS: u32 = 8;

/// How long an SQLite statement waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One schema step of a component, in both dialects.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Opens the pool, retrying while another process holds the lock that
/// switching a new database to WAL takes: SQLite answers that at once with
/// SQLITE_BUSY, without waiting out the busy timeout.
async fn connect_sqlite(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        match SqlitePoolOptions::new().max_connections(SQLITE_CONNECTIONS).connect_with(options.clone()).await {
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("5") && attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

impl Db {
    /// Connect to `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            Ok(Self::Sqlite(connect_sqlite(options).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool =
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
            Ok(Self::Postgres(pool))
        } else {
            Err(StorageError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Apply the component's migrations that have not run yet, each in its
    /// own transaction. Components track their versions independently.
    pub async fn migrate(&self, component: &str, migrations: &[Migration]) -> Result<(), StorageError> {
        self.create_bookkeeping().await?;
        for migration in migrations {
            self.apply(component, migration).await.map_err(|source| StorageError::Migration {
                component: component.to_owned(),
                version: migration.version,
                source,
            })?;
        }
        Ok(())
    }

    /// The processes of one homeserver may start together on one PostgreSQL
    /// (two room servers migrate the same tables): a transaction-scoped
    /// advisory lock lets one migrate at a time. SQLite's `BEGIN IMMEDIATE`
    /// already serializes writers.
    fn migration_lock(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "SELECT 1",
            Backend::Postgres => "SELECT pg_advisory_xact_lock(4242424242)",
        }
    }

    async fn create_bookkeeping(&self) -> Result<(), StorageError> {
        let lock = self.migration_lock();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(lock).execute(&mut *tx).await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS myelin_migrations (\
                 component TEXT NOT NULL, version BIGINT NOT NULL, \
                 PRIMARY KEY (component, version))",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn apply(&self, component: &str, migration: &Migration) -> Result<(), sqlx::Error> {
        let ddl = match self.backend() {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        let lock = self.migration_lock();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(lock).execute(&mut *tx).await?;
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM myelin_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
            if done.is_some() {
                return Ok(());
            }
            sqlx::raw_sql(ddl).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO myelin_migrations (component, version) VALUES ($1, $2)")
                .bind(component)
                .bind(migration.version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    pub async fn close(&self) {
        with_db!(self, pool => pool.close().await)
    }
}

/// Starting a transaction that will write. On SQLite it takes the write lock
/// up front (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
/// writes can fail with SQLITE_BUSY instead of waiting.
pub trait WritePool {
    type Database: sqlx::Database;
    fn begin_write(&self) -> impl std::future::Future<Output = Result<DbTx<Self::Database>, sqlx::Error>> + Send;
}

impl WritePool for SqlitePool {
    type Database = Sqlite;
    async fn begin_write(&self) -> Result<DbTx<Sqlite>, sqlx::Error> {
        let turn = write_turn(self.connect_options().get_filename()).await?;
        let tx = self.begin_with("BEGIN IMMEDIATE").await?;
        Ok(DbTx { tx, _turn: Some(turn) })
    }
}

impl WritePool for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<DbTx<Postgres>, sqlx::Error> {
        Ok(self.begin().await?.into())
    }
}

/// A transaction; one that writes to SQLite also holds this process's turn
/// to write to that file until it ends.
///
/// SQLite lets one writer in at a time and a waiting writer only polls the
/// lock (its busy handler sleeps up to 100 ms between tries), so on a busy
/// machine a writer could lose every race until its busy timeout and fail.
/// Writers of one process instead queue for their turn in order, and one
/// that waits holds no pooled connection that readers could use.
pub struct DbTx<DB: sqlx::Database> {
    // Declared first, so it is dropped (rolled back) before the turn is passed on.
    tx: Transaction<'static, DB>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> DbTx<DB> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// A transaction that does not write: no turn to hold.
impl<DB: sqlx::Database> From<Transaction<'static, DB>> for DbTx<DB> {
    fn from(tx: Transaction<'static, DB>) -> Self {
        Self { tx, _turn: None }
    }
}

impl<DB: sqlx::Database> Deref for DbTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: sqlx::Database> DerefMut for DbTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// How long a writer waits for its turn: as long as SQLite itself would
/// wait for the lock, so a writer stuck behind a leaked transaction fails
/// the way it did before, instead of hanging.
const WRITE_TURN_TIMEOUT: Duration = SQLITE_BUSY_TIMEOUT;

/// The turn to write to one SQLite file, shared by every pool of this
/// process that opens it.
async fn write_turn(file: &Path) -> Result<OwnedMutexGuard<()>, sqlx::Error> {
    static TURNS: LazyLock<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let turn = TURNS.lock().expect("write turns lock").entry(file.to_owned()).or_default().clone();
    tokio::time::timeout(WRITE_TURN_TIMEOUT, turn.lock_owned()).await.map_err(|_| sqlx::Error::PoolTimedOut)
}
