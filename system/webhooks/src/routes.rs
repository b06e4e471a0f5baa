//! The webhook service's internal routes: endpoint management for the API service only.

use crate::Webhooks;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use pay_core::ApiError;
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::JsonBody;
use pay_net::{api_error_response, json_response, TokenVerifier};
use pay_proto::webhooks::*;
use std::sync::Arc;

type S = State<Arc<Webhooks>>;

fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(&v),
        Err(e) => api_error_response(&e),
    }
}

async fn create(State(w): S, JsonBody(req): JsonBody<CreateEndpoint>) -> Response {
    respond(w.create_endpoint(req).await)
}

async fn get_one(State(w): S, Path(id): Path<String>, JsonBody(req): JsonBody<EndpointRef>) -> Response {
    respond(w.endpoint(&req.account, &id).await.map(|v| v.value.endpoint))
}

async fn update(State(w): S, Path(id): Path<String>, JsonBody(req): JsonBody<UpdateEndpoint>) -> Response {
    respond(w.update_endpoint(&id, req).await)
}

async fn delete(State(w): S, Path(id): Path<String>, JsonBody(req): JsonBody<EndpointRef>) -> Response {
    respond(w.delete_endpoint(&req.account, &id).await)
}

async fn list(State(w): S, JsonBody(req): JsonBody<ListEndpoints>) -> Response {
    respond(w.list_endpoints(req).await)
}

async fn roll(State(w): S, Path(id): Path<String>, JsonBody(req): JsonBody<RollSecret>) -> Response {
    respond(w.roll_secret(&id, req).await)
}

async fn resend(State(w): S, Path(id): Path<String>, JsonBody(req): JsonBody<ResendEvent>) -> Response {
    respond(w.resend(&id, req).await)
}

/// The routes, callable by the `api` service only.
pub fn router(w: Arc<Webhooks>, verifier: Arc<TokenVerifier>) -> Router {
    let from_api = CallerPolicy {
        verifier,
        allowed: &["api"],
    };
    Router::new()
        .route("/v1/endpoints", post(create))
        .route("/v1/endpoints/list", post(list))
        .route("/v1/endpoints/{id}", post(update))
        .route("/v1/endpoints/{id}/get", post(get_one))
        .route("/v1/endpoints/{id}/delete", post(delete))
        .route("/v1/endpoints/{id}/roll_secret", post(roll))
        .route("/v1/endpoints/{id}/resend", post(resend))
        .route_layer(axum::middleware::from_fn_with_state(from_api, require_caller))
        .with_state(w)
}
