//! Domain types shared by every service of the payment system: money and currencies, prefixed
//! ids, Stripe-shaped errors, events, what may be known about a card outside the cardholder
//! data environment, secrets that never print, and the [`Env`] seam through which services get
//! wall-clock time and randomness (real in production, seeded and virtual in the simulator).

#![warn(missing_docs)]

pub mod card;
pub mod currency;
pub mod env;
pub mod error;
pub mod event;
pub mod faults;
pub mod ids;
pub mod json;
pub mod money;
pub mod redact;
pub mod secret;

pub use card::{luhn_valid, CardBrand, CardSummary};
pub use currency::{Currency, CurrencyError};
pub use env::{
    Clock, Entropy, EntropyRng, Env, ManualClock, OsEntropy, SeededEntropy, SystemClock, Timestamp, VirtualClock,
};
pub use error::{ApiError, ErrorType};
pub use event::Event;
pub use ids::*;
pub use json::JsonText;
pub use money::{Money, MoneyError};
pub use secret::{Secret, SecretBytes, SecretString};
