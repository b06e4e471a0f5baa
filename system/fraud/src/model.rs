//! The risk model: a logistic regression over documented features.
//!
//! `z = bias + Σ weightᵢ · featureᵢ`, `score = round(99 · σ(z))` with `σ(z) = 1 / (1 + e^−z)`.
//! Each feature's contribution `weightᵢ · featureᵢ` is what an assessment lists as its reasons,
//! largest first. Every feature is 0 when its input is unknown, so a missing value never adds
//! risk by itself except through the explicit "unknown" indicators.
//!
//! | feature | transform of the input |
//! |---|---|
//! | `amount_usd` | ln(1 + amount in USD) (whole dollars, from the FX table) |
//! | `card_attempts_1h` | ln(1 + earlier attempts on the card fingerprint in the last hour) |
//! | `card_attempts_24h` | ln(1 + earlier attempts on the card in 24 h) |
//! | `card_declines_1h` | ln(1 + declined attempts on the card in the last hour) |
//! | `card_declines_24h` | ln(1 + declined attempts on the card in 24 h) |
//! | `ip_attempts_1h` | ln(1 + earlier attempts from the IP address in the last hour) |
//! | `ip_attempts_24h` | ln(1 + earlier attempts from the IP in 24 h) |
//! | `customer_distinct_cards_24h` | max(0, distinct cards the customer used in 24 h − 1) |
//! | `ip_distinct_cards_24h` | max(0, distinct cards seen from the IP in 24 h − 1) |
//! | `country_mismatch` | 1 when card country and IP country are both known and differ |
//! | `cvc_fail` | 1 when the CVC check failed |
//! | `cvc_not_checked` | 1 when the CVC was unavailable or not checked |
//! | `new_customer` | 1 / (1 + customer age in days); 0 for guests |
//! | `guest_checkout` | 1 when there is no customer |
//! | `disposable_email` | 1 when the email domain is a disposable-mail provider |
//! | `no_email` | 1 when no email is known |
//! | `prepaid_card` | 1 for prepaid funding |
//! | `unknown_card_country` | 1 when the IIN table does not know the card's country |
//! | `unknown_ip` | 1 when no IP was given or its country is unknown |

use serde::{Deserialize, Serialize};

macro_rules! features {
    ($($name:ident),* $(,)?) => {
        /// Feature weights, one per feature (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Weights {
            $(
                #[doc = concat!("Weight of `", stringify!($name), "`.")]
                pub $name: f64,
            )*
        }

        /// Feature values of one payment.
        #[derive(Debug, Clone, Copy, PartialEq, Default)]
        pub struct Features {
            $(
                #[doc = concat!("Value of `", stringify!($name), "`.")]
                pub $name: f64,
            )*
        }

        /// Feature names, in declaration order.
        pub const FEATURE_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Weights {
            /// True when every weight is a finite number.
            pub fn all_finite(&self) -> bool {
                true $(&& self.$name.is_finite())*
            }

            /// (name, weight × value) for every feature.
            pub fn contributions(&self, f: &Features) -> Vec<(&'static str, f64)> {
                vec![$((stringify!($name), self.$name * f.$name)),*]
            }
        }
    };
}

features!(
    amount_usd,
    card_attempts_1h,
    card_attempts_24h,
    card_declines_1h,
    card_declines_24h,
    ip_attempts_1h,
    ip_attempts_24h,
    customer_distinct_cards_24h,
    ip_distinct_cards_24h,
    country_mismatch,
    cvc_fail,
    cvc_not_checked,
    new_customer,
    guest_checkout,
    disposable_email,
    no_email,
    prepaid_card,
    unknown_card_country,
    unknown_ip,
);

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `round(99 · σ(z))`, always in 0–99.
pub fn score_of(z: f64) -> u8 {
    let s = (99.0 * sigmoid(z)).round();
    if s.is_nan() {
        99
    } else {
        s.clamp(0.0, 99.0) as u8
    }
}

/// `ln(x)` of a count that includes the current attempt, i.e. `ln(1 + earlier attempts)`
/// (0 for unknown or for the first attempt).
pub fn log_prior(x: Option<u32>) -> f64 {
    x.map(|v| f64::from(v.max(1)).ln()).unwrap_or(0.0)
}

/// `ln(1 + x)` of a count (0 for unknown).
pub fn log_count(x: Option<u32>) -> f64 {
    x.map(|v| f64::from(v).ln_1p()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_bounded_and_monotonic() {
        assert_eq!(score_of(-1e9), 0);
        assert_eq!(score_of(1e9), 99);
        assert_eq!(score_of(f64::NAN), 99);
        assert_eq!(score_of(0.0), 50);
        let mut last = 0;
        for i in -100..100 {
            let s = score_of(f64::from(i) / 10.0);
            assert!(s >= last);
            last = s;
        }
        assert_eq!(FEATURE_NAMES.len(), 19);
    }
}
