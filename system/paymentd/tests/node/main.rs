//! `paymentd` as deployers run it: the real binary (`serve`, `unseal`, `keys`, `audit verify`)
//! and the local node of `paymentd dev`, one module per subject. One binary, not one per file:
//! each binary instantiates the node's generic code (tokio, hyper, sqlx) and links it again,
//! and that was most of their build time. `crash.rs` stays its own target: it needs the
//! `fault-injection` feature, which the test command enables for it alone.

#[path = "../common/mod.rs"]
mod common;

mod key_management;
mod local_operator;
mod process;
mod stripe_sdk;
mod waf;
mod webhooks_crash;
