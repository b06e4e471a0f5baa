//! The payment service: PaymentIntents, Charges and Refunds.
//!
//! [`machine`] holds the state machines as pure functions; [`service`] runs them against the
//! store and the network (through the tokenizer, never seeing a card number) with recovery
//! points, derived network keys and the transactional outbox; [`routes`] serves them to the
//! API. See the crate's module docs for the exactly-once argument.

#![warn(missing_docs)]

pub mod machine;
pub mod records;
pub mod risk;
pub mod routes;
pub mod service;

pub use service::{Payments, PaymentsConfig, ReconcileReport, RiskAssessor};
