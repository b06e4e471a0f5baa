//! Prefixed object ids in Stripe's style (`pi_…`, `pm_…`, `ch_…`).
//!
//! Each kind of object has its own id type, so a refund id can never be passed where a
//! PaymentIntent id is expected. Ids are drawn from the [`Env`](crate::env::Env) entropy, which
//! makes them reproducible in the simulator.

use crate::env::Entropy;
use serde::{Deserialize, Serialize};
use std::fmt;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Number of random base62 characters after the prefix (about 143 bits).
pub const ID_RANDOM_LEN: usize = 24;

/// Why a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with the kind's prefix.
    #[error("`{shown}` is not a valid {kind} id (expected prefix `{prefix}`)")]
    WrongPrefix {
        /// The input, truncated.
        shown: String,
        /// The object kind.
        kind: &'static str,
        /// The prefix the kind uses, including the underscore.
        prefix: &'static str,
    },
    /// The part after the prefix is empty, too long or not alphanumeric.
    #[error("`{shown}` is not a valid {kind} id")]
    Malformed {
        /// The input, truncated.
        shown: String,
        /// The object kind.
        kind: &'static str,
    },
}

/// Random base62 text of `len` characters from `entropy`.
pub fn random_base62(entropy: &dyn Entropy, len: usize) -> String {
    let mut digits = vec![0u64; len];
    entropy.below_each(62, &mut digits);
    digits.iter().map(|&d| ALPHABET[d as usize] as char).collect()
}

fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

macro_rules! id_types {
    ($( $(#[$doc:meta])* $name:ident => $prefix:literal, $kind:literal; )*) => {$(
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix of this kind of id, including the underscore.
            pub const PREFIX: &'static str = $prefix;
            /// What this kind of object is called in messages.
            pub const KIND: &'static str = $kind;

            /// A fresh random id.
            pub fn generate(entropy: &dyn Entropy) -> Self {
                let mut s = String::with_capacity(Self::PREFIX.len() + ID_RANDOM_LEN);
                s.push_str(Self::PREFIX);
                s.push_str(&random_base62(entropy, ID_RANDOM_LEN));
                $name(s)
            }

            /// Validates `s` as an id of this kind.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let Some(rest) = s.strip_prefix(Self::PREFIX) else {
                    return Err(IdError::WrongPrefix { shown: shown(s), kind: Self::KIND, prefix: Self::PREFIX });
                };
                if rest.is_empty() || rest.len() > 64 || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(IdError::Malformed { shown: shown(s), kind: Self::KIND });
                }
                Ok($name(s.to_owned()))
            }

            /// A deterministic id derived from other values (e.g. an attempt id from an
            /// intent id and attempt number), so retries name the same object.
            pub fn derived(parts: &[&str]) -> Self {
                use sha2::{Digest, Sha256};
                let mut h = Sha256::new();
                h.update(Self::PREFIX.as_bytes());
                for p in parts {
                    h.update((p.len() as u64).to_le_bytes());
                    h.update(p.as_bytes());
                }
                let digest = h.finalize();
                let mut s = String::from(Self::PREFIX);
                for chunk in digest.chunks(4).take(ID_RANDOM_LEN / 4) {
                    let mut v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as u64;
                    for _ in 0..4 {
                        s.push(ALPHABET[(v % 62) as usize] as char);
                        v /= 62;
                    }
                }
                $name(s)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }
    )*};
}

id_types! {
    /// A PaymentIntent (`pi_`).
    PaymentIntentId => "pi_", "payment_intent";
    /// A PaymentMethod (`pm_`).
    PaymentMethodId => "pm_", "payment_method";
    /// A Charge (`ch_`).
    ChargeId => "ch_", "charge";
    /// A Refund (`re_`).
    RefundId => "re_", "refund";
    /// A Customer (`cus_`).
    CustomerId => "cus_", "customer";
    /// An Event (`evt_`).
    EventId => "evt_", "event";
    /// A merchant account (`acct_`).
    AccountId => "acct_", "account";
    /// An API key's public identifier (`key_`); the secret itself is never an id.
    ApiKeyId => "key_", "api_key";
    /// An API request, echoed in the `Request-Id` header (`req_`).
    RequestId => "req_", "request";
    /// A card vault token held by the tokenizer (`tok_`).
    VaultTokenId => "tok_", "vault_token";
    /// One attempt to authorize a PaymentIntent (`pa_`); acquirer keys derive from it.
    AttemptId => "pa_", "payment_attempt";
    /// A webhook endpoint (`we_`).
    WebhookEndpointId => "we_", "webhook_endpoint";
    /// A Radar review (`prv_`).
    ReviewId => "prv_", "review";
    /// A Radar rule (`rule_`).
    RuleId => "rule_", "radar_rule";
    /// A Radar value list (`rsl_`).
    ValueListId => "rsl_", "radar_value_list";
    /// A Radar value list item (`rsli_`).
    ValueListItemId => "rsli_", "radar_value_list_item";
    /// A data-encryption key in the vault (`dk_`).
    DataKeyId => "dk_", "data_key";
    /// An acquirer-side operation record (`acq_`).
    AcquirerOpId => "acq_", "acquirer_operation";
    /// A storage transaction (`txn_`), used to make commits idempotent.
    TxnId => "txn_", "transaction";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SeededEntropy;

    #[test]
    fn generated_ids_parse_back() {
        let e = SeededEntropy::new(1, "t");
        let id = PaymentIntentId::generate(&e);
        assert!(id.as_str().starts_with("pi_"));
        assert_eq!(id.as_str().len(), 3 + ID_RANDOM_LEN);
        assert_eq!(PaymentIntentId::parse(id.as_str()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<PaymentIntentId>(&json).unwrap(), id);
    }

    #[test]
    fn wrong_kinds_are_refused() {
        assert!(matches!(
            PaymentIntentId::parse("ch_123"),
            Err(IdError::WrongPrefix { .. })
        ));
        assert!(matches!(PaymentIntentId::parse("pi_"), Err(IdError::Malformed { .. })));
        assert!(matches!(
            PaymentIntentId::parse("pi_a b"),
            Err(IdError::Malformed { .. })
        ));
        assert!(serde_json::from_str::<ChargeId>("\"pi_abc\"").is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = AttemptId::derived(&["pi_1", "1"]);
        assert_eq!(a, AttemptId::derived(&["pi_1", "1"]));
        assert_ne!(a, AttemptId::derived(&["pi_1", "2"]));
        assert_ne!(AttemptId::derived(&["pi_1", "12"]), AttemptId::derived(&["pi_11", "2"]));
        assert!(AttemptId::parse(a.as_str()).is_ok());
    }
}
