//! The webhook service's interface: webhook endpoint management (from the API) and resending
//! events. Signing secrets cross this interface only once, in the answer to a create or a
//! secret roll, as a [`SecretString`] that is never `Debug`-printed.

use crate::objects::Metadata;
use pay_core::{AccountId, SecretString};
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};

/// A webhook endpoint as Stripe's API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `we_…`
    pub id: String,
    /// Always `"webhook_endpoint"`.
    pub object: String,
    /// The API version events are rendered in (null: the account default).
    pub api_version: Option<String>,
    /// Always null (no Connect applications).
    pub application: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Free text.
    pub description: Option<String>,
    /// Event types sent to this endpoint (`*` for all).
    pub enabled_events: Vec<String>,
    /// Always false.
    pub livemode: bool,
    /// Merchant metadata.
    pub metadata: Metadata,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Where events are POSTed.
    pub url: String,
    /// Deliver this endpoint's events one at a time in commit order (an extension of Stripe's
    /// object).
    pub fifo: bool,
    /// The signing secret: present only in the answer to a create or a secret roll.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "pay_core::secret::serialize_exposed_opt",
        default
    )]
    pub secret: Option<SecretString>,
}

/// Create an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateEndpoint {
    /// The merchant.
    pub account: AccountId,
    /// Derives the endpoint id, so a re-run of the same API request finds the same endpoint.
    pub request_key: Option<String>,
    /// Where to POST.
    pub url: String,
    /// Event types (`*` for all).
    pub enabled_events: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// FIFO delivery.
    pub fifo: bool,
}

/// Change an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateEndpoint {
    /// The merchant.
    pub account: AccountId,
    /// New URL.
    pub url: Option<String>,
    /// New event types.
    pub enabled_events: Option<Vec<String>>,
    /// Disable (true) or re-enable (false).
    pub disabled: Option<bool>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Metadata changes as the API parsed them (`Some(None)` clears; empty values delete keys).
    pub metadata: Option<Option<Metadata>>,
    /// FIFO delivery.
    pub fifo: Option<bool>,
}

/// Names an endpoint of a merchant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRef {
    /// The merchant.
    pub account: AccountId,
}

/// Roll an endpoint's secret; the old one keeps signing for `expires_in_secs` (default 24 h).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollSecret {
    /// The merchant.
    pub account: AccountId,
    /// How long the old secret keeps signing (at most 24 h; 0 retires it at once).
    pub expires_in_secs: Option<i64>,
}

/// Send an event (again) to an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResendEvent {
    /// The merchant.
    pub account: AccountId,
    /// `evt_…`
    pub event: String,
    /// Makes repeated requests enqueue once.
    pub request_key: Option<String>,
}

/// Answer to a resend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resent {
    /// The delivery message id.
    pub delivery: String,
}

/// A page of endpoints, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointPage {
    /// The endpoints.
    pub data: Vec<WebhookEndpoint>,
    /// More exist.
    pub has_more: bool,
}

/// List endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListEndpoints {
    /// The merchant.
    pub account: AccountId,
    /// 1–100.
    pub limit: u32,
    /// Cursor (older than).
    pub starting_after: Option<String>,
    /// Cursor (newer than).
    pub ending_before: Option<String>,
}

/// Typed client for the webhooks service.
#[derive(Clone)]
pub struct WebhooksClient {
    inner: ServiceClient,
}

impl WebhooksClient {
    /// Wraps a service client for the `webhooks` service.
    pub fn new(inner: ServiceClient) -> WebhooksClient {
        WebhooksClient { inner }
    }
    /// Creates an endpoint; the answer carries the secret.
    pub async fn create(&self, req: &CreateEndpoint) -> Result<WebhookEndpoint, CallError> {
        self.inner.post("/v1/endpoints", req).await
    }
    /// Reads an endpoint.
    pub async fn get(&self, account: &AccountId, id: &str) -> Result<WebhookEndpoint, CallError> {
        self.inner
            .post(
                &format!("/v1/endpoints/{}/get", crate::acquirer::encode_path(id)),
                &EndpointRef {
                    account: account.clone(),
                },
            )
            .await
    }
    /// Updates an endpoint.
    pub async fn update(&self, id: &str, req: &UpdateEndpoint) -> Result<WebhookEndpoint, CallError> {
        self.inner
            .post(&format!("/v1/endpoints/{}", crate::acquirer::encode_path(id)), req)
            .await
    }
    /// Deletes an endpoint; answers Stripe's deleted object.
    pub async fn delete(&self, account: &AccountId, id: &str) -> Result<serde_json::Value, CallError> {
        self.inner
            .post(
                &format!("/v1/endpoints/{}/delete", crate::acquirer::encode_path(id)),
                &EndpointRef {
                    account: account.clone(),
                },
            )
            .await
    }
    /// Lists endpoints.
    pub async fn list(&self, req: &ListEndpoints) -> Result<EndpointPage, CallError> {
        self.inner.post("/v1/endpoints/list", req).await
    }
    /// Rolls the signing secret; the answer carries the new secret.
    pub async fn roll_secret(&self, id: &str, req: &RollSecret) -> Result<WebhookEndpoint, CallError> {
        self.inner
            .post(
                &format!("/v1/endpoints/{}/roll_secret", crate::acquirer::encode_path(id)),
                req,
            )
            .await
    }
    /// Enqueues a delivery of a past event to an endpoint.
    pub async fn resend(&self, id: &str, req: &ResendEvent) -> Result<Resent, CallError> {
        self.inner
            .post(
                &format!("/v1/endpoints/{}/resend", crate::acquirer::encode_path(id)),
                req,
            )
            .await
    }
}
