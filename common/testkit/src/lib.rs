//! Fixtures for tests (dev-dependency only): fresh databases on both
//! backends. PostgreSQL is the real server at `MYELIN_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); each fixture
//! creates its own database so tests never share state.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// Logs at `filter` (an `EnvFilter` directive) into the test's captured
/// output, which the runner shows when the test fails.
pub fn capture_logs(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

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

/// A Kafka-protocol broker for one test: `MYELIN_TEST_KAFKA` (bootstrap
/// servers) if set, else a tansu broker with in-memory storage on a free
/// port, killed when this value drops (nextest runs each test in its own
/// process, so a broker per test is also a broker per process).
pub struct KafkaBroker {
    pub brokers: String,
    _child: Option<tokio::process::Child>,
}

impl KafkaBroker {
    pub async fn start() -> Self {
        if let Ok(brokers) = std::env::var("MYELIN_TEST_KAFKA") {
            return Self { brokers, _child: None };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let tansu = std::env::var("MYELIN_TEST_TANSU").unwrap_or_else(|_| "tansu".to_owned());
        let child = tokio::process::Command::new(&tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting `{tansu}` ({e}): run scripts/install-test-deps.sh or set MYELIN_TEST_KAFKA")
            });
        let brokers = format!("127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&brokers).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "tansu did not listen on {brokers}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self { brokers, _child: Some(child) }
    }
}
