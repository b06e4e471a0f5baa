//! Turning results into HTTP responses the same way in every service.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pay_core::ApiError;
use serde::Serialize;

/// A JSON response with status 200.
pub fn json_response<T: Serialize>(value: &T) -> Response {
    json_with_status(StatusCode::OK, value)
}

/// A JSON response with the given status.
pub fn json_with_status<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(_) => api_error_response(&ApiError::internal("Failed to render the response.")),
    }
}

/// The Stripe-shaped error body with its status and, for 429/503, `Retry-After`.
pub fn api_error_response(err: &ApiError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&err.envelope())
        .unwrap_or_else(|_| b"{\"error\":{\"type\":\"api_error\",\"message\":\"error\"}}".to_vec());
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    if let Some(secs) = err.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// An [`ApiError`] that axum handlers can return directly.
#[derive(Debug)]
pub struct ApiFailure(pub ApiError);

impl From<ApiError> for ApiFailure {
    fn from(e: ApiError) -> Self {
        ApiFailure(e)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        api_error_response(&self.0)
    }
}

/// The result type of handlers: a JSON value or a Stripe-shaped error.
pub type ApiResult<T> = Result<axum::Json<T>, ApiFailure>;
