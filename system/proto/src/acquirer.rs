//! The card network / acquirer interface: what the tokenizer sends when it forwards an
//! operation, and what the network answers. Every operation carries the caller's idempotency
//! key; the network applies each key once and answers a retry with its first answer.

use pay_core::{AccountId, Currency, SecretString};
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};

use crate::objects::CheckResult;

/// Card data as the network receives it: only ever built by the tokenizer, in memory, for one
/// authorization. No `Debug`, and the number serializes only on this one authenticated call.
#[derive(Deserialize, Serialize)]
pub struct NetworkCard {
    /// Full card number.
    #[serde(serialize_with = "pay_core::secret::serialize_exposed")]
    pub number: SecretString,
    /// Expiry month.
    pub exp_month: u32,
    /// Expiry year.
    pub exp_year: i32,
    /// CVC, present only on the first use after tokenization.
    #[serde(serialize_with = "pay_core::secret::serialize_exposed_opt", default)]
    pub cvc: Option<SecretString>,
}

/// Authorize (and optionally capture at once) an amount on a card.
#[derive(Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// Applied once per key.
    pub idempotency_key: String,
    /// The merchant.
    pub merchant: AccountId,
    /// Amount, minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Capture together with the authorization (a "sale").
    pub capture: bool,
    /// The card.
    pub card: NetworkCard,
}

/// Capture part or all of an authorization (once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Applied once per key.
    pub idempotency_key: String,
    /// The merchant.
    pub merchant: AccountId,
    /// The authorization.
    pub authorization_id: String,
    /// Amount to capture (≤ authorized).
    pub amount: i64,
}

/// Refund part of a captured authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRequest {
    /// Applied once per key.
    pub idempotency_key: String,
    /// The merchant.
    pub merchant: AccountId,
    /// The authorization.
    pub authorization_id: String,
    /// Amount to refund (≤ captured − refunded).
    pub amount: i64,
}

/// Release an uncaptured authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoidRequest {
    /// Applied once per key.
    pub idempotency_key: String,
    /// The merchant.
    pub merchant: AccountId,
    /// The authorization.
    pub authorization_id: String,
}

/// Kind of network operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Authorization only.
    Authorize,
    /// Authorization and capture together.
    Sale,
    /// Capture of an authorization.
    Capture,
    /// Refund of a capture.
    Refund,
    /// Release of an authorization.
    Void,
}

impl OpKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Authorize => "authorize",
            OpKind::Sale => "sale",
            OpKind::Capture => "capture",
            OpKind::Refund => "refund",
            OpKind::Void => "void",
        }
    }
}

/// Why the network declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// Stripe error code (`card_declined`, `expired_card`, `incorrect_cvc`, `processing_error`).
    pub code: String,
    /// Issuer reason (`generic_decline`, `insufficient_funds`, …).
    pub decline_code: String,
    /// Explanation for the cardholder.
    pub message: String,
}

/// The network's answer to an operation (also what a lookup by key returns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkResult {
    /// The network's operation id (`acq_…`).
    pub operation_id: String,
    /// The caller's key.
    pub idempotency_key: String,
    /// What was done.
    pub kind: OpKind,
    /// The merchant.
    pub merchant: AccountId,
    /// Approved (true) or declined/refused (false).
    pub approved: bool,
    /// The authorization this operation belongs to (its own id for authorize/sale).
    pub authorization_id: Option<String>,
    /// Amount of this operation.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Why declined.
    pub decline: Option<Decline>,
    /// CVC verification (authorize/sale).
    pub cvc_check: Option<CheckResult>,
    /// Network transaction id.
    pub network_transaction_id: Option<String>,
    /// Issuer authorization code.
    pub authorization_code: Option<String>,
    /// Card brand (authorize/sale).
    pub brand: Option<String>,
    /// Last four digits (authorize/sale).
    pub last4: Option<String>,
    /// When the network applied it (Unix ms).
    pub created: i64,
}

/// A page of the network's ledger, oldest first (for reconciliation and the simulator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerPage {
    /// Operations.
    pub operations: Vec<NetworkResult>,
    /// Cursor for the next page (the last operation's key), if more exist.
    pub next_after: Option<String>,
}

/// Typed client for the acquirer service (used by the tokenizer only).
#[derive(Clone)]
pub struct AcquirerClient {
    inner: ServiceClient,
}

impl AcquirerClient {
    /// Wraps a service client for the `acquirer` service.
    pub fn new(inner: ServiceClient) -> AcquirerClient {
        AcquirerClient { inner }
    }
    /// Authorizes (or sells).
    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/authorizations", req).await
    }
    /// Captures.
    pub async fn capture(&self, req: &CaptureRequest) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/captures", req).await
    }
    /// Refunds.
    pub async fn refund(&self, req: &RefundRequest) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/refunds", req).await
    }
    /// Voids.
    pub async fn void(&self, req: &VoidRequest) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/voids", req).await
    }
    /// Looks up an operation by the caller's key (404 when the network never applied it).
    pub async fn lookup(&self, idempotency_key: &str) -> Result<NetworkResult, CallError> {
        self.inner
            .get(&format!("/v1/operations/{}", encode_path(idempotency_key)))
            .await
    }
    /// Reads the ledger after a cursor.
    pub async fn ledger(&self, after: Option<&str>, limit: u32) -> Result<LedgerPage, CallError> {
        let q = match after {
            Some(a) => format!("/v1/ledger?limit={limit}&after={}", encode_path(a)),
            None => format!("/v1/ledger?limit={limit}"),
        };
        self.inner.get(&q).await
    }
}

/// Keeps path segments to a safe alphabet (keys are generated ids, so this never loses data).
pub fn encode_path(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
        .collect()
}
