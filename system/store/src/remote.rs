//! A store served over HTTP: the simulator's `db` host runs [`router`] around a
//! [`MemoryBackend`](crate::memory::MemoryBackend), and services reach it with
//! [`RemoteBackend`], so partitions, loss and crashes of the database are network events
//! exactly as they are for PostgreSQL in production. Not used in production deployments,
//! which speak to PostgreSQL directly.

use crate::model::*;
use crate::Backend;
use async_trait::async_trait;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Path of the single endpoint.
pub const EXECUTE_PATH: &str = "/store/v1/execute";

/// The wire answer: a response or a store error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success.
    Ok(Response),
    /// Failure decided by the store (conflict, invalid, …).
    Err(StoreError),
}

/// Serves `backend` at [`EXECUTE_PATH`].
pub fn router(backend: Arc<dyn Backend>) -> Router {
    Router::new().route(EXECUTE_PATH, post(execute)).with_state(backend)
}

/// Decodes the request with `serde_json` directly (not axum's `Json`, whose error paths cost
/// a tracking deserializer on every call of the simulator's hottest route) and answers JSON.
async fn execute(State(backend): State<Arc<dyn Backend>>, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("malformed store request: {e}"),
            )
                .into_response()
        }
    };
    let reply = match backend.execute(req).await {
        Ok(r) => Reply::Ok(r),
        Err(e) => Reply::Err(e),
    };
    match serde_json::to_vec(&reply) {
        Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode store reply: {e}"),
        )
            .into_response(),
    }
}

/// A backend reached over HTTP.
pub struct RemoteBackend {
    client: ServiceClient,
}

impl RemoteBackend {
    /// A backend that sends every request through `client` (whose base URL is the db host).
    pub fn new(client: ServiceClient) -> RemoteBackend {
        RemoteBackend { client }
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn execute(&self, req: Request) -> Result<Response, StoreError> {
        match self.client.post::<_, Reply>(EXECUTE_PATH, &req).await {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Err(e)) => Err(e),
            Err(CallError::Unreachable { reason, .. }) => Err(StoreError::Unavailable(reason)),
            Err(CallError::Ambiguous { reason, .. }) => Err(StoreError::Ambiguous(reason)),
            Err(CallError::Api(e)) if e.status >= 500 => Err(StoreError::Ambiguous(e.message)),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    fn describe(&self) -> String {
        format!("remote store via {}", self.client.service())
    }
}
