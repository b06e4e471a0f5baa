//! JSON values kept as text (see [`JsonText`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;
use std::sync::Arc;

/// One JSON value kept as its text: a stored record's body, an event's object.
///
/// These were `serde_json::Value` trees, built from every typed object written, copied on every
/// read of the in-memory store, dropped, and on PostgreSQL rebuilt from `jsonb` before being
/// read into the typed object again: about a sixth of paymentd's instructions per payment. The
/// text is made only by serializing or by parsing, so it is always one JSON value; copies share
/// it. Two are equal when they hold the same JSON value, whatever their spacing and key order:
/// PostgreSQL gives a body written before migration 0017 back normalised (it was `jsonb` then),
/// the in-memory store and later PostgreSQL rows as it was written. Serialized with
/// `serde_json`, it is written as the JSON value itself, not as a string holding it.
#[derive(Clone)]
pub struct JsonText(Arc<RawValue>);

impl JsonText {
    /// The JSON text of `value`.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<JsonText, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(JsonText::from)
    }

    /// The JSON text of `value`, or `null` if it cannot be written: for the objects a service
    /// announces in events, whose derived serializers never fail.
    pub fn of_or_null<T: Serialize + ?Sized>(value: &T) -> JsonText {
        JsonText::of(value).unwrap_or_else(|_| JsonText::null())
    }

    /// JSON's `null`.
    pub fn null() -> JsonText {
        JsonText::from(RawValue::NULL.to_owned())
    }

    /// Takes JSON text read from elsewhere, refusing text that is not one JSON value.
    pub fn parse(text: String) -> Result<JsonText, serde_json::Error> {
        RawValue::from_string(text).map(JsonText::from)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Reads the value into a typed object.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The value as a JSON tree, for code that inspects fields of objects of any type (the
    /// simulator's checks, the API's changed-field lists).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }
}

/// JSON text a deserializer has already checked (a database column, a reply on the wire).
impl From<Box<RawValue>> for JsonText {
    fn from(raw: Box<RawValue>) -> JsonText {
        JsonText(Arc::from(raw))
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        if self.get() == other.get() {
            return true;
        }
        match (self.to_value(), other.to_value()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// The JSON text, as a `serde_json::Value` would print it compactly (with the key order it was
/// written or normalised in).
impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// The JSON text, as `serde_json::Value`'s `Debug` printed the value before: what is kept as
/// JSON text (stored objects, events) never holds card data or secrets in clear (the vault's
/// bodies hold ciphertext).
impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonText, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(JsonText::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL gives a body written before migration 0017 back as `jsonb` prints it (keys
    /// reordered, spaces after `:`), the in-memory store as written: the contract tests and the
    /// simulator's checks compare records across both, so equality is of the JSON value, not of
    /// the text.
    #[test]
    fn bodies_are_equal_when_their_json_values_are() {
        let written = JsonText::parse(r#"{"id":"pi_1","amount":100,"nested":{"b":[1,2],"a":null}}"#.into()).unwrap();
        let normalised =
            JsonText::parse(r#"{"id": "pi_1", "amount": 100, "nested": {"a": null, "b": [1, 2]}}"#.into()).unwrap();
        assert_eq!(written, normalised);
        for other in [
            r#"{"id":"pi_1","amount":101,"nested":{"b":[1,2],"a":null}}"#,
            r#"{"id":"pi_1","amount":100,"nested":{"b":[2,1],"a":null}}"#,
            r#"{"id":"pi_1","amount":100}"#,
            r#"[]"#,
        ] {
            assert_ne!(written, JsonText::parse(other.into()).unwrap(), "{other}");
        }
    }

    /// A body is only ever one JSON value: text from a backend that is not one is refused, not
    /// carried on to fail somewhere later.
    #[test]
    fn bodies_refuse_text_that_is_not_one_json_value() {
        for bad in ["", "{", "{} {}", "{\"a\":}", "nul", "{\"a\":1}x", "'a'"] {
            assert!(JsonText::parse(bad.into()).is_err(), "{bad:?} was taken");
        }
        for good in ["{}", " {\"a\": [1, 2.5, \"x\", null, true]} ", "\"text\"", "12"] {
            assert_eq!(JsonText::parse(good.into()).unwrap().get(), good.trim());
        }
        assert_eq!(JsonText::null().get(), "null");
    }

    proptest::proptest! {
        /// Any typed object's body decodes back to the object, and equals the body of the
        /// object's JSON tree (what bodies were before they were text).
        #[test]
        fn bodies_decode_to_what_was_encoded(
            id in "[a-z_]{1,12}",
            amount in proptest::prelude::any::<i64>(),
            note in proptest::prelude::any::<String>(),
            tags in proptest::collection::btree_map("[a-z\"\\\\]{0,6}", proptest::prelude::any::<Option<u32>>(), 0..5),
        ) {
            let value = serde_json::json!({"id": id, "amount": amount, "note": note, "tags": tags});
            let text = JsonText::of(&value).unwrap();
            let back: serde_json::Value = text.decode().unwrap();
            proptest::prop_assert_eq!(&back, &value);
            proptest::prop_assert_eq!(&text, &JsonText::parse(serde_json::to_string_pretty(&value).unwrap()).unwrap());
            proptest::prop_assert_eq!(text.to_value().unwrap(), value);
        }
    }
}
