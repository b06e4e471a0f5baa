//! The `waf` role: a reverse proxy in front of the public API.
//!
//! Every request is checked against the IP deny/allow lists and the per-IP rate limit, read
//! (up to the body limit), inspected by the [`Waf`] engine, rate limited per API key, and
//! then forwarded to the API with its body unchanged. The proxy sets `X-Forwarded-For` from
//! the connection (a client-supplied value counts only when the connection comes from a
//! configured trusted proxy), adds `X-Request-Id`, and authenticates itself with its `waf`
//! service token, which is what makes the API trust those two headers. A block is always
//! HTTP 403 with a body that names only the rule id and the request id; it is counted in
//! metrics and logged without the request body.

use crate::engine::Waf;
use crate::request::HttpRequest;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::Full;
use pay_core::{ApiError, Env, RequestId};
use pay_net::client::HttpClient;
use pay_net::identity::{TokenIssuer, SERVICE_TOKEN_HEADER};
use pay_net::metrics::Metrics;
use pay_net::ratelimit::{RateLimit, RateLimiter};
use pay_net::{api_error_response, PeerAddr};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Rule id reported for a client on the deny list.
pub const IP_DENIED: u32 = 910_100;
/// Rule id reported for a client outside a non-empty allow list.
pub const IP_NOT_ALLOWED: u32 = 910_101;

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR `{0}`")]
pub struct CidrError(String);

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.chars().take(64).collect());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Tunables of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Base URL of the API (`http://127.0.0.1:7101`).
    pub upstream: String,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of the WAF).
    pub trusted_proxies: Vec<Cidr>,
    /// Clients refused outright.
    pub deny: Vec<Cidr>,
    /// When not empty, only these clients are served.
    pub allow: Vec<Cidr>,
    /// Requests per client IP.
    pub ip_rate: RateLimit,
    /// Requests per API key.
    pub key_rate: RateLimit,
    /// Time allowed for the API's answer.
    pub upstream_timeout: Duration,
}

impl ProxyConfig {
    /// Defaults in front of `upstream`.
    pub fn new(upstream: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into(),
            trusted_proxies: Vec::new(),
            deny: Vec::new(),
            allow: Vec::new(),
            ip_rate: RateLimit {
                per_second: 200.0,
                burst: 400.0,
            },
            key_rate: RateLimit {
                per_second: 100.0,
                burst: 200.0,
            },
            upstream_timeout: Duration::from_secs(60),
        }
    }
}

/// The proxy's state.
pub struct WafProxy {
    waf: Arc<Waf>,
    config: ProxyConfig,
    client: HttpClient,
    issuer: Option<Arc<TokenIssuer>>,
    env: Env,
    metrics: Metrics,
    ip_limiter: RateLimiter,
    key_limiter: RateLimiter,
}

impl WafProxy {
    /// A proxy applying `waf`, forwarding with `client` and authenticating with `issuer`.
    pub fn new(
        waf: Arc<Waf>,
        config: ProxyConfig,
        client: HttpClient,
        issuer: Option<Arc<TokenIssuer>>,
        env: Env,
        metrics: Metrics,
    ) -> WafProxy {
        WafProxy {
            ip_limiter: RateLimiter::new(config.ip_rate, 100_000),
            key_limiter: RateLimiter::new(config.key_rate, 100_000),
            waf,
            config,
            client,
            issuer,
            env,
            metrics,
        }
    }

    /// The router: every path goes through [`WafProxy::handle`].
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(WafProxy::handle).with_state(self)
    }

    /// The client's IP: the connection's, or with a trusted peer the nearest address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.config.trusted_proxies.iter().any(|c| c.contains(peer)) {
            return peer;
        }
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect();
        chain
            .iter()
            .rev()
            .find(|ip| !self.config.trusted_proxies.iter().any(|c| c.contains(**ip)))
            .copied()
            .unwrap_or(peer)
    }

    fn blocked(
        &self,
        rule_id: u32,
        family: &str,
        request_id: &str,
        client_ip: &str,
        method: &str,
        path: &str,
    ) -> Response {
        self.metrics.inc(
            "waf_blocked_total",
            "Requests blocked by the WAF.",
            &[("rule_id", &rule_id.to_string()), ("family", family)],
            1,
        );
        tracing::warn!(request_id, client_ip, rule_id, family, method, path, "request blocked");
        let body = serde_json::json!({
            "error": {
                "type": "invalid_request_error",
                "code": "request_blocked",
                "message": "Request blocked",
                "rule_id": rule_id,
                "request_id": request_id,
            }
        });
        let mut r = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            r.headers_mut().insert("request-id", v);
        }
        r
    }

    /// Handles one request.
    pub async fn handle(State(p): State<Arc<WafProxy>>, req: Request) -> Response {
        let now = p.env.now();
        let request_id = RequestId::generate(p.env.entropy.as_ref()).to_string();
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map(|a| a.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let client_ip = p.client_ip(peer, req.headers());
        let ip_text = client_ip.to_string();
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        if p.config.deny.iter().any(|c| c.contains(client_ip)) {
            return p.blocked(IP_DENIED, "ip", &request_id, &ip_text, &method, &path);
        }
        if !p.config.allow.is_empty() && !p.config.allow.iter().any(|c| c.contains(client_ip)) {
            return p.blocked(IP_NOT_ALLOWED, "ip", &request_id, &ip_text, &method, &path);
        }
        if let Err(wait) = p.ip_limiter.check(&ip_text, now) {
            p.metrics.inc(
                "waf_rate_limited_total",
                "Requests refused by the WAF's rate limits.",
                &[("scope", "ip")],
                1,
            );
            return api_error_response(&ApiError::rate_limited(wait));
        }
        let (parts, body) = req.into_parts();
        let limit = p.waf.config().limits.max_body;
        let body = match pay_net::respond::read_limited(body, limit).await {
            Ok(b) => b,
            Err(_) => {
                let mut r = p.blocked(
                    crate::protocol::BODY_TOO_LARGE,
                    "protocol",
                    &request_id,
                    &ip_text,
                    &method,
                    &path,
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
        let target = parts.uri.path_and_query().map_or("/", |x| x.as_str()).to_owned();
        let version = match parts.version {
            axum::http::Version::HTTP_10 => "HTTP/1.0",
            axum::http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let verdict = {
            let inspected = HttpRequest {
                method: &method,
                target: &target,
                version,
                headers: parts.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect(),
                body: &body,
            };
            p.waf.inspect(&inspected)
        };
        if verdict.over_threshold {
            let rule_id = verdict.rule_id().unwrap_or(0);
            let family = crate::rules::family(rule_id);
            if verdict.blocked {
                tracing::debug!(request_id, score = verdict.score, matches = ?verdict.matches, "block details");
                return p.blocked(rule_id, family, &request_id, &ip_text, &method, &path);
            }
            p.metrics.inc(
                "waf_detected_total",
                "Requests over the threshold in detect-only mode.",
                &[("rule_id", &rule_id.to_string()), ("family", family)],
                1,
            );
            tracing::warn!(request_id, client_ip = %ip_text, rule_id, score = verdict.score, method, path, "request over threshold (detect only)");
        }
        if let Some(key) = api_key(&parts.headers) {
            if let Err(wait) = p.key_limiter.check(&key, now) {
                p.metrics.inc(
                    "waf_rate_limited_total",
                    "Requests refused by the WAF's rate limits.",
                    &[("scope", "key")],
                    1,
                );
                return api_error_response(&ApiError::rate_limited(wait));
            }
        }
        p.forward(parts, body, &ip_text, &request_id).await
    }

    async fn forward(
        &self,
        parts: axum::http::request::Parts,
        body: Bytes,
        client_ip: &str,
        request_id: &str,
    ) -> Response {
        let target = parts.uri.path_and_query().map_or("/", |x| x.as_str());
        let url = format!("{}{}", self.config.upstream.trim_end_matches('/'), target);
        let mut b = axum::http::Request::builder().method(parts.method.clone()).uri(&url);
        if let Some(h) = b.headers_mut() {
            for (n, v) in &parts.headers {
                if is_hop_by_hop(n) || is_forwarding_header(n) {
                    continue;
                }
                h.append(n.clone(), v.clone());
            }
            if let Ok(v) = HeaderValue::from_str(client_ip) {
                h.insert("x-forwarded-for", v);
            }
            if let Ok(v) = HeaderValue::from_str(request_id) {
                h.insert("x-request-id", v);
            }
            if let Some(issuer) = &self.issuer {
                if let Ok(v) = HeaderValue::from_str(&issuer.token_for("api")) {
                    h.insert(SERVICE_TOKEN_HEADER, v);
                }
            }
        }
        let req = match b.body(Full::new(body)) {
            Ok(r) => r,
            Err(_) => return api_error_response(&ApiError::invalid_request("Invalid request.")),
        };
        match self.client.send(req, self.config.upstream_timeout).await {
            Ok(resp) => {
                let mut out = Response::new(Body::from(resp.body));
                *out.status_mut() = resp.status;
                for (n, v) in &resp.headers {
                    if !is_hop_by_hop(n) && n != header::CONTENT_LENGTH {
                        out.headers_mut().append(n.clone(), v.clone());
                    }
                }
                out
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "upstream API failed");
                self.metrics
                    .inc("waf_upstream_errors_total", "Failed forwards to the API.", &[], 1);
                api_error_response(&ApiError::unavailable("The API is unavailable; please retry.").with_status(502))
            }
        }
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers only the proxy may set: a client's copies are dropped.
fn is_forwarding_header(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "x-forwarded-for" | "x-real-ip" | "forwarded" | "x-request-id" | "x-forwarded-host" | "x-forwarded-proto"
    ) || n.as_str() == SERVICE_TOKEN_HEADER
}

/// The API key of a request (Bearer, or Basic with the key as user name), for rate limiting.
fn api_key(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
        return Some(k.trim().to_owned());
    }
    let b = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
    let s = String::from_utf8(decoded).ok()?;
    s.split(':').next().filter(|k| !k.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk_test_1"));
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c2tfdGVzdF8yOg=="),
        );
        assert_eq!(api_key(&h).as_deref(), Some("sk_test_2"));
    }
}
