//! Events: the record of every state change, shaped as Stripe's Event object.
//!
//! A service writes the event in the same storage transaction as the change it announces (the
//! transactional outbox), so an event exists exactly when its change committed.

use crate::env::Timestamp;
use crate::ids::{AccountId, EventId};
use crate::json::JsonText;
use serde::{Deserialize, Serialize};

/// The API version stamped on events and echoed by the API.
pub const API_VERSION: &str = "2024-06-20";

/// Every event type this system emits. Webhook endpoints may subscribe to any of them or `*`.
pub const EVENT_TYPES: &[&str] = &[
    "charge.captured",
    "charge.failed",
    "charge.refunded",
    "charge.succeeded",
    "charge.updated",
    "customer.created",
    "customer.deleted",
    "customer.updated",
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.created",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "refund.created",
    "refund.failed",
    "refund.updated",
    "review.closed",
    "review.opened",
];

/// True when `name` is an event type this system emits.
pub fn is_known_event_type(name: &str) -> bool {
    EVENT_TYPES.binary_search(&name).is_ok()
}

/// `data` of an event: the object after the change and, for updates, the changed fields'
/// previous values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The object as it is after the change, as JSON text: events are written, stored, listed
    /// and sent as they are, and only the simulator's checks look inside them.
    pub object: JsonText,
    /// For `*.updated` events: the previous values of the fields that changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub previous_attributes: Option<serde_json::Value>,
}

/// Which API request caused the event, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventRequest {
    /// The request id (`req_…`).
    pub id: Option<String>,
    /// The Idempotency-Key the request carried.
    pub idempotency_key: Option<String>,
}

/// A Stripe-shaped event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`
    pub id: EventId,
    /// Always `"event"`.
    pub object: String,
    /// The merchant account the event belongs to (not shown by Stripe's API for direct
    /// accounts; kept for scoping).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account: Option<AccountId>,
    /// API version the payload is rendered in.
    pub api_version: String,
    /// Unix seconds.
    pub created: i64,
    /// The object and what changed.
    pub data: EventData,
    /// Always false: this system has only test mode.
    pub livemode: bool,
    /// Endpoints that have not yet acknowledged this event.
    pub pending_webhooks: u32,
    /// The request that caused the event.
    pub request: EventRequest,
    /// The event type, e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Event {
    /// A new event of `kind` about `object` at time `at`.
    pub fn new(id: EventId, account: &AccountId, kind: &str, object: JsonText, at: Timestamp) -> Event {
        Event {
            id,
            object: "event".to_owned(),
            account: Some(account.clone()),
            api_version: API_VERSION.to_owned(),
            created: at.unix_secs(),
            data: EventData {
                object,
                previous_attributes: None,
            },
            livemode: false,
            pending_webhooks: 0,
            request: EventRequest::default(),
            kind: kind.to_owned(),
        }
    }

    /// The id of the object the event is about (`data.object.id` when the object is a JSON
    /// object and its `id` a string), read from the object's text without building a tree.
    pub fn object_id(&self) -> Option<String> {
        self.data.object.decode::<ObjectId>().ok().and_then(|o| o.0)
    }
}

/// The `id` of a JSON object: the string under its key `id` (the last, if repeated), `None`
/// when that is missing or not a string. Anything other than an object is refused, as
/// `serde_json::Value::get` finds no key in it.
struct ObjectId(Option<String>);

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectId, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = ObjectId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ObjectId, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "id" {
                        id = match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ObjectId(id))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_sorted_for_lookup() {
        for w in EVENT_TYPES.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert!(is_known_event_type("payment_intent.succeeded"));
        assert!(!is_known_event_type("payment_intent.exploded"));
    }

    /// The outbox indexes events by the id of their object; reading it from the object's text
    /// must find it wherever it sits in the object and whatever else the object holds.
    #[test]
    fn object_ids_are_read_from_the_objects_text() {
        let event = |object: &str| {
            Event::new(
                EventId::parse("evt_1").unwrap(),
                &AccountId::parse("acct_1").unwrap(),
                "charge.succeeded",
                JsonText::parse(object.into()).unwrap(),
                Timestamp::from_millis(0),
            )
        };
        for (object, id) in [
            (r#"{"id":"ch_1","object":"charge"}"#, Some("ch_1")),
            (
                r#"{"object":"charge","nested":{"id":"no"},"list":[{"id":"x"}],"id":"ch_2"}"#,
                Some("ch_2"),
            ),
            (r#"{"object":"charge","nested":{"id":"no"}}"#, None),
            (r#"{"id":7}"#, None),
            (r#"{"id":null}"#, None),
            (r#"{"id":"ch_3","id":"ch_4"}"#, Some("ch_4")),
            (r#"{"i\u0064":"ch_5"}"#, Some("ch_5")),
            (r#"["ch_1"]"#, None),
            (r#""ch_1""#, None),
        ] {
            assert_eq!(event(object).object_id().as_deref(), id, "{object}");
        }
    }
}
