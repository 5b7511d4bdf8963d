//! Fixtures for tests (dev-dependency only): fresh databases on both
//! backends. PostgreSQL is the real server at `MYELIN_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); each fixture
//! creates its own database so tests never share state.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// The admin URL of the PostgreSQL server tests run against.
pub fn postgres_admin_url() -> String {
    std::env::var("MYELIN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database made for one test. SQLite files live in a temporary
/// directory removed on drop; PostgreSQL databases are named
/// `myelin_test_*` and left for inspection after a failure.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub name: &'static str,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("myelin.db").display());
        Self { url, name: "sqlite", _dir: Some(dir) }
    }

    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let db_name = format!("myelin_test_{}", myelin_types::random::alphanumeric(12).to_lowercase());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self { url: format!("{base}/{db_name}"), name: "postgres", _dir: None }
    }

    /// One fresh database per backend, for tests that must pass on both.
    pub async fn both() -> Vec<Self> {
        vec![Self::sqlite(), Self::postgres().await]
    }
}
