//! The card vault: the only service that ever holds a card number in memory, and (with the
//! HSM) the whole cardholder-data environment.
//!
//! * **Tokenize** (from the API): validate the card, fingerprint it with a keyed HMAC inside the
//!   HSM, encrypt the number with AES-256-GCM under a data key that the HSM's key-encryption
//!   key wraps (envelope encryption), store the ciphertext with brand, BIN, last four and
//!   expiry, and answer with a token. The CVC is never stored: it is held in memory until the
//!   first authorization or a short TTL (PCI DSS 3.3.1).
//! * **Vault and forward** (from the payment service only): the caller names a token; the
//!   tokenizer decrypts the number in memory, sends the operation to the card network with the
//!   caller's idempotency key, and returns the network's answer. The payment service never
//!   sees a card number.

#![warn(missing_docs)]

pub mod pan;
pub mod vault;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use pan::{Cvc, Pan};
use pay_core::{AccountId, ApiError, CardSummary, Env, Timestamp, VaultTokenId};
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::JsonBody;
use pay_net::{api_error_response, json_response, CallError, Caller, TokenVerifier};
use pay_proto::acquirer::{
    AcquirerClient, AuthorizeRequest, CaptureRequest, NetworkCard, NetworkResult, RefundRequest, VoidRequest,
};
use pay_proto::tokenizer::{ForwardAuthorize, ForwardFollowUp, TokenizeRequest, TokenizeResponse};
use pay_store::{Db, Index, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vault::{KeyRing, VaultCard};

/// Tunables.
#[derive(Debug, Clone)]
pub struct TokenizerConfig {
    /// How long a CVC is held in memory if no authorization uses it.
    pub cvc_ttl: Duration,
    /// A data key encrypts at most this many cards before a new one is made.
    pub data_key_max_uses: u32,
    /// A data key is used for new cards for at most this long.
    pub data_key_max_age: Duration,
    /// Unwrapped data keys stay in memory at most this long.
    pub unwrapped_cache_ttl: Duration,
    /// An unwrapped data key in memory serves at most this many decryptions before it is
    /// unwrapped again by the HSM.
    pub unwrapped_cache_max_uses: u32,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            cvc_ttl: Duration::from_secs(3600),
            data_key_max_uses: 10_000,
            data_key_max_age: Duration::from_secs(3600),
            unwrapped_cache_ttl: Duration::from_secs(300),
            unwrapped_cache_max_uses: 1000,
        }
    }
}

/// The tokenizer service.
pub struct Tokenizer {
    db: Db,
    env: Env,
    keys: KeyRing,
    acquirer: AcquirerClient,
    cvcs: Mutex<BTreeMap<String, (Cvc, Timestamp)>>,
    config: TokenizerConfig,
    audit: Option<Arc<pay_audit::AuditLog>>,
}

fn store(e: StoreError) -> ApiError {
    e.into_api_error()
}

impl Tokenizer {
    /// A tokenizer over `db` (vault tables), keys in `hsm`, forwarding to `acquirer`.
    pub fn new(
        db: Db,
        env: Env,
        hsm: Arc<dyn pay_hsm::Hsm>,
        acquirer: AcquirerClient,
        config: TokenizerConfig,
    ) -> Tokenizer {
        let keys = KeyRing::new(db.clone(), env.clone(), hsm, &config);
        Tokenizer {
            db,
            env,
            keys,
            acquirer,
            cvcs: Mutex::new(BTreeMap::new()),
            config,
            audit: None,
        }
    }

    /// Records every detokenization (vault-and-forward) in `audit` (PCI DSS 10.2.1.1).
    pub fn with_audit(mut self, audit: Option<Arc<pay_audit::AuditLog>>) -> Tokenizer {
        self.audit = audit;
        self
    }

    /// The audit log, if any.
    pub fn audit(&self) -> Option<&Arc<pay_audit::AuditLog>> {
        self.audit.as_ref()
    }

    /// The key ring (rotation and status tooling).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Validates and vaults a card.
    pub async fn tokenize(&self, req: TokenizeRequest) -> Result<TokenizeResponse, ApiError> {
        let now = self.env.now();
        let card = pan::validate(
            &req.card.number,
            req.card.exp_month,
            req.card.exp_year,
            req.card.cvc.as_ref(),
            now,
        )?;
        let token = match &req.request_key {
            Some(k) => VaultTokenId::derived(&[req.account.as_str(), k]),
            None => VaultTokenId::generate(self.env.entropy.as_ref()),
        };
        // No read first: a re-run of the request (after a crash or a released 5xx) is found by
        // the insert's conflict below, which costs a re-run one encryption instead of costing
        // every first run a read.
        let fingerprint = self.keys.fingerprint(card.pan.digits()).await?;
        let (country, funding) = card.pan.country_and_funding();
        let summary = CardSummary {
            brand: card.pan.brand(),
            bin: card.pan.bin(),
            last4: card.pan.last4(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            fingerprint,
            country,
            funding,
        };
        let aad = vault::aad(&req.account, &token);
        let sealed = self.keys.encrypt(card.pan.digits().as_bytes(), &aad).await?;
        let record = VaultCard::new(
            token.clone(),
            req.account.clone(),
            &summary,
            card.pan.len(),
            sealed,
            now,
        );
        let mut txn = self.db.txn();
        txn.insert(&record);
        let card_summary = match self.db.commit(txn).await {
            Ok(_) => summary,
            // An earlier run of this request vaulted the card: answer with what it vaulted.
            Err(StoreError::Conflict {
                kind: pay_store::ConflictKind::Exists,
                ..
            }) => self.load(&req.account, &token).await?.summary(),
            Err(e) => return Err(store(e)),
        };
        let held = self.hold_cvc(&token, card.cvc, now);
        Ok(TokenizeResponse {
            token,
            card: card_summary,
            cvc_held: held,
        })
    }

    fn hold_cvc(&self, token: &VaultTokenId, cvc: Option<Cvc>, now: Timestamp) -> bool {
        let Some(cvc) = cvc else { return false };
        let mut held = match self.cvcs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        held.retain(|_, (_, exp)| *exp > now);
        held.insert(token.to_string(), (cvc, now.plus(self.config.cvc_ttl)));
        true
    }

    /// Takes the CVC for its one use (an authorization), if still held.
    fn take_cvc(&self, token: &VaultTokenId, now: Timestamp) -> Option<Cvc> {
        let mut held = match self.cvcs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        held.retain(|_, (_, exp)| *exp > now);
        held.remove(token.as_str()).map(|(c, _)| c)
    }

    /// Number of CVCs held in memory (for tests and metrics).
    pub fn cvcs_held(&self) -> usize {
        match self.cvcs.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    /// What may be known about a vaulted card.
    pub async fn card(&self, account: &AccountId, token: &VaultTokenId) -> Result<CardSummary, ApiError> {
        Ok(self.load(account, token).await?.summary())
    }

    async fn load(&self, account: &AccountId, token: &VaultTokenId) -> Result<VaultCard, ApiError> {
        self.db
            .get_owned::<VaultCard>(account.as_str(), token.as_str())
            .await
            .map_err(store)?
            .map(|v| v.value)
            .ok_or_else(|| ApiError::no_such("token", "token", token.as_str()))
    }

    /// Decrypts a vaulted card number in memory.
    async fn open(&self, card: &VaultCard) -> Result<Pan, ApiError> {
        let digits = self.keys.decrypt(card).await?;
        Ok(Pan::from_vault(digits))
    }

    /// Vault and forward: decrypts the card and sends an authorization to the network.
    pub async fn forward_authorize(&self, req: ForwardAuthorize) -> Result<NetworkResult, ApiError> {
        let now = self.env.now();
        let card = self.load(&req.account, &req.token).await?;
        let opened = self.open(&card).await;
        if let Some(a) = &self.audit {
            let outcome = match opened {
                Ok(_) => pay_audit::Outcome::Success,
                Err(_) => pay_audit::Outcome::Failure,
            };
            a.record(
                req.account.as_str(),
                "detokenize",
                outcome,
                "payments",
                req.token.as_str(),
            )
            .await;
        }
        let pan = opened?;
        let cvc = self.take_cvc(&req.token, now);
        let auth = AuthorizeRequest {
            idempotency_key: req.idempotency_key,
            merchant: req.account,
            amount: req.amount,
            currency: req.currency,
            capture: req.capture,
            card: NetworkCard {
                number: pan.to_secret(),
                exp_month: card.exp_month,
                exp_year: card.exp_year,
                cvc: cvc.map(|c| c.0),
            },
        };
        drop(pan);
        self.acquirer.authorize(&auth).await.map_err(network_error)
    }

    /// Forwards a capture.
    pub async fn forward_capture(&self, req: ForwardFollowUp) -> Result<NetworkResult, ApiError> {
        let r = CaptureRequest {
            idempotency_key: req.idempotency_key,
            merchant: req.account,
            authorization_id: req.authorization_id,
            amount: req.amount,
        };
        self.acquirer.capture(&r).await.map_err(network_error)
    }

    /// Forwards a refund.
    pub async fn forward_refund(&self, req: ForwardFollowUp) -> Result<NetworkResult, ApiError> {
        let r = RefundRequest {
            idempotency_key: req.idempotency_key,
            merchant: req.account,
            authorization_id: req.authorization_id,
            amount: req.amount,
        };
        self.acquirer.refund(&r).await.map_err(network_error)
    }

    /// Forwards a void.
    pub async fn forward_void(&self, req: ForwardFollowUp) -> Result<NetworkResult, ApiError> {
        let r = VoidRequest {
            idempotency_key: req.idempotency_key,
            merchant: req.account,
            authorization_id: req.authorization_id,
        };
        self.acquirer.void(&r).await.map_err(network_error)
    }

    /// Looks up a network operation by key.
    pub async fn lookup(&self, key: &str) -> Result<NetworkResult, ApiError> {
        self.acquirer.lookup(key).await.map_err(network_error)
    }

    /// Deletes vaulted cards whose expiry month ended before `now`'s month (data retention,
    /// PCI DSS 3.2.1), looking back `years`. Returns how many were purged.
    pub async fn purge_expired(&self, now: Timestamp, years: i32) -> Result<u64, ApiError> {
        let (year, month) = now.year_month();
        let mut purged = 0u64;
        for y in (year - years)..=year {
            for m in 1..=12u32 {
                if y == year && m >= month {
                    break;
                }
                let month_key = vault::expiry_key(y, m);
                loop {
                    let batch = self
                        .db
                        .find::<VaultCard>(None, Index::K2, &month_key, 500)
                        .await
                        .map_err(store)?;
                    if batch.is_empty() {
                        break;
                    }
                    let mut txn = self.db.txn();
                    for v in &batch {
                        txn.delete::<VaultCard>(v.value.token.as_str(), Some(v.version));
                    }
                    match self.db.commit(txn).await {
                        Ok(_) => purged += batch.len() as u64,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(store(e)),
                    }
                }
            }
        }
        Ok(purged)
    }
}

/// The network's refusal passes through unchanged; a failure to reach it is 503 (retryable:
/// every forwarded operation carries its idempotency key).
fn network_error(e: CallError) -> ApiError {
    match e {
        CallError::Api(e) => e,
        other => ApiError::unavailable(format!(
            "The card network could not be reached: {}",
            match other {
                CallError::Ambiguous { .. } => "no answer",
                _ => "unreachable",
            }
        )),
    }
}

fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(&v),
        Err(e) => api_error_response(&e),
    }
}

async fn tokenize(State(t): State<Arc<Tokenizer>>, JsonBody(req): JsonBody<TokenizeRequest>) -> Response {
    respond(t.tokenize(req).await)
}

#[derive(Deserialize)]
struct AccountParam {
    account: String,
}

async fn card(State(t): State<Arc<Tokenizer>>, Path(token): Path<String>, Query(q): Query<AccountParam>) -> Response {
    respond(
        async {
            let account = AccountId::parse(&q.account)
                .map_err(|_| ApiError::invalid_param("account", "parameter_invalid", "Invalid account."))?;
            let token = VaultTokenId::parse(&token).map_err(|_| ApiError::no_such("token", "token", &token))?;
            t.card(&account, &token).await
        }
        .await,
    )
}

async fn authorize(
    State(t): State<Arc<Tokenizer>>,
    Extension(c): Extension<Caller>,
    JsonBody(req): JsonBody<ForwardAuthorize>,
) -> Response {
    tracing::info!(caller = %c.0, token = %req.token, key = %req.idempotency_key, "forward authorize");
    respond(t.forward_authorize(req).await)
}

async fn capture(State(t): State<Arc<Tokenizer>>, JsonBody(req): JsonBody<ForwardFollowUp>) -> Response {
    respond(t.forward_capture(req).await)
}

async fn refund(State(t): State<Arc<Tokenizer>>, JsonBody(req): JsonBody<ForwardFollowUp>) -> Response {
    respond(t.forward_refund(req).await)
}

async fn void(State(t): State<Arc<Tokenizer>>, JsonBody(req): JsonBody<ForwardFollowUp>) -> Response {
    respond(t.forward_void(req).await)
}

async fn lookup(State(t): State<Arc<Tokenizer>>, Path(key): Path<String>) -> Response {
    respond(t.lookup(&key).await)
}

/// The tokenizer's routes: tokenize for the API, card facts for the API and the payment
/// service, and forwarding for the payment service only.
pub fn router(t: Arc<Tokenizer>, verifier: Arc<TokenVerifier>) -> Router {
    let from_api = CallerPolicy {
        verifier: verifier.clone(),
        allowed: &["api"],
    };
    let from_api_or_payments = CallerPolicy {
        verifier: verifier.clone(),
        allowed: &["api", "payments"],
    };
    let from_payments = CallerPolicy {
        verifier,
        allowed: &["payments"],
    };
    let tokenize_routes = Router::new()
        .route("/v1/tokens", post(tokenize))
        .route_layer(axum::middleware::from_fn_with_state(from_api, require_caller));
    let read_routes =
        Router::new()
            .route("/v1/tokens/{token}", get(card))
            .route_layer(axum::middleware::from_fn_with_state(
                from_api_or_payments,
                require_caller,
            ));
    let forward_routes = Router::new()
        .route("/v1/forward/authorize", post(authorize))
        .route("/v1/forward/capture", post(capture))
        .route("/v1/forward/refund", post(refund))
        .route("/v1/forward/void", post(void))
        .route("/v1/forward/operations/{key}", get(lookup))
        .route_layer(axum::middleware::from_fn_with_state(from_payments, require_caller));
    tokenize_routes.merge(read_routes).merge(forward_routes).with_state(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pay_hsm::{Hsm, KeyPurpose, SoftHsm};
    use pay_net::{HttpClient, ServiceClient, TcpTransport};
    use pay_proto::tokenizer::CardInput;
    use pay_store::memory::MemoryBackend;

    async fn tokenizer() -> (Tokenizer, Db) {
        let env = Env::real("tokenizer-test");
        let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
        hsm.generate_key(KeyPurpose::Kek, "kek").await.expect("kek");
        hsm.generate_key(KeyPurpose::Fingerprint, "fingerprint")
            .await
            .expect("fingerprint key");
        let db = Db::new(Arc::new(MemoryBackend::new()), env.clone());
        // Tokenizing never calls the acquirer; the client only completes the service.
        let http = HttpClient::new(Arc::new(TcpTransport));
        let acquirer = AcquirerClient::new(ServiceClient::new(http, "acquirer", "http://127.0.0.1:9", None));
        let t = Tokenizer::new(db.clone(), env, hsm, acquirer, TokenizerConfig::default());
        (t, db)
    }

    fn request(number: &str, key: Option<&str>) -> TokenizeRequest {
        TokenizeRequest {
            account: AccountId::parse("acct_tokenizertest01").expect("account id"),
            card: CardInput {
                number: pay_core::SecretString::new(number.to_owned()),
                exp_month: 12,
                exp_year: 2034,
                cvc: Some(pay_core::SecretString::new("739".to_owned())),
            },
            request_key: key.map(str::to_owned),
        }
    }

    /// A re-run of the same API request (after a crash or a released 5xx) finds the card the
    /// first run vaulted: the same token and summary, one vault record, the CVC held again.
    #[tokio::test]
    async fn a_rerun_with_the_same_request_key_finds_the_card_it_vaulted() {
        let (t, db) = tokenizer().await;
        let first = t
            .tokenize(request("4242424242424242", Some("idem@req_1:k")))
            .await
            .expect("first run");
        let again = t
            .tokenize(request("4242424242424242", Some("idem@req_1:k")))
            .await
            .expect("re-run");
        assert_eq!(again.token, first.token);
        assert_eq!(again.card, first.card);
        assert!(again.cvc_held);
        let stored = db
            .get::<VaultCard>(first.token.as_str())
            .await
            .expect("read")
            .expect("vaulted");
        assert_eq!(stored.version, 1, "the re-run wrote nothing");
        assert_eq!(stored.value.summary(), first.card);
        let other = t
            .tokenize(request("4242424242424242", Some("idem@req_2:k")))
            .await
            .expect("another request");
        assert_ne!(other.token, first.token, "another request key vaults anew");
    }
}
