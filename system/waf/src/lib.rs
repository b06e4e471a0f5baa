//! Web Application Firewall for the payment system.
//!
//! [`Waf`] is the inspection engine: it breaks a request into the collections the OWASP Core
//! Rule Set inspects ([`request`]), decoding parameters the way the public API does, runs the
//! CRS request rules of paranoia levels 1 and 2 ([`rules`], interpreted from a converted rule
//! table, with libinjection for SQLi/XSS) plus native protocol and size checks
//! ([`protocol`]), and sums an anomaly score; a request whose score reaches the threshold is
//! blocked unless the engine runs in detect-only mode. Per-route exclusions let fields that
//! carry customer text skip chosen rules ([`config`]).
//!
//! [`proxy`] is the `waf` role: a reverse proxy in front of the API that applies the engine,
//! IP allow/deny lists and rate limits, answers blocks with 403, and forwards everything else
//! byte-for-byte with the client's IP and a request id.

#![warn(missing_docs)]

pub mod config;
pub mod engine;
mod kept;
pub mod prefilter;
pub mod protocol;
pub mod proxy;
pub mod request;
pub mod rules;
pub mod screen;
pub mod transform;
mod words;

#[cfg(test)]
mod testrng;

pub use config::{ConfigError, Exclusion, Limits, WafConfig};
pub use engine::{RuleMatch, Verdict, Waf};
pub use request::HttpRequest;
pub use rules::{RuleSet, Severity};
