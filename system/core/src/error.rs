//! The error every service returns, in the shape of Stripe's error object.
//!
//! The same value crosses internal service boundaries as JSON, so a decline decided by the
//! acquirer reaches the public API, and from there the Stripe SDK, with its `decline_code`
//! intact. Messages never contain card data, keys or secrets.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stripe's error `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// Something went wrong on our side.
    ApiError,
    /// The card was declined or could not be charged.
    CardError,
    /// An Idempotency-Key was reused with different parameters.
    IdempotencyError,
    /// The request was invalid (bad or missing parameter, unknown object, bad key, rate limit).
    InvalidRequestError,
}

/// A Stripe-shaped error with its HTTP status.
#[derive(Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    /// HTTP status to answer with (400, 401, 402, 403, 404, 409, 429, 500, 503).
    #[serde(skip, default = "default_status")]
    pub status: u16,
    /// Stripe's error type.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Machine-readable code (`card_declined`, `parameter_missing`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    /// For card declines: the issuer's reason (`insufficient_funds`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decline_code: Option<String>,
    /// The request parameter the error is about, in bracket notation (`card[number]`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub param: Option<String>,
    /// Human-readable explanation.
    pub message: String,
    /// For errors about a PaymentIntent: the intent as it stands after the error.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payment_intent: Option<serde_json::Value>,
    /// Seconds to wait before retrying (429 and 503 only), sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

fn default_status() -> u16 {
    500
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ApiError({} {:?} code={:?} param={:?}: {})",
            self.status, self.kind, self.code, self.param, self.message
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code}): {}", self.status, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

/// The wire envelope: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error itself.
    pub error: ApiError,
}

impl ApiError {
    fn new(status: u16, kind: ErrorType, code: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: code.map(str::to_owned),
            decline_code: None,
            param: None,
            message: message.into(),
            payment_intent: None,
            retry_after_secs: None,
        }
    }

    /// 400 `invalid_request_error` about `param`, with a specific `code`.
    pub fn invalid_param(param: &str, code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorType::InvalidRequestError, Some(code), message).with_param(param)
    }

    /// 400 `parameter_missing`.
    pub fn missing_param(param: &str) -> ApiError {
        ApiError::invalid_param(param, "parameter_missing", format!("Missing required param: {param}."))
    }

    /// 400 `parameter_unknown`.
    pub fn unknown_param(param: &str) -> ApiError {
        let shown: String = param.chars().take(64).collect();
        ApiError::invalid_param(
            &shown,
            "parameter_unknown",
            format!("Received unknown parameter: {shown}"),
        )
    }

    /// 400 without a specific code (a request that is invalid as a whole).
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorType::InvalidRequestError, None, message)
    }

    /// 404 `resource_missing` for an object id.
    pub fn no_such(kind: &str, param: &str, id: &str) -> ApiError {
        let shown: String = id.chars().take(64).collect();
        ApiError::invalid_param(param, "resource_missing", format!("No such {kind}: '{shown}'")).with_status(404)
    }

    /// 400 when an object is in a state that does not allow the operation.
    pub fn unexpected_state(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorType::InvalidRequestError, Some(code), message)
    }

    /// 402 `card_error` with a decline code (`card_declined` / `insufficient_funds`, ...).
    pub fn card_declined(code: &str, decline_code: Option<&str>, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(402, ErrorType::CardError, Some(code), message);
        e.decline_code = decline_code.map(str::to_owned);
        e
    }

    /// 401: no or bad API key.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(401, ErrorType::InvalidRequestError, None, message)
    }

    /// 403: the key is valid but may not do this.
    pub fn forbidden(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(403, ErrorType::InvalidRequestError, Some(code), message)
    }

    /// 409 `idempotency_key_in_use`: a request with the same key is still running.
    pub fn idempotency_key_in_use() -> ApiError {
        ApiError::new(
            409,
            ErrorType::InvalidRequestError,
            Some("idempotency_key_in_use"),
            "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): please try again later.",
        )
    }

    /// 400 `idempotency_error`: the key was used before with different parameters.
    pub fn idempotency_key_reused() -> ApiError {
        ApiError::new(
            400,
            ErrorType::IdempotencyError,
            Some("idempotency_key_reused"),
            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than the one you used previously.",
        )
    }

    /// 429 `rate_limit` with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        let mut e = ApiError::new(
            429,
            ErrorType::InvalidRequestError,
            Some("rate_limit"),
            "Too many requests hit the API too quickly. Retry with exponential backoff.",
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// 500 `api_error`: a failure on our side; never carries internal details.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, ErrorType::ApiError, None, message)
    }

    /// 503 `api_error`: a dependency is unavailable; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(503, ErrorType::ApiError, Some("service_unavailable"), message);
        e.retry_after_secs = Some(1);
        e
    }

    /// Sets `param`.
    pub fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_owned());
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }

    /// Attaches the PaymentIntent the error concerns.
    pub fn with_payment_intent(mut self, pi: serde_json::Value) -> ApiError {
        self.payment_intent = Some(pi);
        self
    }

    /// True for errors a client may retry unchanged (5xx, 409 in-use, 429).
    pub fn is_retryable(&self) -> bool {
        self.status >= 500 || self.status == 409 || self.status == 429
    }

    /// Wraps in `{"error": ...}` for the wire.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope { error: self.clone() }
    }

    /// Reads an error body that arrived with `status`.
    pub fn from_wire(status: u16, body: &[u8]) -> Option<ApiError> {
        let mut env: ErrorEnvelope = serde_json::from_slice(body).ok()?;
        env.error.status = status;
        Some(env.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_matches_stripe() {
        let e = ApiError::card_declined(
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        );
        let v = serde_json::to_value(e.envelope()).unwrap();
        assert_eq!(v["error"]["type"], "card_error");
        assert_eq!(v["error"]["code"], "card_declined");
        assert_eq!(v["error"]["decline_code"], "insufficient_funds");
        assert!(v["error"].get("param").is_none());
        let back = ApiError::from_wire(402, serde_json::to_vec(&v).unwrap().as_slice()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::no_such("payment_intent", "intent", "pi_x").status, 404);
        assert_eq!(ApiError::idempotency_key_in_use().status, 409);
        assert_eq!(ApiError::idempotency_key_reused().kind, ErrorType::IdempotencyError);
        assert_eq!(ApiError::rate_limited(0).retry_after_secs, Some(1));
        assert!(ApiError::internal("x").is_retryable());
        assert!(!ApiError::missing_param("amount").is_retryable());
    }
}
