//! The shared language between services.
//!
//! Services talk HTTP/JSON to each other and never depend on each other's crates: the Stripe-
//! shaped public objects ([`objects`]) and each service's request/response types and typed
//! client ([`tokenizer`], [`acquirer`], [`payments`]) live here. In particular nothing here can
//! read a card number: card numbers cross this crate only as opaque [`pay_core::SecretString`]s
//! on their way into the tokenizer or out of it to the card network, and only the tokenizer
//! crate can parse one. That keeps the cardholder-data environment visible in the dependency
//! graph.

#![warn(missing_docs)]

pub mod acquirer;
pub mod fraud;
pub mod objects;
pub mod payments;
pub mod tokenizer;
pub mod webhooks;
