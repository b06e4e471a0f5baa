//! The PostgreSQL connection pool: connections come back without a round trip, and only when
//! their statement ran to its end; a cancelled statement's connection is never reused.

use pay_store::postgres::{PgConnections, PoolLimits};
use pay_store::testing::TestDatabase;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::time::Duration;

async fn pool(max_connections: u32, max_lifetime: Duration) -> (PgConnections, TestDatabase) {
    let tdb = TestDatabase::create().await.expect("test PostgreSQL");
    let opts = PgConnectOptions::from_str(&tdb.url).unwrap();
    let pool = PgConnections::new(
        opts,
        PoolLimits {
            max_connections,
            acquire_timeout: Duration::from_millis(300),
            max_lifetime,
        },
    );
    (pool, tdb)
}

const HOUR: Duration = Duration::from_secs(3600);

async fn backend_pid(pool: &PgConnections) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_statement_returns_its_connection_for_the_next() {
    let (pool, _tdb) = pool(4, HOUR).await;
    let first = backend_pid(&pool).await;
    assert_eq!((pool.idle_count(), pool.in_use()), (1, 0));
    assert_eq!(backend_pid(&pool).await, first, "the idle connection is reused");
    let rows: Vec<i32> = sqlx::query_scalar("SELECT generate_series(1, 500)")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    assert_eq!(backend_pid(&pool).await, first, "a many-row answer is read to its end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_keeps_its_connection_and_the_next_answer_is_its_own() {
    let (pool, _tdb) = pool(1, HOUR).await;
    let first = backend_pid(&pool).await;
    let err = sqlx::query_scalar::<_, i32>("SELECT 1 / 0")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(matches!(err, sqlx::Error::Database(_)), "{err}");
    assert_eq!(pool.idle_count(), 1);
    let n: i32 = sqlx::query_scalar("SELECT 42").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 42);
    assert_eq!(backend_pid(&pool).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_statement_closes_its_connection() {
    let (pool, _tdb) = pool(1, HOUR).await;
    let first = backend_pid(&pool).await;
    let slow = sqlx::query("SELECT pg_sleep(5)").execute(&pool);
    assert!(tokio::time::timeout(Duration::from_millis(200), slow).await.is_err());
    assert_eq!(
        (pool.idle_count(), pool.in_use()),
        (0, 0),
        "the cancelled statement's connection is closed and its slot freed"
    );
    // The next statement gets its own answer on a new connection, not the sleep's.
    let n: i32 = sqlx::query_scalar("SELECT 7").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 7);
    assert_ne!(backend_pid(&pool).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_waits_then_times_out() {
    let (pool, _tdb) = pool(2, HOUR).await;
    let a = pool.acquire().await.unwrap();
    let _b = pool.acquire().await.unwrap();
    assert_eq!(pool.in_use(), 2);
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolTimedOut)));
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(a);
    waiter.await.unwrap().expect("a slot freed within the timeout is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_lifetime_is_closed_when_returned() {
    let (pool, _tdb) = pool(2, Duration::ZERO).await;
    let first = backend_pid(&pool).await;
    assert_eq!(pool.idle_count(), 0);
    assert_ne!(backend_pid(&pool).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_refuses_and_closes_what_comes_back() {
    let (pool, _tdb) = pool(2, HOUR).await;
    let held = pool.acquire().await.unwrap();
    backend_pid(&pool).await;
    pool.close().await;
    assert_eq!(pool.idle_count(), 0);
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
    let mut held = held;
    held.keep();
    drop(held);
    assert_eq!((pool.idle_count(), pool.in_use()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_rolled_back_by_drop_leaves_nothing_for_the_next_user() {
    let (pool, _tdb) = pool(1, HOUR).await;
    sqlx::query("CREATE TABLE t (n int)").execute(&pool).await.unwrap();
    {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
        drop(tx);
        // Kept on purpose: sqlx sends the queued ROLLBACK before the next statement.
        conn.keep();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    sqlx::query("INSERT INTO t VALUES (2)").execute(&pool).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the next statement is not inside the dropped transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_outlived_its_lifetime_while_idle_is_not_used() {
    let (pool, _tdb) = pool(2, Duration::from_millis(400)).await;
    let first = backend_pid(&pool).await;
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(backend_pid(&pool).await, first);
}
