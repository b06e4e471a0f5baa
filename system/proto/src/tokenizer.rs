//! The tokenizer's interface: tokenize a card (from the API) and forward operations to the card
//! network (from the payment service only — "vault and forward": the payment service names a
//! token, the tokenizer decrypts the card in memory and calls the network).

use crate::acquirer::NetworkResult;
use pay_core::{AccountId, CardSummary, Currency, SecretString, VaultTokenId};
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};

/// Card data as the API receives it from a client. No `Debug`; the number and CVC serialize
/// only on the authenticated call into the tokenizer.
#[derive(Deserialize, Serialize)]
pub struct CardInput {
    /// Card number as typed (spaces and dashes allowed).
    #[serde(serialize_with = "pay_core::secret::serialize_exposed")]
    pub number: SecretString,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Expiry year (two or four digits).
    pub exp_year: i32,
    /// Card verification code.
    #[serde(serialize_with = "pay_core::secret::serialize_exposed_opt", default)]
    pub cvc: Option<SecretString>,
}

/// Tokenize a card.
#[derive(Serialize, Deserialize)]
pub struct TokenizeRequest {
    /// The merchant the card belongs to.
    pub account: AccountId,
    /// The card.
    pub card: CardInput,
    /// Derives the token id: a re-run of the same API request finds the same vault record.
    #[serde(default)]
    pub request_key: Option<String>,
}

/// A vaulted card: its token and what may be known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    /// The vault token.
    pub token: VaultTokenId,
    /// Brand, BIN, last four, expiry, fingerprint, country, funding.
    pub card: CardSummary,
    /// A CVC is held in memory for the first authorization.
    pub cvc_held: bool,
}

/// Forward an authorization (or sale) for a vaulted card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardAuthorize {
    /// The merchant.
    pub account: AccountId,
    /// The vaulted card.
    pub token: VaultTokenId,
    /// Amount, minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Capture at once.
    pub capture: bool,
    /// The network idempotency key (derived from the payment attempt).
    pub idempotency_key: String,
}

/// Forward a capture, refund or void (no card data needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardFollowUp {
    /// The merchant.
    pub account: AccountId,
    /// The authorization.
    pub authorization_id: String,
    /// Amount (ignored for void).
    pub amount: i64,
    /// The network idempotency key.
    pub idempotency_key: String,
}

/// Typed client for the tokenizer service.
#[derive(Clone)]
pub struct TokenizerClient {
    inner: ServiceClient,
}

impl TokenizerClient {
    /// Wraps a service client for the `tokenizer` service.
    pub fn new(inner: ServiceClient) -> TokenizerClient {
        TokenizerClient { inner }
    }
    /// Tokenizes a card (API only).
    pub async fn tokenize(&self, req: &TokenizeRequest) -> Result<TokenizeResponse, CallError> {
        self.inner.post("/v1/tokens", req).await
    }
    /// What may be known about a vaulted card.
    pub async fn card(&self, account: &AccountId, token: &VaultTokenId) -> Result<CardSummary, CallError> {
        self.inner
            .get(&format!("/v1/tokens/{}?account={}", token, account))
            .await
    }
    /// Forwards an authorization (payment service only).
    pub async fn authorize(&self, req: &ForwardAuthorize) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/forward/authorize", req).await
    }
    /// Forwards a capture.
    pub async fn capture(&self, req: &ForwardFollowUp) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/forward/capture", req).await
    }
    /// Forwards a refund.
    pub async fn refund(&self, req: &ForwardFollowUp) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/forward/refund", req).await
    }
    /// Forwards a void.
    pub async fn void(&self, req: &ForwardFollowUp) -> Result<NetworkResult, CallError> {
        self.inner.post("/v1/forward/void", req).await
    }
    /// Looks up a network operation by key (404 if the network never applied it).
    pub async fn lookup(&self, idempotency_key: &str) -> Result<NetworkResult, CallError> {
        self.inner
            .get(&format!(
                "/v1/forward/operations/{}",
                crate::acquirer::encode_path(idempotency_key)
            ))
            .await
    }
}
