//! The HTTP client every service uses to call another: pooled keep-alive HTTP/1.1 connections
//! over any [`Transport`], per-call timeouts, and errors that say whether the request may have
//! reached the server (which decides whether a retry could apply an operation twice).
//!
//! [`Transport`]: crate::transport::Transport

use crate::transport::{BoxIo, Transport};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceExt;

/// Largest response body the client reads (internal answers are small; lists are paginated).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why a request produced no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: the request was certainly not sent.
    #[error("connect to {target} failed: {reason}")]
    Connect {
        /// `host:port`.
        target: String,
        /// The underlying error text.
        reason: String,
    },
    /// The request was (or may have been) sent but no complete answer came back in time.
    #[error("no answer from {target} within {timeout:?}")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The connection failed after the request may have been sent.
    #[error("request to {target} failed: {reason}")]
    Io {
        /// `host:port`.
        target: String,
        /// The underlying error text.
        reason: String,
    },
    /// The response body exceeded [`MAX_RESPONSE_BYTES`].
    #[error("response from {target} too large")]
    TooLarge {
        /// `host:port`.
        target: String,
    },
    /// The URL could not be used.
    #[error("invalid URL: {0}")]
    BadUrl(String),
}

impl ClientError {
    /// True when the server may have received and applied the request.
    pub fn is_ambiguous(&self) -> bool {
        !matches!(self, ClientError::Connect { .. } | ClientError::BadUrl(_))
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A stream from the transport, wrapped for hyper.
pub struct ClientIo(TokioIo<BoxIo>);

impl Connection for ClientIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ClientIo {
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

/// Opens connections through a [`Transport`] for hyper's pool.
#[derive(Clone)]
pub struct TransportConnector {
    transport: Arc<dyn Transport>,
    connect_timeout: Duration,
}

impl tower::Service<Uri> for TransportConnector {
    type Response = ClientIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ClientIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let transport = self.transport.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            match tokio::time::timeout(timeout, transport.connect(&host, port)).await {
                Ok(Ok(io)) => Ok(ClientIo(TokioIo::new(io))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}

/// The routers of services hosted in this process, by the authority (`host:port`) they are
/// addressed at. Cheap to clone; clones share the table.
#[derive(Clone, Default)]
pub struct InProcessRoutes {
    routes: Arc<RwLock<HashMap<String, axum::Router>>>,
}

/// The peer address an in-process request carries: what a loopback connection would show.
const IN_PROCESS_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl InProcessRoutes {
    /// An empty table.
    pub fn new() -> InProcessRoutes {
        InProcessRoutes::default()
    }

    /// Serves requests for `base_url`'s authority (`http://127.0.0.1:7102` →
    /// `127.0.0.1:7102`) with `router` from now on. Returns false (and registers nothing)
    /// when the URL has no authority.
    pub fn insert(&self, base_url: &str, router: axum::Router) -> bool {
        let Some(authority) = base_url
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        else {
            return false;
        };
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.insert(authority, router);
        true
    }

    /// How many services are registered.
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no service is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, authority: &str) -> Option<axum::Router> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(authority)
            .cloned()
    }
}

/// A pooled HTTP/1.1 client over a transport. Cheap to clone; clones share the pool (and the
/// in-process routes, if any).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<TransportConnector, Full<Bytes>>,
    in_process: Option<InProcessRoutes>,
}

impl HttpClient {
    /// A client whose connections go through `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> HttpClient {
        let connector = TransportConnector {
            transport,
            connect_timeout: Duration::from_secs(5),
        };
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        HttpClient {
            inner,
            in_process: None,
        }
    }

    /// The same client, sending requests for services registered in `routes` to their
    /// routers in this process instead of over the transport.
    pub fn with_in_process(mut self, routes: InProcessRoutes) -> HttpClient {
        self.in_process = Some(routes);
        self
    }

    /// The in-process routes this client dispatches to, if it has any.
    pub fn in_process(&self) -> Option<&InProcessRoutes> {
        self.in_process.as_ref()
    }

    /// Sends `req` and reads the whole response, giving up after `timeout`.
    pub async fn send(&self, req: Request<Full<Bytes>>, timeout: Duration) -> Result<HttpResponse, ClientError> {
        let target = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        if let Some(router) = self.in_process.as_ref().and_then(|r| r.get(&target)) {
            return send_in_process(router, req, target, timeout).await;
        }
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                let reason = error_chain(&e);
                if e.is_connect() {
                    ClientError::Connect {
                        target: target.clone(),
                        reason,
                    }
                } else {
                    ClientError::Io {
                        target: target.clone(),
                        reason,
                    }
                }
            })?;
            read_response(resp, &target).await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { target, timeout }),
        }
    }

    /// Convenience: a request with a method, URL, headers and body.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<HttpResponse, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::BadUrl(e.to_string()))?;
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| ClientError::BadUrl(e.to_string()))?;
        self.send(req, timeout).await
    }
}

/// Hands `req` to `router` as a server connection would: origin-form URI, `Host` and
/// `Content-Length` headers as the wire would carry them, and a loopback peer address. The
/// request runs in its own task, so that, as with a server, a caller that gives up (timeout)
/// does not cancel the handler half-way.
async fn send_in_process(
    router: axum::Router,
    req: Request<Full<Bytes>>,
    target: String,
    timeout: Duration,
) -> Result<HttpResponse, ClientError> {
    let (mut parts, body) = req.into_parts();
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
    if !parts.headers.contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::from_str(&target) {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    let body: Bytes = body.into_inner().unwrap_or_default();
    if !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && (!body.is_empty() || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH))
    {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    }
    let mut req = Request::from_parts(parts, axum::body::Body::from(body));
    req.extensions_mut().insert(crate::server::PeerAddr(IN_PROCESS_PEER));
    req.extensions_mut().insert(axum::extract::ConnectInfo(IN_PROCESS_PEER));
    let task_target = target.clone();
    let handle = tokio::spawn(async move {
        let resp = match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        read_response(resp, &task_target).await
    });
    match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(r)) => r,
        // The handler panicked: like a server whose connection dropped mid-request.
        Ok(Err(e)) => Err(ClientError::Io {
            target,
            reason: format!("in-process handler failed: {e}"),
        }),
        Err(_) => Err(ClientError::Timeout { target, timeout }),
    }
}

/// Reads the whole of `resp`'s body, at most [`MAX_RESPONSE_BYTES`], from `target`.
async fn read_response<B>(resp: http::Response<B>, target: &str) -> Result<HttpResponse, ClientError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ClientError::TooLarge {
                target: target.to_owned(),
            }
        } else {
            ClientError::Io {
                target: target.to_owned(),
                reason: e.to_string(),
            }
        }
    })?;
    Ok(HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.to_bytes(),
    })
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
