//! Reading the JSON body of an internal service request.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A request's JSON body, read as a `T`: what `axum::Json` extracts, with the very rejection
/// (status and message) it gives for a body that is not JSON or not a `T`.
///
/// It differs in cost only. `axum::Json` reads every body through `serde_path_to_error`, which
/// copies each object key it meets into a path kept in case an error needs it; on the services'
/// routes that bookkeeping was about 2 % of paymentd's instructions per payment
/// (docs/performance.md). This reads the body with `serde_json` alone and, only when that fails,
/// reads it again through `axum::Json` for the message that names the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            // axum's own refusal, word for word.
            return axum::Json::<T>::from_request(req, state)
                .await
                .map(|axum::Json(value)| JsonBody(value));
        }
        let bytes = Bytes::from_request(req, state).await?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(JsonBody(value)),
            Err(_) => axum::Json::<T>::from_bytes(&bytes).map(|axum::Json(value)| JsonBody(value)),
        }
    }
}

/// Whether the request says its body is JSON, by the test `axum::Json` applies:
/// `application/json`, or any `application/…+json`, with or without parameters.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(mime) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    mime.type_() == "application" && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::response::IntoResponse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        id: String,
        items: Vec<Inner>,
        #[serde(default)]
        note: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        amount: i64,
    }

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut b = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body.to_owned())).expect("request builds")
    }

    /// What the client sees of a rejection: its status and body text.
    async fn seen(rejection: JsonRejection) -> (u16, String) {
        let resp = rejection.into_response();
        let status = resp.status().as_u16();
        let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body reads");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn reads_what_axum_json_reads() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
        ] {
            let body = r#"{"id":"pi_1","items":[{"amount":5},{"amount":-7}],"note":"caf\u00e9 \"x\""}"#;
            let JsonBody(ours) = JsonBody::<Outer>::from_request(request(Some(ct), body), &())
                .await
                .expect("a good body is read");
            let axum::Json(theirs) = axum::Json::<Outer>::from_request(request(Some(ct), body), &())
                .await
                .expect("axum reads it too");
            assert_eq!(ours, theirs);
            assert_eq!(ours.items[1].amount, -7);
            assert_eq!(ours.note.as_deref(), Some("café \"x\""));
        }
    }

    #[tokio::test]
    async fn refuses_a_bad_body_exactly_as_axum_json_does() {
        let cases: [(Option<&str>, &str); 9] = [
            (None, r#"{"id":"a","items":[]}"#),
            (Some("text/json"), r#"{"id":"a","items":[]}"#),
            (Some("application/json"), ""),
            (Some("application/json"), r#"{"id":"a","items":["#),
            (Some("application/json"), r#"{"id":"a","items":[]} x"#),
            (Some("application/json"), r#"{"id":"a","items":[{"amount":"5"}]}"#),
            (Some("application/json"), r#"{"id":"a","items":[{"amount":1},{}]}"#),
            (Some("application/json"), r#"{"items":[]}"#),
            (Some("application/json"), r#"[1,2]"#),
        ];
        for (ct, body) in cases {
            let ours = JsonBody::<Outer>::from_request(request(ct, body), &())
                .await
                .expect_err("a bad body is refused");
            let theirs = axum::Json::<Outer>::from_request(request(ct, body), &())
                .await
                .expect_err("axum refuses it too");
            let (ours, theirs) = (seen(ours).await, seen(theirs).await);
            assert_eq!(ours, theirs, "content type {ct:?}, body {body:?}");
            assert!(ours.0 >= 400, "{ours:?}");
        }
        // The message names the field, as axum's does: the point of reading a bad body again.
        let bad = JsonBody::<Outer>::from_request(
            request(Some("application/json"), r#"{"id":"a","items":[{"amount":"5"}]}"#),
            &(),
        )
        .await
        .expect_err("refused");
        let (status, text) = seen(bad).await;
        assert_eq!(status, 422);
        assert!(text.contains("items[0].amount"), "{text}");
    }
}
