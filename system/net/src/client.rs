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
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// A pooled HTTP/1.1 client over a transport. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<TransportConnector, Full<Bytes>>,
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
        HttpClient { inner }
    }

    /// Sends `req` and reads the whole response, giving up after `timeout`.
    pub async fn send(&self, req: Request<Full<Bytes>>, timeout: Duration) -> Result<HttpResponse, ClientError> {
        let target = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
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
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    ClientError::TooLarge { target: target.clone() }
                } else {
                    ClientError::Io {
                        target: target.clone(),
                        reason: e.to_string(),
                    }
                }
            })?;
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
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
