//! The transport seam: how a service listens and connects.
//!
//! Services never name `tokio::net` or `turmoil::net` directly; they are handed an
//! `Arc<dyn Transport>`. [`TcpTransport`] is the real one; the simulator supplies
//! `SimTransport` (feature `turmoil`), so the bytes that cross the simulated network are exactly
//! the bytes that cross the real one.

use async_trait::async_trait;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (TCP, TLS over TCP, or simulated TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed stream, so one server and one client work over every transport.
pub type BoxIo = Box<dyn Io>;

/// A bound listening socket.
#[async_trait]
pub trait NetListener: Send + 'static {
    /// Waits for the next connection and the peer's address.
    async fn accept(&mut self) -> io::Result<(BoxIo, SocketAddr)>;
    /// The address this listener is bound to (the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A boxed listener.
pub type BoxListener = Box<dyn NetListener>;

/// Where connections come from and go to.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Binds a listener on `addr` (`"0.0.0.0:8080"`, `"127.0.0.1:0"`).
    async fn bind(&self, addr: &str) -> io::Result<BoxListener>;
    /// Opens a connection to `host:port` (a DNS name, an IP, or a simulated host name).
    async fn connect(&self, host: &str, port: u16) -> io::Result<BoxIo>;
}

/// Real TCP through tokio. Connections set `TCP_NODELAY` (request/response traffic).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport;

struct TokioListener(tokio::net::TcpListener);

#[async_trait]
impl NetListener for TokioListener {
    async fn accept(&mut self) -> io::Result<(BoxIo, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Box::new(stream), peer))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn bind(&self, addr: &str) -> io::Result<BoxListener> {
        let l = tokio::net::TcpListener::bind(addr).await?;
        Ok(Box::new(TokioListener(l)))
    }
    async fn connect(&self, host: &str, port: u16) -> io::Result<BoxIo> {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

/// The simulated network of turmoil: host names resolve to simulated hosts, and partitions,
/// latency, loss and crashes apply to every byte.
#[cfg(feature = "turmoil")]
#[derive(Debug, Default, Clone, Copy)]
pub struct SimTransport;

#[cfg(feature = "turmoil")]
struct SimListener(turmoil::net::TcpListener);

#[cfg(feature = "turmoil")]
#[async_trait]
impl NetListener for SimListener {
    async fn accept(&mut self) -> io::Result<(BoxIo, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Box::new(stream), peer))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(feature = "turmoil")]
#[async_trait]
impl Transport for SimTransport {
    async fn bind(&self, addr: &str) -> io::Result<BoxListener> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad bind address `{addr}`: {e}")))?;
        let l = turmoil::net::TcpListener::bind(addr).await?;
        Ok(Box::new(SimListener(l)))
    }
    async fn connect(&self, host: &str, port: u16) -> io::Result<BoxIo> {
        let stream = turmoil::net::TcpStream::connect((host, port)).await?;
        Ok(Box::new(stream))
    }
}
