//! Networking for every service: the [`Transport`] seam (real TCP, or turmoil's simulated
//! network with feature `turmoil`), the HTTP server loop, the pooled HTTP client, typed JSON
//! calls between services, internal service authentication with P-256 signed tokens, TLS for
//! external listeners, and the shared error-to-response mapping.

#![warn(missing_docs)]

pub mod body;
pub mod client;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod respond;
pub mod rpc;
pub mod server;
pub mod tls;
pub mod transport;

pub use body::JsonBody;
pub use client::{ClientError, HttpClient, HttpResponse, InProcessRoutes};
pub use identity::{Caller, CallerPolicy, ServiceDirectory, ServiceKey, TokenIssuer, TokenVerifier};
pub use respond::{api_error_response, json_response, ApiFailure, ApiResult};
pub use rpc::{CallError, ServiceClient};
pub use server::{serve, PeerAddr, ServeOptions};
pub use transport::{BoxIo, BoxListener, NetListener, TcpTransport, Transport};

#[cfg(feature = "turmoil")]
pub use transport::SimTransport;
