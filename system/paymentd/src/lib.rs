//! The reference build: the `paymentd` binary and the library that assembles its services.
//!
//! [`wiring`] constructs each role from its dependencies — the single place services are built,
//! shared with the simulator; [`node`] serves roles; [`local`] runs every role in one process
//! (`paymentd dev` and the integration tests); [`config`] is serve mode's configuration.

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod local;
pub mod node;
pub mod wiring;
