//! `loadgen`: drives full payment flows against the public API the way the Stripe SDKs do and
//! reports throughput, latency percentiles per step (HDR histograms) and errors by kind.
//!
//! A flow is: create a PaymentMethod from a test card, create and confirm a PaymentIntent
//! (`confirm=true`), then — for a configurable share of flows — capture it manually and/or
//! refund it. Every POST carries an `Idempotency-Key`.
//!
//! * [`schedule`]: open-loop due times (latency is measured from them, so a stalled server
//!   cannot hide behind a slowed-down client) and the per-flow mix;
//! * [`client`]: the SDK-like HTTP client (keep-alive pool, optional TLS);
//! * [`run`]: flows, the open and the closed loop;
//! * [`report`]: histograms, error counts, text and JSON output.

#![warn(missing_docs)]

pub mod client;
pub mod report;
pub mod run;
pub mod schedule;
