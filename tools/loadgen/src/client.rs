//! A client that talks to the public API the way the Stripe SDKs do: form-encoded bodies with
//! bracketed keys (`card[number]`), `Authorization: Bearer <secret key>`, an `Idempotency-Key`
//! on every POST, and a pool of keep-alive HTTP/1.1 connections (over TLS for `https://`).

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// The base URL is not `http://host[:port]` or `https://host[:port]`.
    #[error("--base-url must be http://HOST[:PORT] or https://HOST[:PORT] (got {0})")]
    BadBaseUrl(String),
    /// The CA file could not be read or used.
    #[error("--ca-file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An `https://` URL without a CA file.
    #[error("an https:// base URL needs --ca-file (the CA that signed the server's certificate)")]
    NoCa,
    /// The API key cannot be sent as a header.
    #[error("the API key contains characters that cannot be sent in a header")]
    BadKey,
}

/// Why a request produced no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// No connection could be made.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection failed during the exchange.
    Io,
    /// The answer was not JSON.
    BadBody,
}

impl NetError {
    /// The error's kind in reports.
    pub fn kind(self) -> &'static str {
        match self {
            NetError::Connect => "network connect",
            NetError::Timeout => "network timeout",
            NetError::Io => "network io",
            NetError::BadBody => "response not JSON",
        }
    }
}

/// An answer from the API.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub json: serde_json::Value,
}

impl Answer {
    /// A string field at a JSON pointer.
    pub fn str(&self, pointer: &str) -> Option<&str> {
        self.json.pointer(pointer).and_then(|v| v.as_str())
    }

    /// The error's kind in reports: `http <status> <error.code or error.type>`.
    pub fn error_kind(&self) -> String {
        let code = self
            .str("/error/code")
            .or_else(|| self.str("/error/type"))
            .unwrap_or("-");
        format!("http {} {code}", self.status)
    }
}

/// A TCP or TLS stream for hyper's pool.
struct Conn(TokioIo<Box<dyn Stream>>);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Opens TCP connections (with `TCP_NODELAY`), wrapped in TLS when configured.
#[derive(Clone)]
struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match tls {
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(host)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                    Box::new(tls.connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            };
            Ok(Conn(TokioIo::new(stream)))
        })
    }
}

/// A Stripe-SDK-like client for one base URL and one secret key. Cheap to clone; clones share
/// the connection pool.
#[derive(Clone)]
pub struct StripeClient {
    http: Client<Connector, Full<Bytes>>,
    base: Arc<str>,
    auth: Arc<str>,
    timeout: Duration,
    max_429_retries: u32,
}

/// The longest Retry-After the client waits before sending a rate-limited request again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

impl StripeClient {
    /// A client for `base_url` (`http://…` or `https://…`; the latter needs `ca_file`), keeping
    /// up to `pool` idle keep-alive connections, giving up on a request after `timeout`.
    pub fn new(
        base_url: &str,
        api_key: &str,
        ca_file: Option<&Path>,
        pool: usize,
        timeout: Duration,
    ) -> Result<StripeClient, ClientSetupError> {
        let base = base_url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| ClientSetupError::BadBaseUrl(base.to_owned()))?;
        if uri.host().is_none() || uri.path().len() > 1 {
            return Err(ClientSetupError::BadBaseUrl(base.to_owned()));
        }
        let tls = match (uri.scheme_str(), ca_file) {
            (Some("http"), _) => None,
            (Some("https"), Some(ca)) => {
                let pem = std::fs::read(ca).map_err(|e| ClientSetupError::CaFile {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?;
                let cfg = pay_net::tls::client_config_with_roots(&pem).map_err(|e| ClientSetupError::CaFile {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?;
                Some(tokio_rustls::TlsConnector::from(cfg))
            }
            (Some("https"), None) => return Err(ClientSetupError::NoCa),
            _ => return Err(ClientSetupError::BadBaseUrl(base.to_owned())),
        };
        let auth = format!("Bearer {api_key}");
        if http::HeaderValue::from_str(&auth).is_err() {
            return Err(ClientSetupError::BadKey);
        }
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(pool)
            .build(Connector { tls });
        Ok(StripeClient {
            http,
            base: base.into(),
            auth: auth.into(),
            timeout,
            max_429_retries: 0,
        })
    }

    /// The same client, sending a request refused with 429 again up to `n` times, each after
    /// the answer's `Retry-After` (seconds; 1 s when absent, at most [`MAX_RETRY_AFTER`]), as
    /// the SDKs' retry logic does. The last 429 is returned when every retry is refused too.
    pub fn with_429_retries(mut self, n: u32) -> StripeClient {
        self.max_429_retries = n;
        self
    }

    /// `POST path` with `form` encoded as `application/x-www-form-urlencoded` (bracketed keys
    /// percent-encoded, as the SDKs send them) and the given `Idempotency-Key`.
    pub async fn post(&self, path: &str, form: &[(&str, &str)], idempotency_key: &str) -> Result<Answer, NetError> {
        let body = Bytes::from(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish(),
        );
        let uri = format!("{}{path}", self.base);
        let mut retries = 0;
        loop {
            let req = Request::builder()
                .method(Method::POST)
                .uri(&uri)
                .header(header::AUTHORIZATION, &*self.auth)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("idempotency-key", idempotency_key)
                .header(header::USER_AGENT, "loadgen/0.1 (Stripe-SDK-like)")
                .body(Full::new(body.clone()))
                .map_err(|_| NetError::Io)?;
            let (answer, retry_after) = self.send_raw(req).await?;
            if answer.status != 429 || retries >= self.max_429_retries {
                return Ok(answer);
            }
            retries += 1;
            tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER)).await;
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, NetError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, &*self.auth)
            .body(Full::new(Bytes::new()))
            .map_err(|_| NetError::Io)?;
        self.send(req).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer, NetError> {
        self.send_raw(req).await.map(|(a, _)| a)
    }

    /// Sends `req`; the answer and its `Retry-After` (whole seconds), if any.
    async fn send_raw(&self, req: Request<Full<Bytes>>) -> Result<(Answer, Option<Duration>), NetError> {
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    NetError::Connect
                } else {
                    NetError::Io
                }
            })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = resp.into_body().collect().await.map_err(|_| NetError::Io)?.to_bytes();
            let json = serde_json::from_slice(&body).map_err(|_| NetError::BadBody)?;
            Ok((Answer { status, json }, retry_after))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        let t = Duration::from_secs(1);
        assert!(StripeClient::new("http://127.0.0.1:4242", "sk", None, 4, t).is_ok());
        assert!(StripeClient::new("http://127.0.0.1:4242/", "sk", None, 4, t).is_ok());
        assert!(matches!(
            StripeClient::new("https://127.0.0.1:4242", "sk", None, 4, t),
            Err(ClientSetupError::NoCa)
        ));
        assert!(matches!(
            StripeClient::new("ftp://x", "sk", None, 4, t),
            Err(ClientSetupError::BadBaseUrl(_))
        ));
        assert!(matches!(
            StripeClient::new("http://x/v1", "sk", None, 4, t),
            Err(ClientSetupError::BadBaseUrl(_))
        ));
        assert!(matches!(
            StripeClient::new("http://x", "sk\nx", None, 4, t),
            Err(ClientSetupError::BadKey)
        ));
    }

    #[test]
    fn error_kinds_name_status_and_code() {
        let a = Answer {
            status: 402,
            json: serde_json::json!({"error": {"type": "card_error", "code": "card_declined"}}),
        };
        assert_eq!(a.error_kind(), "http 402 card_declined");
        let a = Answer {
            status: 500,
            json: serde_json::json!({"error": {"type": "api_error"}}),
        };
        assert_eq!(a.error_kind(), "http 500 api_error");
        let a = Answer {
            status: 502,
            json: serde_json::json!({}),
        };
        assert_eq!(a.error_kind(), "http 502 -");
    }
}
