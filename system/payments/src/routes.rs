//! The payment service's HTTP routes (callable by the API service only).

use crate::service::Payments;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use pay_core::{AccountId, ApiError, ChargeId, PaymentIntentId, RefundId};
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::JsonBody;
use pay_net::{api_error_response, json_response, TokenVerifier};
use pay_proto::payments::*;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Acct {
    account: String,
}

fn account(a: &Acct) -> Result<AccountId, ApiError> {
    AccountId::parse(&a.account)
        .map_err(|_| ApiError::invalid_param("account", "parameter_invalid", "Invalid account."))
}

fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(&v),
        Err(e) => api_error_response(&e),
    }
}

fn pi(id: &str) -> Result<PaymentIntentId, ApiError> {
    PaymentIntentId::parse(id).map_err(|_| ApiError::no_such("payment_intent", "intent", id))
}

async fn create_intent(State(p): State<Arc<Payments>>, JsonBody(req): JsonBody<CreateIntent>) -> Response {
    respond(p.create_intent(req).await)
}

async fn get_intent(State(p): State<Arc<Payments>>, Path(id): Path<String>, Query(a): Query<Acct>) -> Response {
    respond(async { p.get_intent(&account(&a)?, &pi(&id)?).await }.await)
}

async fn update_intent(
    State(p): State<Arc<Payments>>,
    Path(id): Path<String>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<UpdateIntent>,
) -> Response {
    respond(async { p.update_intent(&account(&a)?, &pi(&id)?, req).await }.await)
}

async fn confirm_intent(
    State(p): State<Arc<Payments>>,
    Path(id): Path<String>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<ConfirmIntent>,
) -> Response {
    respond(async { p.confirm_intent(&account(&a)?, &pi(&id)?, req).await }.await)
}

async fn capture_intent(
    State(p): State<Arc<Payments>>,
    Path(id): Path<String>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<CaptureIntent>,
) -> Response {
    respond(async { p.capture_intent(&account(&a)?, &pi(&id)?, req).await }.await)
}

async fn cancel_intent(
    State(p): State<Arc<Payments>>,
    Path(id): Path<String>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<CancelIntent>,
) -> Response {
    respond(async { p.cancel_intent(&account(&a)?, &pi(&id)?, req).await }.await)
}

async fn list_intents(
    State(p): State<Arc<Payments>>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<ListRequest>,
) -> Response {
    respond(async { p.list_intents(&account(&a)?, &req).await }.await)
}

async fn create_refund(State(p): State<Arc<Payments>>, JsonBody(req): JsonBody<CreateRefund>) -> Response {
    respond(p.create_refund(req).await)
}

async fn get_refund(State(p): State<Arc<Payments>>, Path(id): Path<String>, Query(a): Query<Acct>) -> Response {
    respond(
        async {
            let id = RefundId::parse(&id).map_err(|_| ApiError::no_such("refund", "refund", &id))?;
            p.get_refund(&account(&a)?, &id).await
        }
        .await,
    )
}

async fn list_refunds(
    State(p): State<Arc<Payments>>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<ListRequest>,
) -> Response {
    respond(async { p.list_refunds(&account(&a)?, &req).await }.await)
}

async fn get_charge(State(p): State<Arc<Payments>>, Path(id): Path<String>, Query(a): Query<Acct>) -> Response {
    respond(
        async {
            let id = ChargeId::parse(&id).map_err(|_| ApiError::no_such("charge", "charge", &id))?;
            p.get_charge(&account(&a)?, &id).await
        }
        .await,
    )
}

async fn list_charges(
    State(p): State<Arc<Payments>>,
    Query(a): Query<Acct>,
    JsonBody(req): JsonBody<ListRequest>,
) -> Response {
    respond(async { p.list_charges(&account(&a)?, &req).await }.await)
}

/// The payment service's routes; every route requires the API's service identity.
pub fn router(payments: Arc<Payments>, verifier: Arc<TokenVerifier>) -> Router {
    let policy = CallerPolicy {
        verifier,
        allowed: &["api"],
    };
    Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/list", post(list_intents))
        .route("/v1/payment_intents/{id}", get(get_intent).post(update_intent))
        .route("/v1/payment_intents/{id}/confirm", post(confirm_intent))
        .route("/v1/payment_intents/{id}/capture", post(capture_intent))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/refunds/list", post(list_refunds))
        .route("/v1/refunds/{id}", get(get_refund))
        .route("/v1/charges/list", post(list_charges))
        .route("/v1/charges/{id}", get(get_charge))
        .route_layer(axum::middleware::from_fn_with_state(policy, require_caller))
        .with_state(payments)
}
