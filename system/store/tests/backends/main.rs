//! The storage backends from outside the crate: the contract suite every backend passes, and the
//! PostgreSQL connection pool. One binary, so that sqlx and tokio are instantiated and linked
//! once.

mod contract;
mod pg_pool;
