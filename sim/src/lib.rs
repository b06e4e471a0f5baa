//! The deterministic simulator of the payment system (`paysim`).
//!
//! The unchanged services run on simulated hosts and a simulated network (turmoil) in one
//! process; a seed drives every random choice — the network's, each host's, the workload's and
//! the fault injector's — so a run replays bit for bit. Faults come from a scenario's schedule
//! or, in swarm mode, are drawn from the seed. At the end, invariants are checked on the
//! client history, the platform's records and outbox, the card network's ledger, what crossed
//! the network and what was logged.

#![warn(missing_docs)]

pub mod check;
pub mod client;
pub mod determinism;
pub mod faulty_hsm;
pub mod history;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod swarm;
pub mod world;
