//! Native protocol checks: size limits and request-smuggling patterns that depend on the
//! engine's own policy rather than on a rule expression. Ids are in the CRS protocol range
//! (920 9xx is unused by the Core Rule Set).

use crate::config::WafConfig;
use crate::engine::RuleMatch;
use crate::request::{BodyKind, Coll, HttpRequest, Parsed};
use crate::rules::Severity;

/// Request target longer than `limits.max_uri_len`.
pub const URI_TOO_LONG: u32 = 920_901;
/// A header value longer than `limits.max_header_len`.
pub const HEADER_TOO_LONG: u32 = 920_902;
/// Headers larger than `limits.max_headers_total` or more than `limits.max_header_count`.
pub const HEADERS_TOO_LARGE: u32 = 920_903;
/// Body larger than `limits.max_body`.
pub const BODY_TOO_LARGE: u32 = 920_904;
/// `Transfer-Encoding` other than a plain `chunked` (smuggling: `chunked, identity`,
/// `xchunked`, repeated headers).
pub const BAD_TRANSFER_ENCODING: u32 = 920_905;
/// More than one `Content-Length`, or one that disagrees with the body.
pub const CONFLICTING_CONTENT_LENGTH: u32 = 920_906;
/// Both `Content-Length` and `Transfer-Encoding`.
pub const CL_AND_TE: u32 = 920_907;
/// A body that does not parse as its declared JSON or multipart type.
pub const BODY_PARSE_ERROR: u32 = 920_908;
/// Invalid `%` escapes in the request target.
pub const INVALID_URL_ENCODING: u32 = 920_909;

fn m(id: u32, severity: Severity, target: &str) -> RuleMatch {
    RuleMatch {
        rule_id: id,
        family: "protocol",
        severity,
        score: severity.score(),
        target: target.to_owned(),
    }
}

fn bad_percent(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if !(s.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)) {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// The native checks over a request.
pub fn check(req: &HttpRequest<'_>, parsed: &Parsed, config: &WafConfig) -> Vec<RuleMatch> {
    let l = &config.limits;
    let mut out = Vec::new();
    if req.target.len() > l.max_uri_len {
        out.push(m(URI_TOO_LONG, Severity::Critical, "REQUEST_URI"));
    }
    let mut total = 0usize;
    for (n, v) in &req.headers {
        total += n.len() + v.len();
        if v.len() > l.max_header_len {
            out.push(m(HEADER_TOO_LONG, Severity::Critical, &format!("REQUEST_HEADERS:{n}")));
            break;
        }
    }
    if total > l.max_headers_total || req.headers.len() > l.max_header_count {
        out.push(m(HEADERS_TOO_LARGE, Severity::Critical, "REQUEST_HEADERS"));
    }
    if req.body.len() > l.max_body {
        out.push(m(BODY_TOO_LARGE, Severity::Critical, "REQUEST_BODY"));
    }
    let te: Vec<&[u8]> = parsed
        .coll(Coll::Headers)
        .iter()
        .filter(|i| parsed.name(i) == b"transfer-encoding")
        .map(|i| parsed.value(i))
        .collect();
    let cl: Vec<&[u8]> = parsed
        .coll(Coll::Headers)
        .iter()
        .filter(|i| parsed.name(i) == b"content-length")
        .map(|i| parsed.value(i))
        .collect();
    if te.len() > 1 || te.iter().any(|v| !v.trim_ascii().eq_ignore_ascii_case(b"chunked")) {
        out.push(m(
            BAD_TRANSFER_ENCODING,
            Severity::Critical,
            "REQUEST_HEADERS:Transfer-Encoding",
        ));
    }
    if cl.len() > 1 || cl.iter().any(|v| v.contains(&b',')) {
        out.push(m(
            CONFLICTING_CONTENT_LENGTH,
            Severity::Critical,
            "REQUEST_HEADERS:Content-Length",
        ));
    } else if let Some(v) = cl.first() {
        let declared = std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<usize>().ok());
        if te.is_empty() && !req.body.is_empty() && declared.is_some_and(|d| d != req.body.len()) {
            out.push(m(
                CONFLICTING_CONTENT_LENGTH,
                Severity::Critical,
                "REQUEST_HEADERS:Content-Length",
            ));
        }
    }
    if !te.is_empty() && !cl.is_empty() {
        out.push(m(CL_AND_TE, Severity::Critical, "REQUEST_HEADERS:Transfer-Encoding"));
    }
    if parsed.body_error && matches!(parsed.body_kind, BodyKind::Json | BodyKind::Multipart) {
        out.push(m(BODY_PARSE_ERROR, Severity::Critical, "REQUEST_BODY"));
    }
    if bad_percent(req.target.as_bytes()) {
        out.push(m(INVALID_URL_ENCODING, Severity::Warning, "REQUEST_URI"));
    }
    out
}
