//! The cross-crate integration tests of the whole stack (tokenizer, acquirer, payment service,
//! fraud, webhooks and the public API as HTTP servers on loopback, on PostgreSQL or the memory
//! store), one module per subject. One binary, not one per file: each binary instantiates the
//! stack's generic code (tokio, hyper, sqlx) and links it again, and that was most of their
//! build time. `key_rotation_pkcs11.rs` stays a process of its own (it sets `SOFTHSM2_CONF`).

#[path = "../rotation_common/mod.rs"]
mod rotation_common;

mod api_idempotency;
mod api_operations;
mod bad_input;
mod key_rotation;
mod radar;
mod service_core;
mod webhooks_sdk;
