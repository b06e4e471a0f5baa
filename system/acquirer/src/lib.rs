//! The card-network / acquirer simulator, an HTTP service with its own ledger.
//!
//! It stands for the outside world a payment platform sends card operations to, so it is the
//! one party besides the tokenizer that receives card numbers; it keeps only brand and last
//! four. Every operation carries the caller's idempotency key and is recorded under it: a
//! retried call gets the first answer back and money moves once, and `GET /v1/operations/{key}`
//! tells a reconciler whether an operation whose answer was lost was applied. Only the
//! tokenizer may call it.
//!
//! Authorizations expire after seven days; an authorization is captured at most once (a
//! partial capture releases the rest), refunds never exceed what was captured, and a captured
//! authorization cannot be voided.

#![warn(missing_docs)]

pub mod cards;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use pay_core::faults::{self, FaultAction};
use pay_core::{AccountId, AcquirerOpId, ApiError, Currency, Env, Timestamp};
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::JsonBody;
use pay_net::{api_error_response, json_response, TokenVerifier};
use pay_proto::acquirer::{
    AuthorizeRequest, CaptureRequest, Decline, LedgerPage, NetworkResult, OpKind, RefundRequest, VoidRequest,
};
use pay_store::{ConflictKind, Db, Entity, Index, StoreError, Table, Versioned};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long an authorization can be captured.
pub const AUTHORIZATION_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// An authorization's running totals (ledger table, id = authorization id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    /// `acq_…`
    pub id: String,
    /// Merchant.
    pub merchant: AccountId,
    /// Authorized amount.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Captured amount (0 until captured).
    pub captured: i64,
    /// Refunded amount.
    pub refunded: i64,
    /// Released without capture.
    pub voided: bool,
    /// Card brand.
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// Unix ms.
    pub created: i64,
    /// Captures after this (Unix ms) are refused.
    pub expires_at: i64,
}

impl Entity for Authorization {
    const TABLE: Table = Table::AcquirerOps;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        self.merchant.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created)
    }
    fn k1(&self) -> Option<String> {
        Some("authorization".to_owned())
    }
}

/// One applied operation (ledger table, id = `key:` + the caller's idempotency key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `key:<idempotency key>`
    pub id: String,
    /// Digest of the request parameters, to refuse a key reused for another operation.
    pub digest: String,
    /// The answer given.
    pub result: NetworkResult,
}

impl Entity for LedgerEntry {
    const TABLE: Table = Table::AcquirerOps;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        self.result.merchant.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.result.created)
    }
    fn k1(&self) -> Option<String> {
        Some("op".to_owned())
    }
    fn k2(&self) -> Option<String> {
        self.result.authorization_id.clone()
    }
}

fn entry_id(key: &str) -> String {
    format!("key:{key}")
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Why the network refused to process an operation at all.
fn invalid(msg: &str) -> ApiError {
    ApiError::invalid_request(msg.to_owned())
}

/// The acquirer simulator.
pub struct Acquirer {
    db: Db,
    env: Env,
}

/// An operation to apply after the idempotency check: what to record, and the authorization
/// state change it implies.
struct Applied {
    result: NetworkResult,
    new_auth: Option<Authorization>,
    auth_update: Option<(i64, Authorization)>,
}

impl Acquirer {
    /// A network keeping its ledger in `db`.
    pub fn new(db: Db, env: Env) -> Acquirer {
        Acquirer { db, env }
    }

    /// The ledger store (the simulator's checkers read it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Looks up an operation by the caller's idempotency key.
    pub async fn lookup(&self, key: &str) -> Result<Option<NetworkResult>, ApiError> {
        Ok(self
            .db
            .get::<LedgerEntry>(&entry_id(key))
            .await
            .map_err(StoreError::into_api_error)?
            .map(|v| v.value.result))
    }

    fn base_result(
        &self,
        key: &str,
        kind: OpKind,
        merchant: &AccountId,
        amount: i64,
        currency: Currency,
    ) -> NetworkResult {
        NetworkResult {
            operation_id: AcquirerOpId::generate(self.env.entropy.as_ref()).to_string(),
            idempotency_key: key.to_owned(),
            kind,
            merchant: merchant.clone(),
            approved: false,
            authorization_id: None,
            amount,
            currency,
            decline: None,
            cvc_check: None,
            network_transaction_id: None,
            authorization_code: None,
            brand: None,
            last4: None,
            created: self.env.now().millis(),
        }
    }

    /// Runs one operation exactly once per key: replays a recorded answer, otherwise decides
    /// with `decide` and records the answer and the authorization change atomically.
    ///
    /// `stateless` says that `decide` reads nothing the operation itself changes (an
    /// authorization decides on the request alone), so that a repeat of the key would decide
    /// the same way again: the first try then writes without reading first, and a key seen
    /// before is found by its ledger entry's insert conflicting. Captures, refunds and voids
    /// read the authorization they change: a repeat would decide on the changed authorization
    /// and could fail before it reached the ledger, so they read the ledger first.
    async fn once<F, Fut>(
        &self,
        key: &str,
        request_digest: String,
        stateless: bool,
        decide: F,
    ) -> Result<NetworkResult, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Applied, ApiError>>,
    {
        if key.is_empty() || key.len() > 255 {
            return Err(invalid("An idempotency key of 1 to 255 characters is required."));
        }
        for attempt in 0..8 {
            if attempt > 0 || !stateless {
                if let Some(existing) = self
                    .db
                    .get::<LedgerEntry>(&entry_id(key))
                    .await
                    .map_err(StoreError::into_api_error)?
                {
                    if existing.value.digest != request_digest {
                        return Err(ApiError::idempotency_key_reused());
                    }
                    return Ok(existing.value.result);
                }
            }
            match faults::apply(self.env.fault(faults::ACQUIRER_APPLY, key)).await {
                FaultAction::Fail | FaultAction::DropReply => {
                    return Err(ApiError::unavailable("The card network is temporarily unavailable."))
                }
                _ => {}
            }
            let applied = decide().await?;
            let mut txn = self.db.txn();
            txn.insert(&LedgerEntry {
                id: entry_id(key),
                digest: request_digest.clone(),
                result: applied.result.clone(),
            });
            if let Some(a) = &applied.new_auth {
                txn.insert(a);
            }
            if let Some((version, a)) = &applied.auth_update {
                txn.update(*version, a);
            }
            match self.db.commit(txn).await {
                Ok(_) => return Ok(applied.result),
                // A concurrent call with the same key, or a concurrent change to the same
                // authorization: read again and decide again.
                Err(StoreError::Conflict {
                    kind: ConflictKind::Exists | ConflictKind::VersionMismatch { .. },
                    ..
                }) => continue,
                Err(e) => return Err(e.into_api_error()),
            }
        }
        Err(ApiError::unavailable("The card network is busy; retry the request."))
    }

    /// Authorizes (or sells) on a card.
    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<NetworkResult, ApiError> {
        if req.amount <= 0 {
            return Err(invalid("Amount must be positive."));
        }
        let number: String = req
            .card
            .number
            .expose()
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        let kind = if req.capture { OpKind::Sale } else { OpKind::Authorize };
        // The digest covers the card by its last four only: the ledger never holds the number.
        let last4 = number.get(number.len().saturating_sub(4)..).unwrap_or("").to_owned();
        let d = digest(&[
            kind.as_str(),
            req.merchant.as_str(),
            &req.amount.to_string(),
            req.currency.code(),
            &last4,
        ]);
        self.once(&req.idempotency_key, d, true, || async {
            let now = self.env.now();
            let decision = cards::decide(
                &number,
                req.card.exp_month,
                req.card.exp_year,
                req.card.cvc.as_ref().map(|c| c.expose().as_str()),
                now,
            );
            let brand = pay_core::CardBrand::detect(&number).as_str().to_owned();
            let mut result = self.base_result(&req.idempotency_key, kind, &req.merchant, req.amount, req.currency);
            result.cvc_check = decision.cvc_check;
            result.brand = Some(brand.clone());
            result.last4 = Some(last4.clone());
            result.network_transaction_id = Some(format!(
                "ntx_{}",
                pay_core::ids::random_base62(self.env.entropy.as_ref(), 15)
            ));
            let mut new_auth = None;
            if decision.decline.is_none() {
                let auth_id = AcquirerOpId::generate(self.env.entropy.as_ref()).to_string();
                result.approved = true;
                result.authorization_id = Some(auth_id.clone());
                result.authorization_code =
                    Some(pay_core::ids::random_base62(self.env.entropy.as_ref(), 6).to_uppercase());
                new_auth = Some(Authorization {
                    id: auth_id,
                    merchant: req.merchant.clone(),
                    amount: req.amount,
                    currency: req.currency,
                    captured: if req.capture { req.amount } else { 0 },
                    refunded: 0,
                    voided: false,
                    brand,
                    last4: last4.clone(),
                    created: now.millis(),
                    expires_at: now.plus(AUTHORIZATION_VALIDITY).millis(),
                });
            }
            result.decline = decision.decline;
            Ok(Applied {
                result,
                new_auth,
                auth_update: None,
            })
        })
        .await
    }

    async fn load_auth(&self, merchant: &AccountId, id: &str) -> Result<Versioned<Authorization>, ApiError> {
        match self
            .db
            .get::<Authorization>(id)
            .await
            .map_err(StoreError::into_api_error)?
        {
            Some(a) if a.value.merchant == *merchant && a.value.id.starts_with("acq_") => Ok(a),
            _ => Err(ApiError::no_such("authorization", "authorization_id", id)),
        }
    }

    fn refused(
        &self,
        key: &str,
        kind: OpKind,
        auth: &Authorization,
        amount: i64,
        code: &str,
        message: &str,
    ) -> Applied {
        let mut result = self.base_result(key, kind, &auth.merchant, amount, auth.currency);
        result.authorization_id = Some(auth.id.clone());
        result.decline = Some(Decline {
            code: code.to_owned(),
            decline_code: code.to_owned(),
            message: message.to_owned(),
        });
        Applied {
            result,
            new_auth: None,
            auth_update: None,
        }
    }

    fn accepted(&self, key: &str, kind: OpKind, version: i64, auth: Authorization, amount: i64) -> Applied {
        let mut result = self.base_result(key, kind, &auth.merchant, amount, auth.currency);
        result.approved = true;
        result.authorization_id = Some(auth.id.clone());
        result.network_transaction_id = Some(format!(
            "ntx_{}",
            pay_core::ids::random_base62(self.env.entropy.as_ref(), 15)
        ));
        Applied {
            result,
            new_auth: None,
            auth_update: Some((version, auth)),
        }
    }

    /// Captures an authorization (once; a partial capture releases the remainder).
    pub async fn capture(&self, req: &CaptureRequest) -> Result<NetworkResult, ApiError> {
        if req.amount <= 0 {
            return Err(invalid("Amount must be positive."));
        }
        let d = digest(&[
            "capture",
            req.merchant.as_str(),
            &req.authorization_id,
            &req.amount.to_string(),
        ]);
        self.once(&req.idempotency_key, d, false, || async {
            let Versioned {
                version,
                value: mut auth,
            } = self.load_auth(&req.merchant, &req.authorization_id).await?;
            let key = &req.idempotency_key;
            Ok(if auth.voided {
                self.refused(
                    key,
                    OpKind::Capture,
                    &auth,
                    req.amount,
                    "authorization_voided",
                    "The authorization was released.",
                )
            } else if auth.captured > 0 {
                self.refused(
                    key,
                    OpKind::Capture,
                    &auth,
                    req.amount,
                    "already_captured",
                    "The authorization was already captured.",
                )
            } else if self.env.now().millis() > auth.expires_at {
                self.refused(
                    key,
                    OpKind::Capture,
                    &auth,
                    req.amount,
                    "authorization_expired",
                    "The authorization has expired.",
                )
            } else if req.amount > auth.amount {
                self.refused(
                    key,
                    OpKind::Capture,
                    &auth,
                    req.amount,
                    "amount_too_large",
                    "The capture exceeds the authorized amount.",
                )
            } else {
                auth.captured = req.amount;
                self.accepted(key, OpKind::Capture, version, auth, req.amount)
            })
        })
        .await
    }

    /// Refunds part of what was captured.
    pub async fn refund(&self, req: &RefundRequest) -> Result<NetworkResult, ApiError> {
        if req.amount <= 0 {
            return Err(invalid("Amount must be positive."));
        }
        let d = digest(&[
            "refund",
            req.merchant.as_str(),
            &req.authorization_id,
            &req.amount.to_string(),
        ]);
        self.once(&req.idempotency_key, d, false, || async {
            let Versioned {
                version,
                value: mut auth,
            } = self.load_auth(&req.merchant, &req.authorization_id).await?;
            let key = &req.idempotency_key;
            Ok(if req.amount > auth.captured - auth.refunded {
                self.refused(
                    key,
                    OpKind::Refund,
                    &auth,
                    req.amount,
                    "amount_too_large",
                    "The refund exceeds the captured amount not yet refunded.",
                )
            } else {
                auth.refunded += req.amount;
                self.accepted(key, OpKind::Refund, version, auth, req.amount)
            })
        })
        .await
    }

    /// Releases an uncaptured authorization.
    pub async fn void(&self, req: &VoidRequest) -> Result<NetworkResult, ApiError> {
        let d = digest(&["void", req.merchant.as_str(), &req.authorization_id]);
        self.once(&req.idempotency_key, d, false, || async {
            let Versioned {
                version,
                value: mut auth,
            } = self.load_auth(&req.merchant, &req.authorization_id).await?;
            let key = &req.idempotency_key;
            let amount = auth.amount;
            Ok(if auth.captured > 0 {
                self.refused(
                    key,
                    OpKind::Void,
                    &auth,
                    amount,
                    "already_captured",
                    "A captured authorization cannot be voided.",
                )
            } else if auth.voided {
                self.refused(
                    key,
                    OpKind::Void,
                    &auth,
                    amount,
                    "authorization_voided",
                    "The authorization was already released.",
                )
            } else {
                auth.voided = true;
                self.accepted(key, OpKind::Void, version, auth, amount)
            })
        })
        .await
    }

    /// The ledger of one merchant, newest first.
    pub async fn ledger(
        &self,
        merchant: &AccountId,
        starting_after: Option<String>,
        limit: u32,
    ) -> Result<LedgerPage, ApiError> {
        let page = self
            .db
            .list::<LedgerEntry>(pay_store::ListQuery {
                table: Table::AcquirerOps,
                account: merchant.to_string(),
                filter: Some((Index::K1, "op".to_owned())),
                created_gte: None,
                created_lt: None,
                starting_after: starting_after.map(|k| entry_id(&k)),
                ending_before: None,
                limit,
            })
            .await
            .map_err(StoreError::into_api_error)?;
        let operations: Vec<NetworkResult> = page.items.into_iter().map(|v| v.value.result).collect();
        let next_after = if page.has_more {
            operations.last().map(|o| o.idempotency_key.clone())
        } else {
            None
        };
        Ok(LedgerPage { operations, next_after })
    }
}

/// Answers with `result`, unless the fault injector says to lose or delay the answer.
async fn reply(acq: &Acquirer, key: &str, result: Result<NetworkResult, ApiError>) -> Response {
    if result.is_ok() {
        if let FaultAction::DropReply = faults::apply(acq.env.fault(faults::ACQUIRER_REPLY, key)).await {
            // Applied, but the answer never arrives: the caller times out (an ambiguous outcome).
            std::future::pending::<()>().await;
        }
    }
    match result {
        Ok(r) => json_response(&r),
        Err(e) => api_error_response(&e),
    }
}

async fn authorize(State(acq): State<Arc<Acquirer>>, JsonBody(req): JsonBody<AuthorizeRequest>) -> Response {
    let r = acq.authorize(&req).await;
    reply(&acq, &req.idempotency_key, r).await
}

async fn capture(State(acq): State<Arc<Acquirer>>, JsonBody(req): JsonBody<CaptureRequest>) -> Response {
    let r = acq.capture(&req).await;
    reply(&acq, &req.idempotency_key, r).await
}

async fn refund(State(acq): State<Arc<Acquirer>>, JsonBody(req): JsonBody<RefundRequest>) -> Response {
    let r = acq.refund(&req).await;
    reply(&acq, &req.idempotency_key, r).await
}

async fn void(State(acq): State<Arc<Acquirer>>, JsonBody(req): JsonBody<VoidRequest>) -> Response {
    let r = acq.void(&req).await;
    reply(&acq, &req.idempotency_key, r).await
}

async fn lookup(State(acq): State<Arc<Acquirer>>, Path(key): Path<String>) -> Response {
    match acq.lookup(&key).await {
        Ok(Some(r)) => json_response(&r),
        Ok(None) => api_error_response(&ApiError::no_such("operation", "idempotency_key", &key)),
        Err(e) => api_error_response(&e),
    }
}

#[derive(Deserialize)]
struct LedgerParams {
    merchant: String,
    after: Option<String>,
    limit: Option<u32>,
}

async fn ledger(State(acq): State<Arc<Acquirer>>, Query(p): Query<LedgerParams>) -> Response {
    let Ok(merchant) = AccountId::parse(&p.merchant) else {
        return api_error_response(&ApiError::invalid_param(
            "merchant",
            "parameter_invalid",
            "Invalid merchant.",
        ));
    };
    match acq.ledger(&merchant, p.after, p.limit.unwrap_or(100)).await {
        Ok(page) => json_response(&page),
        Err(e) => api_error_response(&e),
    }
}

/// The acquirer's HTTP routes; every route requires the tokenizer's service identity.
pub fn router(acq: Arc<Acquirer>, verifier: Arc<TokenVerifier>) -> Router {
    let policy = CallerPolicy {
        verifier,
        allowed: &["tokenizer"],
    };
    Router::new()
        .route("/v1/authorizations", post(authorize))
        .route("/v1/captures", post(capture))
        .route("/v1/refunds", post(refund))
        .route("/v1/voids", post(void))
        .route("/v1/operations/{key}", get(lookup))
        .route("/v1/ledger", get(ledger))
        .route_layer(axum::middleware::from_fn_with_state(policy, require_caller))
        .with_state(acq)
}
