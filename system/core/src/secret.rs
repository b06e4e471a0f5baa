//! Wrappers for values that must never be printed: API secrets, PINs, key material.
//!
//! A [`Secret`] has no clear-text `Debug` or `Display`, is zeroized when dropped, and can only
//! be read through [`Secret::expose`], which makes every read site easy to audit.

use serde::{Deserialize, Deserializer};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A value that is redacted in every debug print and wiped from memory on drop.
pub struct Secret<T: Zeroize>(Zeroizing<T>);

/// A secret text (API key, PIN, password).
pub type SecretString = Secret<String>;
/// Secret bytes (key material).
pub type SecretBytes = Secret<Vec<u8>>;

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Secret<T> {
        Secret(Zeroizing::new(value))
    }
    /// Reads the value. Callers must not log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Secret(Zeroizing::new((*self.0).clone()))
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(v: T) -> Self {
        Secret::new(v)
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret::new)
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serializes a secret's clear value. Only for fields that must cross a service boundary in
/// clear inside an authenticated internal call (the card number on its way to the tokenizer
/// or the card network); use as `#[serde(serialize_with = "pay_core::secret::serialize_exposed")]`.
pub fn serialize_exposed<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// [`serialize_exposed`] for an optional secret.
pub fn serialize_exposed_opt<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) => s.serialize_some(v.expose().as_str()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::new("sk_test_supersecret".to_owned());
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), "sk_test_supersecret");
        let parsed: SecretString = serde_json::from_str("\"pin\"").unwrap();
        assert!(!format!("{parsed:?}").contains("pin"));
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
