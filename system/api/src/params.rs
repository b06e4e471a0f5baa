//! Request parameters the way Stripe reads them.
//!
//! Form bodies use bracket notation: `metadata[order]=1`, `expand[]=customer`,
//! `expand[0]=customer`, `card[number]=…`, nested to any reasonable depth. JSON bodies are
//! accepted too. Both become one [`Param`] tree; handlers then take typed values out of it
//! with [`Params`], and every error names the parameter in bracket notation (`card[exp_month]`)
//! with Stripe's codes. Anything a handler did not take is an unknown parameter (400).

use pay_core::ApiError;
use std::collections::{BTreeMap, BTreeSet};

/// Most parameters a request may carry.
pub const MAX_PARAMS: usize = 1000;
/// Deepest bracket nesting accepted.
pub const MAX_DEPTH: usize = 8;
/// Longest parameter name accepted.
pub const MAX_KEY_LEN: usize = 200;

/// One parameter value: text, a map of named values, or a list. Parameters can hold a card
/// number on their way to the tokenizer, so `Debug` masks anything that looks like one.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Param {
    /// A scalar (numbers and booleans arrive as text).
    Str(String),
    /// Named sub-values (`card[number]`).
    Map(BTreeMap<String, Param>),
    /// Ordered values (`expand[]`, `expand[0]`).
    List(Vec<Param>),
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Param::Str(s) => write!(f, "{:?}", pay_core::redact::redact_pans(s)),
            Param::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Param::List(l) => f.debug_list().entries(l.iter()).finish(),
        }
    }
}

/// Splits `a[b][c]` into `["a", "b", "c"]`; `a[]` gives an empty last segment.
fn split_key(key: &str) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::invalid_request(format!("Invalid parameter name: {}", shown(key)));
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad());
    }
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return Err(bad());
    }
    let mut parts = vec![head.to_owned()];
    while !rest.is_empty() {
        if !rest.starts_with('[') {
            return Err(bad());
        }
        let Some(close) = rest.find(']') else {
            return Err(bad());
        };
        let seg = &rest[1..close];
        if seg.contains('[') {
            return Err(bad());
        }
        parts.push(seg.to_owned());
        rest = &rest[close + 1..];
        if parts.len() > MAX_DEPTH {
            return Err(ApiError::invalid_request(format!(
                "Parameter {} is nested too deeply.",
                shown(key)
            )));
        }
    }
    Ok(parts)
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A tree node while building: maps remember whether every key came from `[N]`/`[]`.
enum Node {
    Leaf(String),
    Branch {
        children: BTreeMap<String, Node>,
        appended: usize,
        all_index: bool,
    },
}

fn insert(node: &mut BTreeMap<String, Node>, path: &[String], value: String, full: &str) -> Result<(), ApiError> {
    let dup = || {
        ApiError::invalid_request(format!(
            "Received conflicting or duplicate values for parameter: {}",
            shown(full)
        ))
    };
    let (first, rest) = (&path[0], &path[1..]);
    if rest.is_empty() {
        if node.contains_key(first) {
            return Err(dup());
        }
        node.insert(first.clone(), Node::Leaf(value));
        return Ok(());
    }
    let child = node.entry(first.clone()).or_insert_with(|| Node::Branch {
        children: BTreeMap::new(),
        appended: 0,
        all_index: true,
    });
    let Node::Branch {
        children,
        appended,
        all_index,
    } = child
    else {
        return Err(dup());
    };
    let seg = &rest[0];
    let key = if seg.is_empty() {
        // `a[]`: append. Pad the index so appended items sort in order.
        let k = format!("{:010}", *appended);
        *appended += 1;
        k
    } else if seg.bytes().all(|b| b.is_ascii_digit()) && seg.len() <= 9 {
        format!("{:010}", seg.parse::<u64>().unwrap_or(0))
    } else {
        *all_index = false;
        seg.clone()
    };
    let mut sub_path = vec![key];
    sub_path.extend_from_slice(&rest[1..]);
    insert(children, &sub_path, value, full)
}

fn finish_node(n: Node) -> Param {
    match n {
        Node::Leaf(s) => Param::Str(s),
        Node::Branch {
            children, all_index, ..
        } => {
            if all_index && !children.is_empty() {
                Param::List(children.into_values().map(finish_node).collect())
            } else {
                Param::Map(children.into_iter().map(|(k, v)| (unpad(k), finish_node(v))).collect())
            }
        }
    }
}

fn unpad(k: String) -> String {
    if k.len() == 10 && k.bytes().all(|b| b.is_ascii_digit()) {
        let t = k.trim_start_matches('0');
        if t.is_empty() {
            "0".to_owned()
        } else {
            t.to_owned()
        }
    } else {
        k
    }
}

/// Parses an `application/x-www-form-urlencoded` body or query string.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, Param>, ApiError> {
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    let mut count = 0usize;
    for (k, v) in form_urlencoded::parse(body) {
        if k.is_empty() && v.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_PARAMS {
            return Err(ApiError::invalid_request(format!(
                "Too many parameters (more than {MAX_PARAMS})."
            )));
        }
        let path = split_key(&k)?;
        insert(&mut root, &path, v.into_owned(), &k)?;
    }
    Ok(root.into_iter().map(|(k, v)| (k, finish_node(v))).collect())
}

/// Parses a JSON object body.
pub fn parse_json(body: &[u8]) -> Result<BTreeMap<String, Param>, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("Invalid JSON body: {}", shown(&e.to_string()))))?;
    match from_json(v, 0)? {
        Param::Map(m) => Ok(m),
        _ => Err(ApiError::invalid_request("The JSON body must be an object.")),
    }
}

fn from_json(v: serde_json::Value, depth: usize) -> Result<Param, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::invalid_request("The JSON body is nested too deeply."));
    }
    Ok(match v {
        serde_json::Value::Null => Param::Str(String::new()),
        serde_json::Value::Bool(b) => Param::Str(b.to_string()),
        serde_json::Value::Number(n) => Param::Str(n.to_string()),
        serde_json::Value::String(s) => Param::Str(s),
        serde_json::Value::Array(a) => Param::List(
            a.into_iter()
                .map(|x| from_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(o) => Param::Map(
            o.into_iter()
                .map(|(k, x)| Ok((k, from_json(x, depth + 1)?)))
                .collect::<Result<_, ApiError>>()?,
        ),
    })
}

/// Typed access to a request's parameters, tracking which were used.
pub struct Params {
    prefix: String,
    values: BTreeMap<String, Param>,
    taken: BTreeSet<String>,
}

/// Metadata limits (Stripe's).
pub const METADATA_MAX_KEYS: usize = 50;
/// Longest metadata key.
pub const METADATA_MAX_KEY_LEN: usize = 40;
/// Longest metadata value.
pub const METADATA_MAX_VALUE_LEN: usize = 500;

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Params({} parameters at `{}`)", self.values.len(), self.prefix)
    }
}

impl Params {
    /// Top-level parameters.
    pub fn new(values: BTreeMap<String, Param>) -> Params {
        Params {
            prefix: String::new(),
            values,
            taken: BTreeSet::new(),
        }
    }

    /// The bracket-notation name of `name` here (`card[number]`).
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}[{name}]", self.prefix)
        }
    }

    /// A canonical rendering for idempotency fingerprints (sorted keys). Card numbers and
    /// CVCs are reduced to their length and last four (what may be shown), so the stored
    /// fingerprint can never be used to recover them.
    pub fn canonical(&self) -> String {
        let mut values = self.values.clone();
        if let Some(Param::Map(card)) = values.get_mut("card") {
            for (field, keep_last4) in [("number", true), ("cvc", false)] {
                if let Some(Param::Str(v)) = card.get_mut(field) {
                    let digits: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
                    let tail = if keep_last4 {
                        digits.get(digits.len().saturating_sub(4)..).unwrap_or("").to_owned()
                    } else {
                        String::new()
                    };
                    *v = format!("len:{};last4:{tail}", digits.len());
                }
            }
        }
        serde_json::to_string(&values).unwrap_or_default()
    }

    fn take(&mut self, name: &str) -> Option<Param> {
        self.taken.insert(name.to_owned());
        self.values.get(name).cloned()
    }

    /// True when `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// An optional text parameter.
    pub fn opt_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Param::Str(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_param(
                &self.path(name),
                "parameter_invalid_string",
                format!("Invalid string: {} must be a string.", self.path(name)),
            )),
        }
    }

    /// An optional non-empty text parameter of at most `max` characters; `""` means absent.
    pub fn opt_text(&mut self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.opt_str(name)? {
            Some(s) if s.is_empty() => Ok(None),
            Some(s) if s.chars().count() > max => Err(ApiError::invalid_param(
                &self.path(name),
                "parameter_invalid_string",
                format!("{} must be at most {max} characters.", self.path(name)),
            )),
            other => Ok(other),
        }
    }

    /// A text parameter that may be explicitly cleared with `""`: `None` absent, `Some(None)`
    /// cleared, `Some(Some(v))` set.
    pub fn opt_clearable(&mut self, name: &str, max: usize) -> Result<Option<Option<String>>, ApiError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(Some(None)),
            Some(s) if s.chars().count() > max => Err(ApiError::invalid_param(
                &self.path(name),
                "parameter_invalid_string",
                format!("{} must be at most {max} characters.", self.path(name)),
            )),
            Some(s) => Ok(Some(Some(s))),
        }
    }

    /// A required text parameter.
    pub fn req_str(&mut self, name: &str) -> Result<String, ApiError> {
        match self.opt_str(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(ApiError::invalid_param(&self.path(name), "parameter_invalid_empty", format!("You passed an empty string for '{}'. We assume empty values are an attempt to unset a parameter; however '{}' cannot be unset. You should remove '{}' from your request or supply a non-empty value.", self.path(name), self.path(name), self.path(name)))),
            None => Err(ApiError::missing_param(&self.path(name))),
        }
    }

    /// An optional integer parameter.
    pub fn opt_i64(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_param(
                    &self.path(name),
                    "parameter_invalid_integer",
                    format!("Invalid integer: {}", shown(&s)),
                )
            }),
        }
    }

    /// A required integer parameter.
    pub fn req_i64(&mut self, name: &str) -> Result<i64, ApiError> {
        self.opt_i64(name)?
            .ok_or_else(|| ApiError::missing_param(&self.path(name)))
    }

    /// An optional boolean (`true`/`false`).
    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.opt_str(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid_param(
                &self.path(name),
                "parameter_invalid_boolean",
                format!("Invalid boolean: {}", shown(other)),
            )),
        }
    }

    /// An optional value that must be one of `allowed`.
    pub fn opt_enum(&mut self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
            Some(s) => Err(ApiError::invalid_param(
                &self.path(name),
                "parameter_invalid",
                format!(
                    "Invalid {}: must be one of {} (got {}).",
                    self.path(name),
                    allowed.join(", "),
                    shown(&s)
                ),
            )),
        }
    }

    /// An optional nested hash, as its own `Params` (errors inside name `name[…]`).
    pub fn opt_map(&mut self, name: &str) -> Result<Option<Params>, ApiError> {
        let path = self.path(name);
        match self.take(name) {
            None => Ok(None),
            Some(Param::Map(m)) => Ok(Some(Params {
                prefix: path,
                values: m,
                taken: BTreeSet::new(),
            })),
            Some(Param::Str(s)) if s.is_empty() => Ok(None),
            Some(_) => Err(ApiError::invalid_param(
                &path,
                "parameter_invalid",
                format!("Invalid object: {path} must be a hash."),
            )),
        }
    }

    /// An optional list of text values (`expand[]`, `payment_method_types[]`).
    pub fn opt_str_list(&mut self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let path = self.path(name);
        match self.take(name) {
            None => Ok(None),
            Some(Param::List(items)) => items
                .into_iter()
                .map(|p| match p {
                    Param::Str(s) => Ok(s),
                    _ => Err(ApiError::invalid_param(
                        &path,
                        "parameter_invalid",
                        format!("Invalid array: {path} must contain strings."),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Param::Str(s)) if s.is_empty() => Ok(Some(vec![])),
            Some(_) => Err(ApiError::invalid_param(
                &path,
                "parameter_invalid",
                format!("Invalid array: {path} must be an array."),
            )),
        }
    }

    /// Metadata: `None` absent, `Some(None)` cleared (`metadata=""`), or key/value changes
    /// where an empty value removes the key. Enforces Stripe's limits.
    pub fn metadata(&mut self) -> Result<Option<Option<BTreeMap<String, String>>>, ApiError> {
        let path = self.path("metadata");
        let m = match self.take("metadata") {
            None => return Ok(None),
            Some(Param::Str(s)) if s.is_empty() => return Ok(Some(None)),
            Some(Param::Map(m)) => m,
            Some(Param::List(l)) => l.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &path,
                    "parameter_invalid",
                    "Invalid metadata: must be a hash of strings.",
                ))
            }
        };
        if m.len() > METADATA_MAX_KEYS {
            return Err(ApiError::invalid_param(
                &path,
                "parameter_invalid",
                format!("Invalid metadata: at most {METADATA_MAX_KEYS} keys are allowed."),
            ));
        }
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let kp = format!("{path}[{}]", shown(&k));
            let Param::Str(v) = v else {
                return Err(ApiError::invalid_param(
                    &kp,
                    "parameter_invalid",
                    "Invalid metadata: values must be strings.",
                ));
            };
            if k.chars().count() > METADATA_MAX_KEY_LEN || k.contains('[') || k.contains(']') {
                return Err(ApiError::invalid_param(
                    &kp,
                    "parameter_invalid",
                    format!("Metadata keys must be at most {METADATA_MAX_KEY_LEN} characters without brackets."),
                ));
            }
            if v.chars().count() > METADATA_MAX_VALUE_LEN {
                return Err(ApiError::invalid_param(
                    &kp,
                    "parameter_invalid",
                    format!("Metadata values must be at most {METADATA_MAX_VALUE_LEN} characters."),
                ));
            }
            out.insert(k, v);
        }
        Ok(Some(Some(out)))
    }

    /// `expand` paths.
    pub fn expand(&mut self) -> Result<Vec<String>, ApiError> {
        Ok(self.opt_str_list("expand")?.unwrap_or_default())
    }

    /// Takes and ignores a parameter accepted for compatibility.
    pub fn ignore(&mut self, name: &str) {
        self.taken.insert(name.to_owned());
    }

    /// Fails with `parameter_unknown` on the first parameter no one took; nested maps must be
    /// finished by their own `finish`.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.values.keys().find(|k| !self.taken.contains(*k)) {
            Some(k) => Err(ApiError::unknown_param(&self.path(k))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Params {
        Params::new(parse_form(s.as_bytes()).unwrap())
    }

    #[test]
    fn bracket_notation() {
        let tree = parse_form(b"type=card&card[number]=4242424242424242&card[exp_month]=12&metadata[order id]=A%2B1&expand[]=customer&expand[]=latest_charge").unwrap();
        assert!(tree["type"] == Param::Str("card".into()));
        let Param::Map(card) = &tree["card"] else { panic!() };
        assert_eq!(card["exp_month"], Param::Str("12".into()));
        let Param::Map(meta) = &tree["metadata"] else { panic!() };
        assert_eq!(meta["order id"], Param::Str("A+1".into()));
        assert_eq!(
            tree["expand"],
            Param::List(vec![Param::Str("customer".into()), Param::Str("latest_charge".into())])
        );
        let idx = parse_form(b"items[1][price]=b&items[0][price]=a").unwrap();
        let Param::List(items) = &idx["items"] else {
            panic!("{idx:?}")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0],
            Param::Map([("price".to_owned(), Param::Str("a".into()))].into())
        );
    }

    #[test]
    fn conflicts_and_bad_names_are_errors() {
        assert!(parse_form(b"a=1&a=2").is_err());
        assert!(parse_form(b"a=1&a[b]=2").is_err());
        assert!(parse_form(b"a[b]=1&a=2").is_err());
        assert!(parse_form(b"[a]=1").is_err());
        assert!(parse_form(b"a[b=1").is_err());
        assert!(parse_form(b"a]=1").is_err());
        assert!(parse_form("a[b][c][d][e][f][g][h][i][j]=1".as_bytes()).is_err());
    }

    #[test]
    fn typed_access_names_the_parameter() {
        let mut ps = p("amount=12x&card[exp_month]=ab&confirm=yes");
        assert_eq!(ps.opt_i64("amount").unwrap_err().param.as_deref(), Some("amount"));
        let mut card = ps.opt_map("card").unwrap().unwrap();
        let e = card.opt_i64("exp_month").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("card[exp_month]"));
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(
            ps.opt_bool("confirm").unwrap_err().code.as_deref(),
            Some("parameter_invalid_boolean")
        );
        let mut ps = p("amount=100&bogus=1");
        ps.req_i64("amount").unwrap();
        let e = ps.finish().unwrap_err();
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref()),
            (Some("parameter_unknown"), Some("bogus"))
        );
        let mut ps = p("currency=");
        assert_eq!(
            ps.req_str("currency").unwrap_err().code.as_deref(),
            Some("parameter_invalid_empty")
        );
        assert_eq!(
            p("").req_str("currency").unwrap_err().code.as_deref(),
            Some("parameter_missing")
        );
    }

    #[test]
    fn metadata_rules() {
        assert_eq!(p("metadata=").metadata().unwrap(), Some(None));
        let m = p("metadata[a]=1&metadata[b]=").metadata().unwrap().unwrap().unwrap();
        assert_eq!(m.get("b").map(String::as_str), Some(""));
        let long = format!("metadata[k]={}", "x".repeat(501));
        assert!(p(&long).metadata().is_err());
        let many: Vec<String> = (0..51).map(|i| format!("metadata[k{i}]=v")).collect();
        assert!(p(&many.join("&")).metadata().is_err());
    }

    #[test]
    fn json_bodies_become_the_same_tree() {
        let j = parse_json(br#"{"amount": 1000, "confirm": true, "metadata": {"a": "b"}, "expand": ["customer"]}"#)
            .unwrap();
        let f = parse_form(b"amount=1000&confirm=true&metadata[a]=b&expand[0]=customer").unwrap();
        assert_eq!(j, f);
        assert!(parse_json(b"[1]").is_err());
        assert!(parse_json(b"{").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_form(&body);
            let _ = parse_json(&body);
        }

        #[test]
        fn simple_pairs_round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,20}", 0..20)) {
            let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter()).finish();
            let tree = parse_form(body.as_bytes()).unwrap();
            prop_assert_eq!(tree.len(), pairs.len());
            for (k, v) in &pairs {
                prop_assert_eq!(&tree[k], &Param::Str(v.clone()));
            }
        }

        #[test]
        fn bracket_maps_round_trip(m in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9 ]{0,10}", 1..10)) {
            let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(m.iter().map(|(k, v)| (format!("metadata[{k}]"), v.clone()))).finish();
            let md = Params::new(parse_form(body.as_bytes()).unwrap()).metadata().unwrap().unwrap().unwrap();
            prop_assert_eq!(md, m);
        }
    }
}
