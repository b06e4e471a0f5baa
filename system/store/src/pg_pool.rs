//! A pool of PostgreSQL connections that takes a connection back without a round trip.
//!
//! sqlx's own pool sends a `Sync` to the server and waits for its answer every time a
//! connection is returned, so that a connection left mid-protocol by a cancelled query is
//! noticed and closed. On the payment path that is one extra round trip per statement, and the
//! bench measured it at about a tenth of both paymentd's and PostgreSQL's CPU per payment
//! (docs/performance.md). This pool gets the same safety another way: a connection goes back to
//! the idle list only when the statement that used it ran to its end (an answer or an error
//! from the database); a connection whose statement was cancelled, or that failed on the
//! network or the protocol, is closed instead. Whatever the server still owes a connection that
//! goes back (the ready-for-query after an error, a rollback of a dropped transaction) sqlx
//! reads before that connection's next statement.
//!
//! Connections open on demand up to the maximum, wait at most the acquire timeout for a free
//! slot, are reused newest first and are closed once older than the maximum lifetime.

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection, Describe, Either, Execute, Executor, PgConnection, Postgres};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of a [`PgConnections`] pool.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Largest number of open connections.
    pub max_connections: u32,
    /// How long [`PgConnections::acquire`] waits for a free slot (and for a new connection to open).
    pub acquire_timeout: Duration,
    /// A connection older than this is closed instead of reused (when it is returned or taken
    /// from the idle list), so that server-side memory and settings do not live forever.
    pub max_lifetime: Duration,
}

/// A pool of PostgreSQL connections; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PgConnections {
    inner: Arc<Inner>,
}

struct Inner {
    options: PgConnectOptions,
    limits: PoolLimits,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
}

struct Idle {
    conn: PgConnection,
    opened: Instant,
}

impl std::fmt::Debug for PgConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connect options hold the password: only counts are shown.
        f.debug_struct("PgConnections")
            .field("max_connections", &self.inner.limits.max_connections)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl PgConnections {
    /// A pool that opens connections with `options` as they are needed.
    pub fn new(options: PgConnectOptions, limits: PoolLimits) -> PgConnections {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1) as usize));
        PgConnections {
            inner: Arc::new(Inner {
                options,
                limits,
                slots,
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A connection: an idle one if there is one, else a new one while there is room, else the
    /// first one returned within the acquire timeout.
    pub async fn acquire(&self) -> Result<PooledConnection, sqlx::Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let deadline = tokio::time::Instant::now() + inner.limits.acquire_timeout;
        let permit = match tokio::time::timeout_at(deadline, inner.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        // Newest first; one that outlived its lifetime while idle is closed, not used.
        let idle = loop {
            let next = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(i) if i.opened.elapsed() >= inner.limits.max_lifetime => drop(i),
                other => break other,
            }
        };
        let (conn, opened) = match idle {
            Some(i) => (i.conn, i.opened),
            None => match tokio::time::timeout_at(deadline, PgConnection::connect_with(&inner.options)).await {
                Ok(Ok(c)) => (c, Instant::now()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            },
        };
        Ok(PooledConnection {
            conn: Some(conn),
            opened,
            keep: false,
            pool: self.inner.clone(),
            _slot: permit,
        })
    }

    /// Number of idle connections (open, not in use).
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Number of connections in use.
    pub fn in_use(&self) -> usize {
        self.inner.limits.max_connections.max(1) as usize - self.inner.slots.available_permits()
    }

    /// Closes the idle connections and refuses new acquisitions; connections in use are closed
    /// when they are returned.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let idle: Vec<Idle> = std::mem::take(&mut *self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for i in idle {
            let _ = i.conn.close().await;
        }
    }
}

/// Keeps `conn` for reuse when `out` says its statement ran to its end with an answer from the
/// server (it succeeded, or the server refused it), and hands `out` on.
pub fn returned<T>(conn: &mut PooledConnection, out: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    if matches!(
        out,
        Ok(_) | Err(sqlx::Error::Database(_)) | Err(sqlx::Error::RowNotFound)
    ) {
        conn.keep();
    }
    out
}

/// A connection taken from [`PgConnections`]. Dropped without [`keep`](Self::keep), it is
/// closed rather than reused (its last statement may not have run to its end).
pub struct PooledConnection {
    conn: Option<PgConnection>,
    opened: Instant,
    keep: bool,
    pool: Arc<Inner>,
    _slot: OwnedSemaphorePermit,
}

impl PooledConnection {
    /// Marks the connection reusable: its statements ran to their end.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        // Present from acquisition until drop.
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let reusable = self.keep
            && !self.pool.closed.load(Ordering::Acquire)
            && self.opened.elapsed() < self.pool.limits.max_lifetime;
        if reusable {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(Idle {
                conn,
                opened: self.opened,
            });
        }
        // Otherwise the connection is dropped here, which closes its socket; the server ends
        // the session. The slot is freed when `_slot` drops, after the push above.
    }
}

impl<'p> Executor<'p> for &'_ PgConnections {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        // The whole answer is read before it is handed on, so that the connection is back in
        // the pool, clean, however the caller consumes the stream.
        let all = async move {
            let mut conn = pool.acquire().await?;
            let mut items = Vec::new();
            let out = {
                let mut s = (&mut *conn).fetch_many(query);
                loop {
                    match s.next().await {
                        Some(Ok(item)) => items.push(Ok(item)),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(()),
                    }
                }
            };
            returned(&mut conn, out).map(|()| items)
        };
        Box::pin(stream::once(all).flat_map(|r| match r {
            Ok(items) => stream::iter(items).boxed(),
            Err(e) => stream::iter(vec![Err(e)]).boxed(),
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            let out = (&mut *conn).fetch_optional(query).await;
            returned(&mut conn, out)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            let out = (&mut *conn).prepare_with(sql, parameters).await;
            returned(&mut conn, out)
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            let out = (&mut *conn).describe(sql).await;
            returned(&mut conn, out)
        })
    }
}
