//! The inspection engine: runs the rule table and the native protocol checks over a parsed
//! request and sums an anomaly score, as the Core Rule Set does.

use crate::config::{glob, WafConfig};
use crate::protocol;
use crate::request::{BodyKind, Coll, HttpRequest, Item, Parsed};
use crate::rules::{family, Cmp, Key, Link, Op, Rule, RuleError, RuleSet, Sel, Severity, Src};
use std::collections::BTreeMap;

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleMatch {
    /// Rule id.
    pub rule_id: u32,
    /// Rule family (`sqli`, `xss`, `protocol`, ...).
    pub family: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// What it added to the anomaly score (the severity's score unless tuned).
    pub score: u32,
    /// What matched, as `COLLECTION:name` (never the value: it may hold a card number).
    pub target: String,
}

/// The outcome of an inspection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Sum of the severities of the matches.
    pub score: u32,
    /// The score reached the threshold and the engine is not in detect-only mode.
    pub blocked: bool,
    /// The score reached the threshold (also in detect-only mode).
    pub over_threshold: bool,
    /// Every match, in evaluation order.
    pub matches: Vec<RuleMatch>,
}

impl Verdict {
    /// The id to report for a block: the first match of the highest severity.
    pub fn rule_id(&self) -> Option<u32> {
        let top = self.matches.iter().map(|m| m.score).max()?;
        self.matches.iter().find(|m| m.score == top).map(|m| m.rule_id)
    }
}

/// The inspection engine. Build it once ([`Waf::new`] compiles every expression) and share
/// it: [`Waf::inspect`] takes `&self` and allocates only per request.
#[derive(Debug)]
pub struct Waf {
    rules: RuleSet,
    config: WafConfig,
    tx: BTreeMap<String, Vec<u8>>,
    disabled: Vec<u32>,
}

/// A value under evaluation: an item of the request or a computed one.
struct Val<'v> {
    coll: Option<Coll>,
    item: Option<usize>,
    name: &'v [u8],
    value: &'v [u8],
}

/// A matched value: its name and transformed value.
#[derive(Clone)]
struct Hit {
    coll: Option<Coll>,
    name: Vec<u8>,
    value: Vec<u8>,
}

const EMPTY: u32 = u32::MAX;

struct CacheEntry {
    value: Option<Vec<u8>>,
    hits: Option<Vec<u32>>,
}

struct Eval<'a> {
    waf: &'a Waf,
    p: &'a Parsed,
    tx: BTreeMap<String, Vec<u8>>,
    slots: Vec<u32>,
    entries: Vec<CacheEntry>,
    /// Per item: the exclusion rule patterns that apply (empty: none; `["*"]`: all).
    excluded: Vec<Vec<&'a str>>,
}

impl Waf {
    /// An engine with the shipped Core Rule Set table and `config`.
    pub fn new(config: WafConfig) -> Result<Waf, RuleError> {
        Ok(Waf::with_rules(RuleSet::crs()?, config))
    }

    /// An engine with a given rule table.
    pub fn with_rules(rules: RuleSet, config: WafConfig) -> Waf {
        let mut tx: BTreeMap<String, Vec<u8>> = rules
            .tx_defaults
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        let l = &config.limits;
        let mut set = |k: &str, v: String| {
            tx.insert(k.to_owned(), v.into_bytes());
        };
        set("allowed_methods", config.allowed_methods.join(" "));
        set(
            "allowed_request_content_type",
            config
                .allowed_content_types
                .iter()
                .map(|c| format!("|{}|", c.to_ascii_lowercase()))
                .collect::<Vec<_>>()
                .join(" "),
        );
        set("max_num_args", l.max_args.to_string());
        set("arg_name_length", l.max_arg_name_len.to_string());
        set("arg_length", l.max_arg_len.to_string());
        set("total_arg_length", l.max_body.to_string());
        set("detection_paranoia_level", config.paranoia.to_string());
        Waf {
            disabled: config.disabled_rules.clone(),
            rules,
            config,
            tx,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WafConfig {
        &self.config
    }

    /// The compiled rule table.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Inspects a request.
    pub fn inspect(&self, req: &HttpRequest<'_>) -> Verdict {
        let parsed = Parsed::new(req);
        self.inspect_parsed(req, &parsed)
    }

    /// Inspects a request already broken into collections.
    pub fn inspect_parsed(&self, req: &HttpRequest<'_>, parsed: &Parsed) -> Verdict {
        let mut matches = protocol::check(req, parsed, &self.config);
        matches.retain(|m| !self.disabled.contains(&m.rule_id));
        for m in &mut matches {
            if let Some(s) = self.config.rule_scores.get(&m.rule_id) {
                m.score = *s;
            }
        }
        let npipes = self.rules.pipelines.len();
        let mut ev = Eval {
            waf: self,
            p: parsed,
            tx: self.tx.clone(),
            slots: vec![EMPTY; parsed.items.len() * npipes],
            entries: Vec::new(),
            excluded: self.exclusions_for(req, parsed),
        };
        // One transformation and one set scan per (value, pipeline): which set patterns
        // matched anything at all. A rule gated on a pattern nothing matched is skipped.
        let mut any_hit: Vec<Vec<bool>> = Vec::with_capacity(npipes);
        for (p, set) in self.rules.sets.iter().enumerate() {
            let Some(set) = set else {
                any_hit.push(Vec::new());
                continue;
            };
            let mut seen = vec![false; set.len()];
            for &c in &self.rules.pipeline_colls[p] {
                let start = parsed.items.partition_point(|i| i.coll < c);
                for k in 0..parsed.coll(c).len() {
                    let e = ev.entry(start + k, p);
                    for &h in ev.set_hits(e, start + k, p) {
                        seen[h as usize] = true;
                    }
                }
            }
            any_hit.push(seen);
        }
        for rule in &self.rules.rules {
            if rule.paranoia > self.config.paranoia || self.disabled.contains(&rule.id) {
                continue;
            }
            if let Some((p, si)) = rule.gate {
                if self.rules.sets[p].is_some() && !any_hit[p].get(si).copied().unwrap_or(false) {
                    continue;
                }
            }
            if let Some(hit) = ev.rule(rule) {
                if let Some(sev) = rule.severity {
                    matches.push(RuleMatch {
                        rule_id: rule.id,
                        family: family(rule.id),
                        severity: sev,
                        score: self.config.rule_scores.get(&rule.id).copied().unwrap_or(sev.score()),
                        target: hit,
                    });
                }
            }
        }
        let score = matches.iter().map(|m| m.score).sum::<u32>();
        let over = score >= self.config.threshold;
        Verdict {
            score,
            blocked: over && !self.config.detect_only,
            over_threshold: over,
            matches,
        }
    }

    fn exclusions_for<'a>(&'a self, req: &HttpRequest<'_>, parsed: &Parsed) -> Vec<Vec<&'a str>> {
        let mut out = vec![Vec::new(); parsed.items.len()];
        for ex in &self.config.exclusions {
            if !glob(ex.path.as_bytes(), parsed.path.as_bytes()) {
                continue;
            }
            if !ex.methods.is_empty() && !ex.methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)) {
                continue;
            }
            for (i, item) in parsed.items.iter().enumerate() {
                if !matches!(
                    item.coll,
                    Coll::ArgsGet | Coll::ArgsPost | Coll::ArgsGetNames | Coll::ArgsPostNames
                ) {
                    continue;
                }
                if ex.fields.iter().any(|f| glob(f.as_bytes(), &item.name)) {
                    if ex.rules.is_empty() {
                        out[i].push("*");
                    } else {
                        out[i].extend(ex.rules.iter().map(String::as_str));
                    }
                }
            }
        }
        out
    }
}

fn coll_name(c: Option<Coll>) -> &'static str {
    match c {
        Some(Coll::ArgsGet | Coll::ArgsPost) => "ARGS",
        Some(Coll::ArgsGetNames | Coll::ArgsPostNames) => "ARGS_NAMES",
        Some(Coll::Cookies) => "REQUEST_COOKIES",
        Some(Coll::CookiesNames) => "REQUEST_COOKIES_NAMES",
        Some(Coll::Headers) => "REQUEST_HEADERS",
        Some(Coll::HeadersNames) => "REQUEST_HEADERS_NAMES",
        Some(Coll::Filename) => "REQUEST_FILENAME",
        Some(Coll::Basename) => "REQUEST_BASENAME",
        Some(Coll::Uri) => "REQUEST_URI",
        Some(Coll::Line) => "REQUEST_LINE",
        Some(Coll::QueryString) => "QUERY_STRING",
        Some(Coll::Body) => "REQUEST_BODY",
        Some(Coll::Xml) => "XML",
        Some(Coll::Files) => "FILES",
        Some(Coll::FilesNames) => "FILES_NAMES",
        Some(Coll::Method) => "REQUEST_METHOD",
        Some(Coll::Protocol) => "REQUEST_PROTOCOL",
        Some(Coll::MultipartPartHeaders) => "MULTIPART_PART_HEADERS",
        None => "TX",
    }
}

fn key_matches(key: &Key, name: &[u8]) -> bool {
    match key {
        Key::All => true,
        Key::Name(n) => n.eq_ignore_ascii_case(name),
        Key::Regex(r) => r.is_match(name),
    }
}

fn sel_covers(sel: &Sel, coll: Coll, name: &[u8]) -> bool {
    match &sel.src {
        Src::Colls(cs) => cs.contains(&coll) && key_matches(&sel.key, name),
        _ => false,
    }
}

fn parse_num(v: &[u8]) -> i64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

fn valid_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let ok = v.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn guarded(f: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    // libinjection is a port of C code; a panic on odd input must not take the proxy down.
    std::panic::catch_unwind(f).unwrap_or(false)
}

impl<'a> Eval<'a> {
    /// Runs one rule; on a match, the name of what matched.
    fn rule(&mut self, rule: &'a Rule) -> Option<String> {
        let mut prev: Vec<Hit> = Vec::new();
        let mut first: Option<String> = None;
        for link in &rule.links {
            let hits = self.link(rule, link, &prev);
            if hits.is_empty() {
                return None;
            }
            if first.is_none() {
                let h = &hits[0];
                first = Some(if h.name.is_empty() {
                    coll_name(h.coll).to_owned()
                } else {
                    format!("{}:{}", coll_name(h.coll), String::from_utf8_lossy(&h.name))
                });
            }
            prev = hits;
        }
        first
    }

    fn excluded(&self, rule: &Rule, item: usize) -> bool {
        self.excluded.get(item).is_some_and(|pats| {
            pats.iter().any(|p| {
                *p == "*" || (*p == "PL2" && rule.paranoia >= 2) || glob(p.as_bytes(), rule.id_text.as_bytes())
            })
        })
    }

    fn link(&mut self, rule: &'a Rule, link: &'a Link, prev: &[Hit]) -> Vec<Hit> {
        let mut hits = Vec::new();
        for sel in &link.targets {
            if sel.count {
                let n = self.count(sel, prev);
                let s = n.to_string();
                let v = Val {
                    coll: None,
                    item: None,
                    name: b"",
                    value: s.as_bytes(),
                };
                self.test(link, &v, &mut hits);
                continue;
            }
            match &sel.src {
                Src::Colls(cs) => {
                    for &c in cs {
                        let start = self.p.items.partition_point(|i| i.coll < c);
                        let items: &'a [Item] = self.p.coll(c);
                        for (k, item) in items.iter().enumerate() {
                            let idx = start + k;
                            if !key_matches(&sel.key, &item.name) {
                                continue;
                            }
                            if link.excludes.iter().any(|x| sel_covers(x, c, &item.name)) {
                                continue;
                            }
                            if self.excluded(rule, idx) {
                                continue;
                            }
                            let v = Val {
                                coll: Some(c),
                                item: Some(idx),
                                name: &item.name,
                                value: &item.value,
                            };
                            self.test(link, &v, &mut hits);
                        }
                    }
                }
                Src::Tx => {
                    let vars: Vec<(String, Vec<u8>)> = self
                        .tx
                        .iter()
                        .filter(|(k, _)| key_matches(&sel.key, k.as_bytes()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (k, v) in vars {
                        let val = Val {
                            coll: None,
                            item: None,
                            name: k.as_bytes(),
                            value: &v,
                        };
                        self.test(link, &val, &mut hits);
                    }
                }
                Src::Matched => {
                    for h in prev {
                        let val = Val {
                            coll: h.coll,
                            item: None,
                            name: &h.name,
                            value: &h.value,
                        };
                        self.test(link, &val, &mut hits);
                    }
                }
                other => {
                    let s = match other {
                        Src::BodyProcessor => self.p.body_kind.name().to_owned(),
                        Src::BodyLength => self
                            .p
                            .items
                            .iter()
                            .find(|i| i.coll == Coll::Body)
                            .map_or(0, |i| i.value.len())
                            .to_string(),
                        Src::ArgsCombinedSize => self.p.args_combined_size.to_string(),
                        _ => "0".to_owned(),
                    };
                    if matches!(other, Src::BodyProcessor) && self.p.body_kind == BodyKind::None {
                        continue;
                    }
                    let val = Val {
                        coll: None,
                        item: None,
                        name: b"",
                        value: s.as_bytes(),
                    };
                    self.test(link, &val, &mut hits);
                }
            }
        }
        hits
    }

    fn count(&self, sel: &Sel, prev: &[Hit]) -> usize {
        match &sel.src {
            Src::Colls(cs) => cs
                .iter()
                .map(|&c| self.p.coll(c).iter().filter(|i| key_matches(&sel.key, &i.name)).count())
                .sum(),
            Src::Tx => self.tx.keys().filter(|k| key_matches(&sel.key, k.as_bytes())).count(),
            Src::Matched => prev.len(),
            Src::BodyProcessor => usize::from(self.p.body_kind != BodyKind::None),
            _ => 1,
        }
    }

    /// The transformed value of a request item for a pipeline, cached.
    fn entry(&mut self, item: usize, pipeline: usize) -> usize {
        let slot = item * self.waf.rules.pipelines.len() + pipeline;
        if self.slots[slot] != EMPTY {
            return self.slots[slot] as usize;
        }
        let raw = &self.p.items[item].value;
        let mut cur: Option<Vec<u8>> = None;
        for t in &self.waf.rules.pipelines[pipeline] {
            let src = cur.as_deref().unwrap_or(raw);
            if t.may_change(src) {
                cur = Some(t.apply(src));
            }
        }
        let value = cur.filter(|v| v != raw);
        self.entries.push(CacheEntry { value, hits: None });
        let idx = self.entries.len() - 1;
        self.slots[slot] = idx as u32;
        idx
    }

    fn set_hits(&mut self, entry: usize, item: usize, pipeline: usize) -> &[u32] {
        if self.entries[entry].hits.is_none() {
            let v = self.entries[entry]
                .value
                .as_deref()
                .unwrap_or(&self.p.items[item].value);
            let hits = match &self.waf.rules.sets[pipeline] {
                Some(set) if set.is_match(v) => set.matches(v).iter().map(|i| i as u32).collect(),
                _ => Vec::new(),
            };
            self.entries[entry].hits = Some(hits);
        }
        self.entries[entry].hits.as_deref().unwrap_or(&[])
    }

    fn test(&mut self, link: &'a Link, v: &Val<'_>, hits: &mut Vec<Hit>) {
        if link.multi {
            // multiMatch: the operator runs on the value and after every transformation.
            let mut cur = v.value.to_vec();
            let mut found = self.op(link, &cur, v, None);
            for t in &self.waf.rules.pipelines[link.pipeline] {
                if found.is_some() {
                    break;
                }
                let next = t.apply(&cur);
                if next != cur {
                    found = self.op(link, &next, v, None);
                }
                cur = next;
            }
            if let Some(value) = found {
                self.matched(link, v, value, hits);
            }
            return;
        }
        match v.item {
            Some(item) => {
                let e = self.entry(item, link.pipeline);
                let set_hit = match &link.op {
                    Op::Rx {
                        set_index: Some(si), ..
                    } if self.waf.rules.sets[link.pipeline].is_some() => {
                        Some(self.set_hits(e, item, link.pipeline).contains(&(*si as u32)))
                    }
                    _ => None,
                };
                if set_hit == Some(false) && !link.negate {
                    return;
                }
                let p: &'a Parsed = self.p;
                let taken = self.entries[e].value.take();
                let found = {
                    let value: &[u8] = taken.as_deref().unwrap_or(&p.items[item].value);
                    self.op(link, value, v, set_hit)
                };
                self.entries[e].value = taken;
                if let Some(value) = found {
                    self.matched(link, v, value, hits);
                }
            }
            None => {
                let mut cur = v.value.to_vec();
                for t in &self.waf.rules.pipelines[link.pipeline] {
                    cur = t.apply(&cur);
                }
                if let Some(value) = self.op(link, &cur, v, None) {
                    self.matched(link, v, value, hits);
                }
            }
        }
    }

    fn matched(&mut self, link: &Link, v: &Val<'_>, value: Vec<u8>, hits: &mut Vec<Hit>) {
        if !link.setvars.is_empty() {
            for (k, val) in &link.setvars {
                let k = String::from_utf8_lossy(&self.expand(k, v)).to_ascii_lowercase();
                if let Some(inc) = val.strip_prefix('+') {
                    let n = self.tx.get(&k).map_or(0, |x| parse_num(x)) + parse_num(inc.as_bytes());
                    self.tx.insert(k, n.to_string().into_bytes());
                } else {
                    let x = self.expand(val, v);
                    self.tx.insert(k, x);
                }
            }
        }
        hits.push(Hit {
            coll: v.coll,
            name: v.name.to_vec(),
            value,
        });
    }

    /// Runs the operator; the matched value on success.
    fn op(&mut self, link: &Link, value: &[u8], v: &Val<'_>, set_hit: Option<bool>) -> Option<Vec<u8>> {
        let hit = match &link.op {
            Op::Rx { re, .. } => {
                let m = match set_hit {
                    Some(m) => m,
                    None => re.is_match(value),
                };
                if m && link.capture {
                    if let Some(c) = re.captures(value) {
                        for i in 0..c.len().min(10) {
                            let s = c.get(i).map(|x| x.as_bytes().to_vec()).unwrap_or_default();
                            self.tx.insert(i.to_string(), s);
                        }
                    }
                }
                m
            }
            Op::Pm(ac) => ac.is_match(value),
            Op::Contains(p) => {
                let p = self.expand(p, v);
                !p.is_empty() && value.windows(p.len()).any(|w| w == p.as_slice())
            }
            Op::Streq(p) => self.expand(p, v) == value,
            Op::Within(p) => {
                let p = self.expand(p, v);
                value.is_empty() || (value.len() <= p.len() && p.windows(value.len()).any(|w| w == value))
            }
            Op::BeginsWith(p) => value.starts_with(&self.expand(p, v)),
            Op::EndsWith(p) => value.ends_with(&self.expand(p, v)),
            Op::Num(cmp, p) => {
                let a = parse_num(value);
                let b = parse_num(&self.expand(p, v));
                match cmp {
                    Cmp::Eq => a == b,
                    Cmp::Gt => a > b,
                    Cmp::Lt => a < b,
                    Cmp::Ge => a >= b,
                    Cmp::Le => a <= b,
                }
            }
            Op::DetectSqli => {
                let owned = value.to_vec();
                guarded(move || libinjectionrs::detect_sqli(&owned).is_injection())
            }
            Op::DetectXss => {
                let owned = value.to_vec();
                guarded(move || libinjectionrs::detect_xss(&owned).is_injection())
            }
            // The operator "matches" when a byte is outside the allowed ranges.
            Op::ByteRange(ok) => value.iter().any(|&b| !ok[b as usize]),
            Op::UrlEncoding => !valid_url_encoding(value),
            Op::Utf8 => std::str::from_utf8(value).is_err(),
        };
        (hit != link.negate).then(|| value.to_vec())
    }

    /// Expands `%{tx.name}`, `%{request_headers.host}`, `%{args.name}`, `%{matched_var}`,
    /// `%{matched_var_name}` in an operator argument or `setvar`.
    fn expand(&self, s: &str, v: &Val<'_>) -> Vec<u8> {
        if !s.contains("%{") {
            return s.as_bytes().to_vec();
        }
        let mut out = Vec::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("%{") {
            out.extend_from_slice(&rest.as_bytes()[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.extend_from_slice(&rest.as_bytes()[i..]);
                return out;
            };
            let var = after[..end].to_ascii_lowercase();
            match var.split_once('.') {
                Some(("tx", name)) => out.extend_from_slice(self.tx.get(name).map_or(&[][..], |x| x.as_slice())),
                Some(("request_headers", name)) => {
                    out.extend_from_slice(self.p.header(name).unwrap_or_default());
                }
                Some(("args", name)) => {
                    let found = [Coll::ArgsGet, Coll::ArgsPost]
                        .iter()
                        .flat_map(|&c| self.p.coll(c))
                        .find(|i| i.name.eq_ignore_ascii_case(name.as_bytes()));
                    if let Some(i) = found {
                        out.extend_from_slice(&i.value);
                    }
                }
                _ if var == "matched_var_name" => {
                    out.extend_from_slice(coll_name(v.coll).as_bytes());
                    out.push(b':');
                    out.extend_from_slice(v.name);
                }
                _ if var == "matched_var" => out.extend_from_slice(v.value),
                _ => {}
            }
            rest = &after[end + 1..];
        }
        out.extend_from_slice(rest.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Exclusion;
    use std::sync::OnceLock;

    fn rules() -> RuleSet {
        RuleSet::crs().expect("rule table")
    }

    fn shared() -> &'static Waf {
        static W: OnceLock<Waf> = OnceLock::new();
        W.get_or_init(|| Waf::with_rules(rules(), WafConfig::payment_api()))
    }

    fn post<'a>(target: &'a str, body: &'a [u8], extra: &[(&'a str, &'a [u8])]) -> HttpRequest<'a> {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"api.example.test"),
            ("User-Agent", b"Stripe/v1 PythonBindings/16.1.0"),
            ("Accept", b"*/*"),
            ("Content-Type", b"application/x-www-form-urlencoded"),
        ];
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            // Test-only: the header borrows its value, so the length string lives for the test run.
            let len: &'static str = Box::leak(body.len().to_string().into_boxed_str());
            headers.push(("Content-Length", len.as_bytes()));
        }
        headers.extend_from_slice(extra);
        HttpRequest {
            method: "POST",
            target,
            version: "HTTP/1.1",
            headers,
            body,
        }
    }

    #[test]
    fn attacks_block_and_payments_pass() {
        let w = shared();
        let ok = w.inspect(&post(
            "/v1/payment_intents",
            b"amount=2000&currency=usd&description=O%27Brien%27s+%22gift%22+%2850%25+off%29&metadata%5Bnote%5D=Select+plan%3A+Pro%2C+drop-off+at+5pm",
            &[],
        ));
        assert!(!ok.blocked, "{ok:?}");
        for (what, target, body) in [
            ("sqli", "/v1/customers?limit=1%27%20OR%201%3D1--", &b""[..]),
            (
                "xss",
                "/v1/customers",
                &b"email=a%40b.c&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E"[..],
            ),
            ("lfi", "/v1/files?path=..%2f..%2f..%2fetc%2fpasswd", &b""[..]),
            (
                "double-encoded lfi",
                "/v1/files?path=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
                &b""[..],
            ),
            ("rce", "/v1/customers?limit=1;cat%20/etc/passwd", &b""[..]),
        ] {
            let v = w.inspect(&post(target, body, &[]));
            assert!(v.blocked, "{what} passed: {v:?}");
            assert!(v.rule_id().is_some());
        }
    }

    #[test]
    fn smuggling_is_blocked() {
        let w = shared();
        let body = b"amount=1";
        for (what, extra) in [
            (
                "CL and TE",
                vec![("Content-Length", &b"8"[..]), ("Transfer-Encoding", &b"chunked"[..])],
            ),
            (
                "two CLs",
                vec![("Content-Length", &b"8"[..]), ("Content-Length", &b"9"[..])],
            ),
            ("odd TE", vec![("Transfer-Encoding", &b"chunked, identity"[..])]),
        ] {
            let v = w.inspect(&post("/v1/customers", body, &extra));
            assert!(v.blocked, "{what} passed: {v:?}");
            assert_eq!(v.matches.first().map(|m| m.family), Some("protocol"), "{what}");
        }
    }

    #[test]
    fn detect_only_scores_without_blocking() {
        let cfg = WafConfig {
            detect_only: true,
            ..WafConfig::payment_api()
        };
        let w = Waf::with_rules(rules(), cfg);
        let v = w.inspect(&post("/v1/customers?limit=1%27%20OR%201%3D1--", b"", &[]));
        assert!(v.over_threshold && !v.blocked);
    }

    #[test]
    fn exclusions_apply_to_their_route_and_fields_only() {
        let body = b"note=1%27%20OR%201%3D1--";
        let base = Waf::with_rules(rules(), WafConfig::default());
        assert!(base.inspect(&post("/v1/x", body, &[])).blocked);
        let cfg = WafConfig {
            exclusions: vec![Exclusion {
                path: "/v1/*".into(),
                methods: vec![],
                fields: vec!["note".into()],
                rules: vec![],
            }],
            ..WafConfig::default()
        };
        let w = Waf::with_rules(rules(), cfg);
        assert!(!w.inspect(&post("/v1/x", body, &[])).blocked);
        assert!(w.inspect(&post("/v2/x", body, &[])).blocked);
        assert!(w.inspect(&post("/v1/x", b"other=1%27%20OR%201%3D1--", &[])).blocked);
    }

    #[test]
    fn limits_are_enforced() {
        let w = shared();
        let long = format!("/v1/customers?q={}", "a".repeat(5000));
        let v = w.inspect(&post(&long, b"", &[]));
        assert!(v.matches.iter().any(|m| m.rule_id == protocol::URI_TOO_LONG));
        let many: String = (0..1100).map(|i| format!("a{i}=1&")).collect();
        let v = w.inspect(&post("/v1/customers", many.as_bytes(), &[]));
        assert!(v.blocked, "too many arguments passed");
    }
}
