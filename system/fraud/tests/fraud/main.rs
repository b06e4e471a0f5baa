//! The fraud service from outside the crate: Radar rules and lists over the memory store, and
//! velocity end to end on the memory and PostgreSQL stores. One binary, so that sqlx and tokio
//! are instantiated and linked once.

mod service;
mod velocity;
