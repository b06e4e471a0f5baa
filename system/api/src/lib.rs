//! The public Payment API: a Stripe-compatible subset over HTTP, in front of the tokenizer and
//! the payment service, so the official Stripe SDKs work unchanged against it.
//!
//! Every request gets a `Request-Id`; is authenticated by a secret or publishable key (Bearer
//! or Basic) and rate limited per key and per client IP; its parameters are read in Stripe's
//! bracket notation or JSON ([`params`]); and every POST honours `Idempotency-Key` with Stripe's
//! semantics ([`Api::post`]). The API never logs a request body and sends card numbers only to
//! the tokenizer.

#![warn(missing_docs)]

/// Defines an axum handler for a POST route: reads the body within the size limit, parses it
/// with `$parse` and runs `$exec` under [`Api::post`]'s idempotency handling. The calling module
/// provides `S` (`State<Arc<Api>>`) and imports the extractors.
macro_rules! post_handler {
    ($name:ident, $parse:expr, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>, headers: HeaderMap, b: Body) -> Response {
            let bytes = match $crate::read_body(b, api.config.body_limit).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            api.post(&ctx, &headers, &bytes, $parse, |req, key| {
                api.$exec(&ctx, req, key)
            })
            .await
        }
    };
    ($name:ident, path, $parse:expr, $exec:ident) => {
        async fn $name(
            State(api): S,
            Extension(ctx): Extension<Ctx>,
            Path(id): Path<String>,
            headers: HeaderMap,
            b: Body,
        ) -> Response {
            let bytes = match $crate::read_body(b, api.config.body_limit).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            api.post(&ctx, &headers, &bytes, $parse, |req, key| {
                api.$exec(&ctx, id.clone(), req, key)
            })
            .await
        }
    };
}

/// Defines an axum handler for a GET or DELETE route: query parameters, then `$exec`.
macro_rules! get_handler {
    ($name:ident, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>) -> Response {
            $crate::answer_response(async { api.$exec(&ctx, Api::query_params(&ctx)?).await }.await)
        }
    };
    ($name:ident, path, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>, Path(id): Path<String>) -> Response {
            $crate::answer_response(async { api.$exec(&ctx, id, Api::query_params(&ctx)?).await }.await)
        }
    };
}

pub mod handlers;
pub mod keys;
pub mod params;
pub mod radar;
pub mod records;
pub mod webhook_endpoints;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keys::{KeyKind, KeyResolver, Principal};
use params::{parse_form, parse_json, Param, Params};
use pay_core::{ApiError, Env, RequestId};
use pay_net::metrics::Metrics;
use pay_net::ratelimit::{RateLimit, RateLimiter};
use pay_net::{api_error_response, PeerAddr, TokenVerifier};
use pay_proto::payments::{PaymentsClient, RequestContext};
use pay_proto::tokenizer::TokenizerClient;
use pay_store::{Db, IdemBegin, IdemBeginOutcome};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the API service.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted.
    pub body_limit: usize,
    /// Requests per API key.
    pub key_rate: RateLimit,
    /// Requests per client IP.
    pub ip_rate: RateLimit,
    /// Failed authentications per client IP before further attempts are refused (lockout).
    pub auth_failure_rate: RateLimit,
    /// An idempotency lock older than this is considered abandoned (its request crashed).
    pub idempotency_lock_timeout: Duration,
    /// How long idempotency keys are kept.
    pub idempotency_ttl: Duration,
    /// Deliberate bug for the simulator's planted-bug proof (feature `planted-bugs` only).
    #[cfg(feature = "planted-bugs")]
    pub skip_idempotency_lock: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: 256 * 1024,
            key_rate: RateLimit {
                per_second: 100.0,
                burst: 200.0,
            },
            ip_rate: RateLimit {
                per_second: 200.0,
                burst: 400.0,
            },
            auth_failure_rate: RateLimit {
                per_second: 0.2,
                burst: 10.0,
            },
            idempotency_lock_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            #[cfg(feature = "planted-bugs")]
            skip_idempotency_lock: false,
        }
    }
}

/// The API service.
pub struct Api {
    pub(crate) db: Db,
    pub(crate) env: Env,
    pub(crate) tokenizer: TokenizerClient,
    pub(crate) payments: PaymentsClient,
    pub(crate) webhooks: Option<pay_proto::webhooks::WebhooksClient>,
    pub(crate) fraud: Option<pay_proto::fraud::FraudClient>,
    keys: KeyResolver,
    key_limiter: RateLimiter,
    ip_limiter: RateLimiter,
    auth_fail_limiter: RateLimiter,
    waf_verifier: Option<Arc<TokenVerifier>>,
    pub(crate) metrics: Metrics,
    pub(crate) config: ApiConfig,
    audit: Option<Arc<pay_audit::AuditLog>>,
}

/// Everything a handler knows about the request beyond its parameters.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `req_…`
    pub request_id: String,
    /// The authenticated key.
    pub principal: Principal,
    /// Client IP.
    pub client_ip: String,
    /// The Idempotency-Key header.
    pub idempotency_key: Option<String>,
    /// Path as requested (for fingerprints and list URLs).
    pub path: String,
    /// Method.
    pub method: Method,
    /// Raw query string.
    pub query: String,
}

impl Ctx {
    /// The context handed to the payment service.
    pub fn request_context(&self) -> RequestContext {
        RequestContext {
            request_id: Some(self.request_id.clone()),
            idempotency_key: self.idempotency_key.clone(),
            client_ip: Some(self.client_ip.clone()),
            email: None,
            customer_created: None,
        }
    }
}

/// A handler's answer: a JSON body with a status.
pub type Answer = Result<(StatusCode, serde_json::Value), ApiError>;

/// JSON value of a serializable object.
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `Ok((200, json))`.
pub fn ok<T: Serialize>(v: &T) -> Answer {
    Ok((StatusCode::OK, to_json(v)))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

impl Api {
    /// An API service over `db` (customers, payment methods, keys, idempotency, events), the
    /// tokenizer and the payment service. `waf_verifier` lets the WAF pass on the client's IP
    /// and request id (trusted only with a valid `waf` service token).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        env: Env,
        tokenizer: TokenizerClient,
        payments: PaymentsClient,
        waf_verifier: Option<Arc<TokenVerifier>>,
        metrics: Metrics,
        config: ApiConfig,
    ) -> Api {
        Api {
            keys: KeyResolver::new(db.clone(), Duration::from_secs(30)),
            key_limiter: RateLimiter::new(config.key_rate, 100_000),
            ip_limiter: RateLimiter::new(config.ip_rate, 100_000),
            auth_fail_limiter: RateLimiter::new(config.auth_failure_rate, 100_000),
            db,
            env,
            tokenizer,
            payments,
            webhooks: None,
            fraud: None,
            waf_verifier,
            metrics,
            config,
            audit: None,
        }
    }

    /// Serves `/v1/webhook_endpoints` through the webhooks service.
    pub fn with_webhooks(mut self, client: pay_proto::webhooks::WebhooksClient) -> Api {
        self.webhooks = Some(client);
        self
    }

    /// Records authentication failures and lockouts in `audit` (PCI DSS 10.2.1.4).
    pub fn with_audit(mut self, audit: Option<Arc<pay_audit::AuditLog>>) -> Api {
        self.audit = audit;
        self
    }

    /// The same API with the Radar routes (`/v1/radar/…`) served by the fraud service.
    pub fn with_fraud(mut self, fraud: pay_proto::fraud::FraudClient) -> Api {
        self.fraud = Some(fraud);
        self
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Parses GET/DELETE query parameters.
    pub fn query_params(ctx: &Ctx) -> Result<Params, ApiError> {
        Ok(Params::new(parse_form(ctx.query.as_bytes())?))
    }

    fn body_params(headers: &HeaderMap, body: &[u8]) -> Result<BTreeMap<String, Param>, ApiError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if body.is_empty() {
            return Ok(BTreeMap::new());
        }
        if ct.starts_with("application/json") {
            parse_json(body)
        } else if ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
            parse_form(body)
        } else {
            Err(ApiError::invalid_request(
                "Unsupported Content-Type: send application/x-www-form-urlencoded or application/json.",
            ))
        }
    }

    /// Runs a POST with Stripe's idempotency semantics.
    ///
    /// `parse` validates the parameters without side effects; a failure there is answered
    /// with 400 and not saved. With an `Idempotency-Key`: a key in use by a running request
    /// gets 409; a key used before with other parameters gets 400 (`idempotency_error`); a
    /// finished key replays the saved status and body with `Idempotent-Replayed: true`.
    /// Otherwise `exec` runs with a request key derived from the Idempotency-Key, which
    /// downstream services use to derive the ids of what they create, so a request re-run
    /// after a crash resumes rather than repeats. Answers below 500 are saved; 5xx answers
    /// release the key, because every downstream step is resumable and a retry is safe: a
    /// retry with the same parameters resumes the same use of the key, one with other
    /// parameters is a new request. A key used again after it expired is a new request too:
    /// the request key includes the use, so what it derives is new.
    pub async fn post<T, P, F, Fut>(&self, ctx: &Ctx, headers: &HeaderMap, body: &[u8], parse: P, exec: F) -> Response
    where
        P: FnOnce(&mut Params) -> Result<T, ApiError>,
        F: FnOnce(T, Option<String>) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let mut params = match Self::body_params(headers, body) {
            Ok(p) => Params::new(p),
            Err(e) => return api_error_response(&e),
        };
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(ctx.method.as_str());
            h.update(b"\n");
            h.update(ctx.path.as_bytes());
            h.update(b"\n");
            h.update(params.canonical().as_bytes());
            hex::encode(h.finalize())
        };
        let typed = match parse(&mut params).and_then(|t| params.finish().map(|_| t)) {
            Ok(t) => t,
            Err(e) => return api_error_response(&e),
        };
        let Some(key) = ctx.idempotency_key.clone() else {
            return answer_response(exec(typed, None).await);
        };
        let account = ctx.principal.account.to_string();
        let now = self.env.now();
        #[cfg(feature = "planted-bugs")]
        if self.config.skip_idempotency_lock {
            return answer_response(exec(typed, None).await);
        }
        let begin = IdemBegin {
            account: account.clone(),
            key: key.clone(),
            fingerprint,
            owner: ctx.request_id.clone(),
            now: now.millis(),
            lock_timeout_ms: i64::try_from(self.config.idempotency_lock_timeout.as_millis()).unwrap_or(i64::MAX),
            expires_at: now.plus(self.config.idempotency_ttl).millis(),
        };
        match self.db.idem_begin(begin).await {
            Err(e) => api_error_response(&e.into_api_error()),
            Ok(IdemBeginOutcome::InProgress) => api_error_response(&ApiError::idempotency_key_in_use()),
            Ok(IdemBeginOutcome::Mismatch) => api_error_response(&ApiError::idempotency_key_reused()),
            Ok(IdemBeginOutcome::Completed { status, body }) => {
                self.metrics.inc(
                    "api_idempotent_replays_total",
                    "Requests answered from a saved idempotent response.",
                    &[],
                    1,
                );
                let mut r = json_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    body.into_bytes(),
                );
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                r
            }
            Ok(IdemBeginOutcome::Started { taken_by, .. }) => {
                // Ids derive from the key and the request that took this use of it, so that a
                // key used again after it expired is a new request, not an answer with what the
                // earlier use created. Keys taken before the store recorded that derive from
                // the key alone. The prefixes differ, so the two forms never give one string.
                let request_key = match taken_by {
                    Some(first) => format!("idem@{first}:{key}"),
                    None => format!("idem:{key}"),
                };
                let (status, body) = match exec(typed, Some(request_key)).await {
                    Ok((s, v)) => (s, serde_json::to_vec(&v).unwrap_or_default()),
                    Err(e) => (
                        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        serde_json::to_vec(&e.envelope()).unwrap_or_default(),
                    ),
                };
                let saved = if status.as_u16() < 500 {
                    self.db
                        .idem_finish(
                            &account,
                            &key,
                            &ctx.request_id,
                            status.as_u16(),
                            &String::from_utf8_lossy(&body),
                        )
                        .await
                } else {
                    self.db.idem_release(&account, &key, &ctx.request_id).await
                };
                if let Err(e) = saved {
                    // The operation itself is durable; only the replay record failed. The
                    // client may retry: the lock expires and the operation resumes.
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "could not save the idempotent response");
                }
                let mut r = json_response(status, body);
                if let Ok(v) = HeaderValue::from_str(&key) {
                    r.headers_mut().insert("idempotency-key", v);
                }
                r
            }
        }
    }

    /// Authenticates, rate limits and annotates a request; runs the handler; adds
    /// `Request-Id`. Used as axum middleware.
    pub async fn gate(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
        let now = api.env.now();
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let from_waf = match (
            &api.waf_verifier,
            req.headers()
                .get(pay_net::identity::SERVICE_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok()),
        ) {
            (Some(v), Some(t)) => v.verify(t).map(|c| c == "waf").unwrap_or(false),
            _ => false,
        };
        let (forwarded_for, forwarded_id) = {
            let header = |name: &str| -> Option<String> {
                req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            (header("x-forwarded-for"), header("x-request-id"))
        };
        let client_ip = if from_waf {
            forwarded_for
                .and_then(|v| v.split(',').next().map(|s| s.trim().to_owned()))
                .unwrap_or(peer)
        } else {
            peer
        };
        let request_id = match forwarded_id
            .filter(|_| from_waf)
            .filter(|r| RequestId::parse(r).is_ok())
        {
            Some(r) => r,
            None => RequestId::generate(api.env.entropy.as_ref()).to_string(),
        };
        let resp = match api.gate_inner(&mut req, &client_ip, &request_id, now).await {
            Some(refused) => refused,
            None => next.run(req).await,
        };
        with_request_id(resp, &request_id)
    }

    async fn gate_inner(
        &self,
        req: &mut Request,
        client_ip: &str,
        request_id: &str,
        now: pay_core::Timestamp,
    ) -> Option<Response> {
        if let Err(wait) = self.ip_limiter.check(client_ip, now) {
            self.metrics.inc(
                "api_rate_limited_total",
                "Requests refused by rate limits.",
                &[("scope", "ip")],
                1,
            );
            return Some(api_error_response(&ApiError::rate_limited(wait)));
        }
        let key = match bearer_key(req.headers()) {
            Some(k) => k,
            None => {
                return Some(api_error_response(&ApiError::unauthenticated(
                    "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                )))
            }
        };
        // Lockout: an IP that keeps failing authentication is refused before the lookup.
        let principal = match self.keys.resolve(&key, now).await {
            Ok(p) => p,
            Err(e) => {
                if e.status == 401 {
                    self.metrics
                        .inc("api_auth_failures_total", "Failed API authentications.", &[], 1);
                    tracing::warn!(request_id, client_ip, key = %keys::mask_key(&key), "authentication failed");
                    let locked = self.auth_fail_limiter.check(client_ip, now);
                    if let Some(a) = &self.audit {
                        let event = if locked.is_err() {
                            "api.auth.lockout"
                        } else {
                            "api.auth"
                        };
                        a.record(
                            "unknown",
                            event,
                            pay_audit::Outcome::Failure,
                            client_ip,
                            &keys::mask_key(&key),
                        )
                        .await;
                    }
                    if let Err(wait) = locked {
                        return Some(api_error_response(&ApiError::rate_limited(wait)));
                    }
                }
                return Some(api_error_response(&e));
            }
        };
        if let Err(wait) = self.key_limiter.check(principal.key_id.as_str(), now) {
            self.metrics.inc(
                "api_rate_limited_total",
                "Requests refused by rate limits.",
                &[("scope", "key")],
                1,
            );
            return Some(api_error_response(&ApiError::rate_limited(wait)));
        }
        if principal.kind == KeyKind::Publishable && !publishable_allowed(req.method(), req.uri().path()) {
            return Some(api_error_response(&ApiError::forbidden(
                "secret_key_required",
                "This API call cannot be made with a publishable API key. Please use a secret API key.",
            )));
        }
        let idempotency_key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(k) = &idempotency_key {
            if k.is_empty() || k.len() > 255 {
                return Some(api_error_response(
                    &ApiError::invalid_request("Idempotency-Key must be 1 to 255 characters.")
                        .with_param("Idempotency-Key"),
                ));
            }
        }
        let ctx = Ctx {
            request_id: request_id.to_owned(),
            principal,
            client_ip: client_ip.to_owned(),
            idempotency_key,
            path: req.uri().path().to_owned(),
            method: req.method().clone(),
            query: req.uri().query().unwrap_or("").to_owned(),
        };
        req.extensions_mut().insert(ctx);
        None
    }
}

fn publishable_allowed(method: &Method, path: &str) -> bool {
    (method == Method::POST && path == "/v1/payment_methods")
        || (method == Method::GET && path.starts_with("/v1/payment_intents/") && path.matches('/').count() == 3)
}

/// The API key from `Authorization: Bearer …` or Basic with the key as user name.
fn bearer_key(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
        return Some(k.trim().to_owned());
    }
    if let Some(b) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
        let s = String::from_utf8(decoded).ok()?;
        return Some(s.split(':').next().unwrap_or("").to_owned()).filter(|k| !k.is_empty());
    }
    None
}

fn with_request_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// Turns a handler answer into a response.
pub fn answer_response(a: Answer) -> Response {
    match a {
        Ok((status, v)) => json_response(status, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => api_error_response(&e),
    }
}

/// The body limit as a response for oversized requests (used by the router).
pub fn too_large(limit: usize) -> Response {
    let mut r = api_error_response(
        &ApiError::invalid_request(format!("Request body too large (limit {limit} bytes).")).with_status(413),
    );
    // The rest of the body is left unread, so this connection cannot carry another request:
    // say so, or a client would reuse it and lose its next request.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads a request body up to `limit` bytes.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    pay_net::respond::read_limited(body, limit)
        .await
        .map_err(|_| too_large(limit))
}
