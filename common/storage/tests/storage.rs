use myelin_storage::{Db, Migration, StorageError, WritePool, with_db};
use myelin_testkit::TestDb;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: "CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
        postgres: "CREATE TABLE kv (k TEXT PRIMARY KEY, v BYTEA NOT NULL)",
    },
    Migration {
        version: 2,
        sqlite: "ALTER TABLE kv ADD COLUMN n BIGINT NOT NULL DEFAULT 0",
        postgres: "ALTER TABLE kv ADD COLUMN n BIGINT NOT NULL DEFAULT 0",
    },
];

#[tokio::test]
async fn migrations_apply_once_and_components_are_independent() {
    for test_db in TestDb::both().await {
        let db = Db::connect(&test_db.url).await.unwrap();
        db.migrate("alpha", MIGRATIONS).await.unwrap();
        // Running again is a no-op, not a "table exists" failure.
        db.migrate("alpha", MIGRATIONS).await.unwrap();
        // Another component's version 1 is its own.
        db.migrate(
            "beta",
            &[Migration { version: 1, sqlite: "CREATE TABLE b (x BIGINT)", postgres: "CREATE TABLE b (x BIGINT)" }],
        )
        .await
        .unwrap();

        let count: i64 = with_db!(&db, p => sqlx::query_scalar("SELECT COUNT(*) FROM myelin_migrations").fetch_one(p).await.unwrap());
        assert_eq!(count, 3, "{}", test_db.name);

        with_db!(&db, p => {
            let mut tx = p.begin_write().await.unwrap();
            sqlx::query("INSERT INTO kv (k, v, n) VALUES ($1, $2, $3)")
                .bind("key").bind(vec![1u8, 2, 3]).bind(7i64)
                .execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        });
        let (v, n): (Vec<u8>, i64) = with_db!(&db, p => sqlx::query_as("SELECT v, n FROM kv WHERE k = $1").bind("key").fetch_one(p).await.unwrap());
        assert_eq!((v, n), (vec![1, 2, 3], 7), "{}", test_db.name);
    }
}

/// Processes of one homeserver start together (two room servers migrate the
/// same tables): every one of them must come up, and each step runs once.
#[tokio::test]
async fn concurrent_migrations_of_one_component_all_succeed() {
    for test_db in TestDb::both().await {
        let mut starts = Vec::new();
        for _ in 0..4 {
            let url = test_db.url.clone();
            starts.push(tokio::spawn(async move {
                let db = Db::connect(&url).await.unwrap();
                db.migrate("alpha", MIGRATIONS).await
            }));
        }
        for start in starts {
            start.await.unwrap().unwrap_or_else(|e| panic!("{}: {e}", test_db.name));
        }
        let db = Db::connect(&test_db.url).await.unwrap();
        let count: i64 = with_db!(&db, p => sqlx::query_scalar("SELECT COUNT(*) FROM myelin_migrations").fetch_one(p).await.unwrap());
        assert_eq!(count, 2, "{}", test_db.name);
    }
}

#[tokio::test]
async fn a_failing_migration_reports_component_and_version_and_is_not_recorded() {
    for test_db in TestDb::both().await {
        let db = Db::connect(&test_db.url).await.unwrap();
        let bad = [Migration { version: 1, sqlite: "CREATE TABLE (", postgres: "CREATE TABLE (" }];
        match db.migrate("broken", &bad).await {
            Err(StorageError::Migration { component, version, .. }) => {
                assert_eq!((component.as_str(), version), ("broken", 1));
            }
            other => panic!("expected a migration error on {}, got {other:?}", test_db.name),
        }
        let count: i64 = with_db!(&db, p => sqlx::query_scalar("SELECT COUNT(*) FROM myelin_migrations WHERE component = 'broken'").fetch_one(p).await.unwrap());
        assert_eq!(count, 0);
    }
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let err = Db::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, StorageError::UnsupportedUrl(_)));
}

/// SQLite writers of one process queue for their turn without holding
/// pooled connections, so a read is served while many writers wait behind a
/// long transaction, and every writer then commits with no update lost.
#[tokio::test]
async fn waiting_sqlite_writers_leave_connections_to_readers_and_all_commit() {
    let test_db = TestDb::sqlite();
    let db = Db::connect(&test_db.url).await.unwrap();
    db.migrate("turns", MIGRATIONS).await.unwrap();
    let Db::Sqlite(pool) = &db else { unreachable!("a SQLite URL opens a SQLite pool") };
    sqlx::query("INSERT INTO kv (k, v, n) VALUES ('counter', x'', 0)").execute(pool).await.unwrap();

    let mut holder = pool.begin_write().await.unwrap();
    sqlx::query("UPDATE kv SET n = n + 1 WHERE k = 'counter'").execute(&mut *holder).await.unwrap();
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tx = pool.begin_write().await?;
                sqlx::query("UPDATE kv SET n = n + 1 WHERE k = 'counter'").execute(&mut *tx).await?;
                tx.commit().await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let read = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM kv").fetch_one(pool);
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
    assert_eq!(read.ok().map(Result::unwrap), Some(1), "a read is served while writers wait");

    holder.commit().await.unwrap();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT n FROM kv WHERE k = 'counter'").fetch_one(pool).await.unwrap();
    assert_eq!(n, 33, "every writer committed once");
}
