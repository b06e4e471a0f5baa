//! Typed JSON calls from one service to another, carrying the caller's service token.

use crate::client::{ClientError, HttpClient};
use crate::identity::{TokenIssuer, SERVICE_TOKEN_HEADER};
use bytes::Bytes;
use http::Method;
use pay_core::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Why an internal call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The callee answered with a Stripe-shaped error (a decision, not a failure to reach it).
    #[error("{0}")]
    Api(ApiError),
    /// The request certainly did not reach the callee (connection refused, no route).
    #[error("{service} unreachable: {reason}")]
    Unreachable {
        /// Called service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// The request may have been applied but no answer arrived (timeout, reset).
    #[error("{service} gave no answer: {reason}")]
    Ambiguous {
        /// Called service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// The callee answered with something that is not the expected JSON.
    #[error("{service} sent an unreadable answer (status {status})")]
    BadResponse {
        /// Called service.
        service: String,
        /// HTTP status received.
        status: u16,
    },
}

impl CallError {
    /// True when the operation may have taken effect at the callee.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, CallError::Ambiguous { .. }) || matches!(self, CallError::Api(e) if e.status >= 500)
    }

    /// The error to pass up to our own caller: the callee's decision unchanged, transport
    /// failures as 503 (retryable) without internal details.
    pub fn into_api_error(self) -> ApiError {
        match self {
            CallError::Api(e) => e,
            CallError::Unreachable { service, .. } | CallError::Ambiguous { service, .. } => ApiError::unavailable(
                format!("A dependency ({service}) is temporarily unavailable; retry the request."),
            ),
            CallError::BadResponse { service, .. } => {
                ApiError::internal(format!("A dependency ({service}) answered unexpectedly."))
            }
        }
    }
}

/// A client for one internal service, e.g. `ServiceClient::new(http, "payments", "http://payments:80")`.
#[derive(Clone)]
pub struct ServiceClient {
    http: HttpClient,
    service: String,
    base: String,
    issuer: Option<Arc<TokenIssuer>>,
    timeout: Duration,
}

impl ServiceClient {
    /// A client for `service` at `base_url`, signing calls with `issuer` when present.
    pub fn new(http: HttpClient, service: &str, base_url: &str, issuer: Option<Arc<TokenIssuer>>) -> ServiceClient {
        ServiceClient {
            http,
            service: service.to_owned(),
            base: base_url.trim_end_matches('/').to_owned(),
            issuer,
            timeout: Duration::from_secs(10),
        }
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> ServiceClient {
        self.timeout = timeout;
        self
    }

    /// The called service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// POSTs `body` as JSON to `path` and reads a JSON answer.
    pub async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|_| CallError::BadResponse {
            service: self.service.clone(),
            status: 0,
        })?;
        self.call(Method::POST, path, Bytes::from(bytes)).await
    }

    /// GETs `path` and reads a JSON answer.
    pub async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, CallError> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    async fn call<Resp: DeserializeOwned>(&self, method: Method, path: &str, body: Bytes) -> Result<Resp, CallError> {
        let url = format!("{}{}", self.base, path);
        let token = self.issuer.as_ref().map(|i| i.token_for(&self.service));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json"), ("accept", "application/json")];
        if let Some(t) = token.as_deref() {
            headers.push((SERVICE_TOKEN_HEADER, t));
        }
        let resp = self
            .http
            .request(method, &url, &headers, body, self.timeout)
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status.as_u16();
        if resp.status.is_success() {
            return serde_json::from_slice(&resp.body).map_err(|_| CallError::BadResponse {
                service: self.service.clone(),
                status,
            });
        }
        match ApiError::from_wire(status, &resp.body) {
            Some(e) => Err(CallError::Api(e)),
            None => Err(CallError::BadResponse {
                service: self.service.clone(),
                status,
            }),
        }
    }

    fn transport_error(&self, e: ClientError) -> CallError {
        if e.is_ambiguous() {
            CallError::Ambiguous {
                service: self.service.clone(),
                reason: e.to_string(),
            }
        } else {
            CallError::Unreachable {
                service: self.service.clone(),
                reason: e.to_string(),
            }
        }
    }
}
