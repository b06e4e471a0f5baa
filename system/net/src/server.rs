//! The HTTP server every service runs: an accept loop over any [`Transport`] listener,
//! optional TLS, HTTP/1.1 with keep-alive, the peer address as a request extension, and
//! graceful shutdown that lets in-flight requests finish.
//!
//! This is our own loop rather than `axum::serve` so that TLS, the peer address and graceful
//! shutdown work the same way over real and simulated transports.
//!
//! [`Transport`]: crate::transport::Transport

use crate::transport::{BoxIo, BoxListener};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The connecting peer's socket address, inserted into every request's extensions. Axum's
/// `ConnectInfo<SocketAddr>` extractor works too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// How a server listens.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS for external listeners; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time allowed for a client to send request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// On shutdown, how long in-flight requests may take before connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (up to `shutdown_grace`) and returns.
pub async fn serve<S>(mut listener: BoxListener, app: Router, opts: ServeOptions, shutdown: S) -> io::Result<()>
where
    S: Future<Output = ()> + Send,
{
    let graceful = GracefulShutdown::new();
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors or a reset before accept: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let opts = opts.clone();
        tokio::spawn(async move {
            let io: BoxIo = match tls {
                None => io,
                Some(acceptor) => match tokio::time::timeout(opts.tls_handshake_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_read_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::trace!(peer = %peer, error = %e, "connection ended with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period elapsed with requests still in flight");
    }
    Ok(())
}
