//! The reference build: the `paymentd` binary and the library that assembles its services.
//!
//! [`wiring`] constructs each role from its dependencies — the single place services are built,
//! shared with the simulator; [`node`] serves roles; [`local`] runs every role in one process
//! (`paymentd dev` and the integration tests); [`config`] is serve mode's configuration;
//! [`admin`] is the operator endpoint and its client; [`ops`] holds the operator procedures
//! the commands share with tools (custodian keystores, audit verification).

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod local;
pub mod node;
pub mod ops;
pub mod wiring;

/// The audit log crate, for tools that read the log a node writes (its line format).
pub use pay_audit;
