//! One case of the WAF corpus (`tests/corpus`, a copy of `shared/waf-corpus`, or the directory
//! `WAF_CORPUS_DIR` names) and the request it stands for. `tests/corpus.rs` and the `explain` and
//! `traffic` examples include this file by path, so all three send a case the same way.
#![allow(dead_code)] // each file that includes this uses its own part of it

use pay_waf::HttpRequest;

/// The fields of one corpus line.
pub struct Case {
    /// The case's id (`942100-1`, `api-17`, …).
    pub id: String,
    /// `attack` or `benign`.
    pub kind: String,
    /// Whether the case is an attack the rule `id` names should catch.
    pub attack: bool,
    /// The rule family (`sqli`, `xss`, …).
    pub family: String,
    /// The CRS paranoia level of the rule.
    pub paranoia: u8,
    /// Method, request target, HTTP version, headers and body, as the case gives them.
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The corpus file `name` (`crs-cases.jsonl`, `payment-api-benign.jsonl`), one case per line.
/// Panics on a line that is not a JSON object: the corpus is part of the test.
pub fn load(name: &str) -> Vec<Case> {
    let dir =
        std::env::var("WAF_CORPUS_DIR").unwrap_or_else(|_| format!("{}/tests/corpus", env!("CARGO_MANIFEST_DIR")));
    load_path(&format!("{dir}/{name}"))
}

/// The cases of the JSON-lines file at `path`, in the corpus's form (the crate's own traffic
/// files, `tests/traffic`, which `WAF_CORPUS_DIR` does not move).
pub fn load_path(path: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("corpus line is JSON");
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            Case {
                id: s("id"),
                kind: s("kind"),
                attack: v["kind"] == "attack",
                family: s("family"),
                paranoia: v["paranoia"].as_u64().unwrap_or(1) as u8,
                method: s("method"),
                uri: s("uri"),
                version: if s("version").is_empty() {
                    "HTTP/1.1".into()
                } else {
                    s("version")
                },
                headers: v["headers"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, x)| {
                                (
                                    k.clone(),
                                    x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                body: s("body"),
            }
        })
        .collect()
}

impl Case {
    /// The headers the case is sent with: the way an HTTP client (and the CRS test runner,
    /// go-ftw) sends it, a body goes with its Content-Length, and with the form content type
    /// when the case names none.
    pub fn sent_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        let has = |h: &[(String, String)], n: &str| h.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let sends_body = !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if sends_body && !has(&headers, "content-length") && !has(&headers, "transfer-encoding") {
            headers.push(("Content-Length".into(), self.body.len().to_string()));
        }
        if !self.body.is_empty() && !has(&headers, "content-type") {
            headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
        }
        headers
    }

    /// Calls `f` with the request the case stands for, headers from [`Case::sent_headers`].
    pub fn with_request<T>(&self, f: impl FnOnce(&HttpRequest<'_>) -> T) -> T {
        let headers = self.sent_headers();
        self.with_headers(&headers, f)
    }

    /// Calls `f` with the case's request carrying `headers` (from [`Case::sent_headers`], kept
    /// by a caller that sends the case many times).
    pub fn with_headers<T>(&self, headers: &[(String, String)], f: impl FnOnce(&HttpRequest<'_>) -> T) -> T {
        let req = HttpRequest {
            method: &self.method,
            target: &self.uri,
            version: &self.version,
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect(),
            body: self.body.as_bytes(),
        };
        f(&req)
    }
}
