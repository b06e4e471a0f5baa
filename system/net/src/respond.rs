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

/// At most this much of a refused oversized body is read on (see [`read_limited`]).
pub const DRAIN_BYTES: usize = 8 * 1024 * 1024;

/// For at most this long (see [`read_limited`]).
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Why [`read_limited`] refused a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    /// Longer than the limit.
    #[error("request body over the limit")]
    TooLarge,
    /// The client's connection failed while sending it.
    #[error("request body not received")]
    Broken,
}

/// Reads a request body of at most `limit` bytes.
///
/// A longer body is read on and dropped (up to [`DRAIN_BYTES`] in all, within [`DRAIN_TIME`])
/// before the caller answers 413 and closes the connection: closed while the client was still
/// sending, the client would hit a broken pipe and never read the answer (hyper's client
/// reports the write error), as a lingering close avoids in other servers.
pub async fn read_limited(mut body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, BodyRefused> {
    use http_body_util::BodyExt;
    let mut parts: Vec<bytes::Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => return Err(BodyRefused::Broken),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                len += data.len();
                if len > limit {
                    let _ = tokio::time::timeout(DRAIN_TIME, async {
                        while len < DRAIN_BYTES {
                            match body.frame().await {
                                Some(Ok(frame)) => len += frame.into_data().map_or(0, |d| d.len()),
                                _ => break,
                            }
                        }
                    })
                    .await;
                    return Err(BodyRefused::TooLarge);
                }
                parts.push(data);
            }
        }
    }
    Ok(match parts.len() {
        0 => bytes::Bytes::new(),
        1 => parts.swap_remove(0),
        _ => parts.concat().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A body of `chunks` chunks of `size` bytes that counts the chunks read from it.
    fn counted(chunks: usize, size: usize) -> (axum::body::Body, Arc<AtomicUsize>) {
        let read = Arc::new(AtomicUsize::new(0));
        let seen = read.clone();
        let stream = futures::stream::iter((0..chunks).map(move |i| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a' + (i % 26) as u8; size]))
        }));
        (axum::body::Body::from_stream(stream), read)
    }

    #[tokio::test]
    async fn bodies_within_the_limit_come_back_whole() {
        for (chunks, size) in [(0, 0), (1, 10), (3, 7), (4, 256)] {
            let (body, _) = counted(chunks, size);
            let got = read_limited(body, 1024).await.unwrap();
            let want: Vec<u8> = (0..chunks).flat_map(|i| vec![b'a' + (i % 26) as u8; size]).collect();
            assert_eq!(got.as_ref(), want.as_slice(), "{chunks} x {size}");
        }
    }

    /// A body over the limit is refused, and read to its end (within the drain's bounds) so
    /// that a client still sending it can finish and read the 413; one beyond those bounds is
    /// read only to them.
    #[tokio::test]
    async fn oversized_bodies_are_refused_and_drained() {
        let (body, read) = counted(64, 32 * 1024);
        assert_eq!(read_limited(body, 256 * 1024).await, Err(BodyRefused::TooLarge));
        assert_eq!(read.load(Ordering::SeqCst), 64, "the whole 2 MiB body is read");
        let (body, read) = counted(1024, 64 * 1024);
        assert_eq!(read_limited(body, 1024).await, Err(BodyRefused::TooLarge));
        assert_eq!(
            read.load(Ordering::SeqCst),
            DRAIN_BYTES / (64 * 1024),
            "reading stops at DRAIN_BYTES"
        );
        let (body, _) = counted(2, 512);
        assert_eq!(
            read_limited(body, 1024).await.map(|b| b.len()),
            Ok(1024),
            "exactly the limit is taken"
        );
    }
}
