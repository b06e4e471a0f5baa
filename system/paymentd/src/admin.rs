//! The operator endpoint of a node that hosts the tokenizer: unsealing (custodian shares, like
//! Vault's `operator unseal`), key status, KEK rotation and key state changes.
//!
//! It listens on its own address (`admin.listen`, loopback by default) in plain HTTP, apart
//! from the public API. Unsealing needs no token (the shares are the credential, and every
//! attempt is audited); everything else needs `Authorization: Bearer <admin token>`, the token
//! being the content of `admin.token_file`. The `paymentd keys …` and `paymentd unseal`
//! commands are its clients, through [`AdminClient`] (which tools such as `pcicheck` use too).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pay_audit::{AuditLog, Outcome};
use pay_hsm::{Hsm, KeyId, KeyState, SoftHsm};
use pay_net::JsonBody;
use pay_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts vault records per KEK (PostgreSQL only: a join over the JSON bodies).
pub type RecordCounter =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<BTreeMap<String, u64>, String>> + Send + Sync>;

/// What the admin endpoint works on.
#[derive(Clone)]
pub struct AdminState {
    /// The tokenizer (its key ring).
    pub tokenizer: Arc<Tokenizer>,
    /// The HSM.
    pub hsm: Arc<dyn Hsm>,
    /// The software HSM when it may be sealed (for unsealing).
    pub sealable: Option<Arc<SoftHsm>>,
    /// SHA-256 of the admin token.
    pub token_digest: [u8; 32],
    /// Records per KEK, when the store can count them.
    pub records: Option<RecordCounter>,
    /// The audit log.
    pub audit: Option<Arc<AuditLog>>,
}

/// A share submitted by `paymentd unseal` (zeroized when dropped).
#[derive(Deserialize)]
pub struct UnsealRequest {
    /// The share text (`pay-share-v1-…`).
    pub share: String,
}

impl Drop for UnsealRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share);
    }
}

/// Seal state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealStatus {
    /// True while the HSM refuses every operation.
    pub sealed: bool,
    /// Distinct shares received so far.
    pub received: usize,
    /// Shares needed.
    pub threshold: u8,
}

/// A rotation request.
#[derive(Deserialize)]
pub struct RotateRequest {
    /// Data keys per database transaction (default 500).
    pub batch: Option<u32>,
}

/// A state change request.
#[derive(Deserialize)]
pub struct StateRequest {
    /// The new state.
    pub state: KeyState,
}

/// One line of `paymentd keys status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyStatusLine {
    /// Key id.
    pub id: String,
    /// Purpose.
    pub purpose: String,
    /// Version.
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Data keys it wraps (KEKs).
    pub data_keys: u64,
    /// Vault records those data keys encrypt (KEKs; when countable).
    pub records: Option<u64>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": {"message": message.into()}}))).into_response()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// The digest the endpoint compares bearer tokens against.
pub fn token_digest(token: &str) -> [u8; 32] {
    sha256(token.trim().as_bytes())
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Digests have a fixed length, so comparing them leaks nothing about the token.
    let d = token_digest(given);
    d.iter()
        .zip(state.token_digest.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn audit(state: &AdminState, actor: &str, event: &str, outcome: Outcome, object: &str) {
    if let Some(a) = &state.audit {
        a.record(actor, event, outcome, "admin", object).await;
    }
}

async fn seal_status(State(s): State<AdminState>) -> Response {
    let (sealed, received, threshold) = match &s.sealable {
        Some(h) => h.seal_progress(),
        None => (false, 0, 0),
    };
    Json(SealStatus {
        sealed,
        received,
        threshold,
    })
    .into_response()
}

async fn unseal(State(s): State<AdminState>, JsonBody(req): JsonBody<UnsealRequest>) -> Response {
    let Some(h) = &s.sealable else {
        return error(StatusCode::CONFLICT, "this node's HSM is not sealable");
    };
    match h.submit_unseal_share(&req.share) {
        Ok(p) => {
            let outcome = if p.unsealed { "unsealed" } else { "share accepted" };
            audit(&s, "custodian", "hsm.unseal", Outcome::Success, outcome).await;
            if p.unsealed {
                if let Err(e) =
                    crate::wiring::ensure_hsm_keys_audited(s.hsm.as_ref(), s.audit.as_deref(), "unseal").await
                {
                    tracing::error!(error = %e, "unsealed, but the HSM keys could not be checked");
                }
                tracing::info!("HSM unsealed; card operations resume");
            }
            Json(SealStatus {
                sealed: !p.unsealed,
                received: p.received,
                threshold: p.threshold,
            })
            .into_response()
        }
        Err(e) => {
            audit(&s, "custodian", "hsm.unseal", Outcome::Failure, "share refused").await;
            error(StatusCode::BAD_REQUEST, format!("share refused: {e}"))
        }
    }
}

async fn keys_status(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        audit(&s, "unknown", "admin.auth", Outcome::Failure, "keys.status").await;
        return error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
    }
    let status = match s.tokenizer.keys().status().await {
        Ok(v) => v,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let records = match &s.records {
        Some(count) => match count().await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count vault records per KEK");
                None
            }
        },
        None => None,
    };
    let lines: Vec<KeyStatusLine> = status
        .into_iter()
        .map(|k| KeyStatusLine {
            records: match (&records, k.key.purpose) {
                (Some(m), pay_hsm::KeyPurpose::Kek) => Some(m.get(&k.key.id.0).copied().unwrap_or(0)),
                _ => None,
            },
            id: k.key.id.0,
            purpose: k.key.purpose.name().to_owned(),
            version: k.key.version,
            state: k.key.state,
            created_ms: k.key.created_at.millis(),
            data_keys: k.data_keys,
        })
        .collect();
    Json(lines).into_response()
}

async fn rotate(State(s): State<AdminState>, headers: HeaderMap, JsonBody(req): JsonBody<RotateRequest>) -> Response {
    if !authorized(&s, &headers) {
        audit(&s, "unknown", "admin.auth", Outcome::Failure, "keys.rotate").await;
        return error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
    }
    match s.tokenizer.keys().rotate_kek(req.batch.unwrap_or(500)).await {
        Ok(r) => {
            audit(&s, "operator", "key.rotate", Outcome::Success, &r.new_kek.0).await;
            Json(r).into_response()
        }
        Err(e) => {
            audit(&s, "operator", "key.rotate", Outcome::Failure, "kek").await;
            error(StatusCode::CONFLICT, e.to_string())
        }
    }
}

async fn set_state(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<StateRequest>,
) -> Response {
    if !authorized(&s, &headers) {
        audit(&s, "unknown", "admin.auth", Outcome::Failure, "keys.state").await;
        return error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
    }
    let event = format!(
        "key.state.{}",
        serde_json::to_value(req.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    match s.tokenizer.keys().set_kek_state(&KeyId(id.clone()), req.state).await {
        Ok(info) => {
            audit(&s, "operator", &event, Outcome::Success, &id).await;
            Json(info).into_response()
        }
        Err(e) => {
            audit(&s, "operator", &event, Outcome::Failure, &id).await;
            error(StatusCode::CONFLICT, e.to_string())
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/seal-status", get(seal_status))
        .route("/admin/v1/unseal", post(unseal))
        .route("/admin/v1/keys", get(keys_status))
        .route("/admin/v1/keys/rotate", post(rotate))
        .route("/admin/v1/keys/{id}/state", post(set_state))
        .with_state(state)
}

/// Vault records per KEK, counted in PostgreSQL (a join of vault records and data keys).
pub async fn records_per_kek(pool: &pay_store::postgres::PgConnections) -> Result<BTreeMap<String, u64>, String> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT d.k1, count(v.id) FROM data_keys d JOIN vault_cards v ON v.body->>'data_key' = d.id GROUP BY d.k1",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for r in rows {
        let kek: Option<String> = r.try_get(0).map_err(|e| e.to_string())?;
        let n: i64 = r.try_get(1).map_err(|e| e.to_string())?;
        if let Some(k) = kek {
            out.insert(k, u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(out)
}

/// Why an admin call failed. Messages never contain the token or a share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminClientError {
    /// The endpoint could not be reached.
    #[error("cannot reach the admin endpoint at {base}: {reason}")]
    Unreachable {
        /// The endpoint's base URL.
        base: String,
        /// What went wrong.
        reason: String,
    },
    /// The endpoint answered with an error.
    #[error("{status} {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The endpoint's error message.
        message: String,
    },
    /// The answer was not what the endpoint documents.
    #[error("unexpected answer from the admin endpoint: {0}")]
    Answer(String),
}

/// A client of the admin endpoint: what `paymentd keys status|rotate|set-state` and
/// `paymentd unseal` send, for the commands and for tools that act as a key custodian.
#[derive(Clone)]
pub struct AdminClient {
    http: pay_net::HttpClient,
    base: String,
    token: zeroize::Zeroizing<String>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for the endpoint at `base` (`http://127.0.0.1:7190`) with the admin token
    /// (surrounding whitespace, such as a token file's newline, is ignored).
    pub fn new(base: &str, token: &str) -> AdminClient {
        AdminClient {
            http: pay_net::HttpClient::new(Arc::new(pay_net::TcpTransport)),
            base: base.trim_end_matches('/').to_owned(),
            token: zeroize::Zeroizing::new(token.trim().to_owned()),
            timeout: std::time::Duration::from_secs(600),
        }
    }

    /// The endpoint's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: axum::http::Method,
        path: &str,
        body: zeroize::Zeroizing<String>,
        with_token: bool,
    ) -> Result<serde_json::Value, AdminClientError> {
        let auth = zeroize::Zeroizing::new(format!("Bearer {}", self.token.as_str()));
        let mut headers = vec![("content-type", "application/json")];
        if with_token {
            headers.push(("authorization", auth.as_str()));
        }
        let r = self
            .http
            .request(
                method,
                &format!("{}{path}", self.base),
                &headers,
                axum::body::Bytes::from(body.as_bytes().to_vec()),
                self.timeout,
            )
            .await
            .map_err(|e| AdminClientError::Unreachable {
                base: self.base.clone(),
                reason: e.to_string(),
            })?;
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if !r.status.is_success() {
            return Err(AdminClientError::Refused {
                status: r.status.as_u16(),
                message: json["error"]["message"].as_str().unwrap_or("request failed").to_owned(),
            });
        }
        Ok(json)
    }

    fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, AdminClientError> {
        serde_json::from_value(v).map_err(|e| AdminClientError::Answer(e.to_string()))
    }

    /// `GET /admin/v1/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus, AdminClientError> {
        let v = self
            .call(
                axum::http::Method::GET,
                "/admin/v1/seal-status",
                Default::default(),
                false,
            )
            .await?;
        Self::decode(v)
    }

    /// `POST /admin/v1/unseal`: submits one custodian share (no token needed).
    pub async fn unseal(&self, share: &str) -> Result<SealStatus, AdminClientError> {
        let body = zeroize::Zeroizing::new(serde_json::json!({ "share": share.trim() }).to_string());
        let v = self
            .call(axum::http::Method::POST, "/admin/v1/unseal", body, false)
            .await?;
        Self::decode(v)
    }

    /// `GET /admin/v1/keys`: every key version, its state and what each KEK protects.
    pub async fn keys_status(&self) -> Result<Vec<KeyStatusLine>, AdminClientError> {
        let v = self
            .call(axum::http::Method::GET, "/admin/v1/keys", Default::default(), true)
            .await?;
        Self::decode(v)
    }

    /// `POST /admin/v1/keys/rotate`: a new KEK version, every data key re-wrapped under it.
    pub async fn rotate(&self, batch: u32) -> Result<pay_tokenizer::vault::RotationReport, AdminClientError> {
        let body = zeroize::Zeroizing::new(serde_json::json!({ "batch": batch }).to_string());
        let v = self
            .call(axum::http::Method::POST, "/admin/v1/keys/rotate", body, true)
            .await?;
        Self::decode(v)
    }

    /// `POST /admin/v1/keys/{id}/state`: moves a KEK along its lifecycle.
    pub async fn set_state(&self, key: &str, state: KeyState) -> Result<pay_hsm::KeyInfo, AdminClientError> {
        let body = zeroize::Zeroizing::new(serde_json::json!({ "state": state }).to_string());
        let v = self
            .call(
                axum::http::Method::POST,
                &format!("/admin/v1/keys/{key}/state"),
                body,
                true,
            )
            .await?;
        Self::decode(v)
    }
}
