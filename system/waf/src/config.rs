//! Engine configuration: anomaly threshold, paranoia level, detect-only mode, size limits,
//! protocol policy and per-route exclusions, readable from YAML.

use serde::Deserialize;

/// Errors reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML did not parse or had unknown fields.
    #[error("invalid WAF configuration: {0}")]
    Yaml(String),
    /// A value is out of range.
    #[error("invalid WAF configuration: {0}")]
    Invalid(String),
}

/// Tunables of the inspection engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WafConfig {
    /// Paranoia level 1 or 2: rules of a higher level are not run.
    pub paranoia: u8,
    /// Anomaly score at which a request is blocked (CRITICAL 5, ERROR 4, WARNING 3, NOTICE 2).
    pub threshold: u32,
    /// Score and report, but never block.
    pub detect_only: bool,
    /// Size limits.
    pub limits: Limits,
    /// Methods accepted (rule 911100).
    pub allowed_methods: Vec<String>,
    /// Body content types accepted (rule 920420), lower case, without parameters.
    pub allowed_content_types: Vec<String>,
    /// Rules switched off everywhere.
    pub disabled_rules: Vec<u32>,
    /// Per-rule anomaly scores replacing the severity's (0 keeps the match for the audit log
    /// but adds nothing): the tuning knob for rules that are noisy on real traffic.
    pub rule_scores: std::collections::BTreeMap<u32, u32>,
    /// Fields that rules skip on some routes.
    pub exclusions: Vec<Exclusion>,
}

/// Size limits (each breach is a CRITICAL match of its own rule).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest request target (path and query).
    pub max_uri_len: usize,
    /// Longest single header value.
    pub max_header_len: usize,
    /// Largest sum of all header names and values.
    pub max_headers_total: usize,
    /// Most header fields.
    pub max_header_count: usize,
    /// Largest body.
    pub max_body: usize,
    /// Most arguments (query and body together).
    pub max_args: usize,
    /// Longest argument name.
    pub max_arg_name_len: usize,
    /// Longest argument value.
    pub max_arg_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri_len: 4096,
            max_header_len: 8192,
            max_headers_total: 32 * 1024,
            max_header_count: 100,
            max_body: 256 * 1024,
            max_args: 1000,
            max_arg_name_len: 200,
            max_arg_len: 64 * 1024,
        }
    }
}

/// Fields that some rules skip on some routes, e.g. free text in `metadata[*]` on `/v1/*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Path pattern; `*` matches any run of characters (`/v1/*`).
    pub path: String,
    /// Methods it applies to (all when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Argument name patterns in bracket notation (`metadata[*]`, `description`).
    pub fields: Vec<String>,
    /// Rule id patterns skipped for those fields (`942*`, `941100`, or `PL2` for every rule of
    /// paranoia level 2); all rules when empty.
    #[serde(default)]
    pub rules: Vec<String>,
}

impl Default for WafConfig {
    fn default() -> Self {
        WafConfig {
            paranoia: 2,
            threshold: 5,
            detect_only: false,
            limits: Limits::default(),
            allowed_methods: ["GET", "HEAD", "POST", "OPTIONS", "DELETE"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            allowed_content_types: [
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json",
                "text/xml",
                "application/xml",
                "application/soap+xml",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            disabled_rules: Vec::new(),
            rule_scores: std::collections::BTreeMap::new(),
            exclusions: Vec::new(),
        }
    }
}

impl WafConfig {
    /// The configuration in `yaml`; missing fields take their defaults.
    pub fn from_yaml(yaml: &str) -> Result<WafConfig, ConfigError> {
        let c: WafConfig = serde_yaml_ng::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// The shipped configuration for the payment API: defaults plus the exclusions for
    /// fields that carry customer-written text (`config/waf.yaml` in this crate).
    pub fn payment_api() -> WafConfig {
        // The file is part of the crate and checked by a unit test.
        WafConfig::from_yaml(DEFAULT_YAML).unwrap_or_default()
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=2).contains(&self.paranoia) {
            return Err(ConfigError::Invalid(format!(
                "paranoia must be 1 or 2, not {}",
                self.paranoia
            )));
        }
        if self.threshold == 0 {
            return Err(ConfigError::Invalid("threshold must be at least 1".into()));
        }
        for e in &self.exclusions {
            if e.fields.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "exclusion for {} names no fields",
                    e.path
                )));
            }
        }
        Ok(())
    }
}

/// The shipped configuration (see [`WafConfig::payment_api`]).
pub const DEFAULT_YAML: &str = include_str!("../config/waf.yaml");

/// `*`-glob match (no other metacharacters): `*` matches any run of bytes.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let Some(first) = pattern.iter().position(|&b| b == b'*') else {
        return pattern == s;
    };
    let last = pattern.iter().rposition(|&b| b == b'*').unwrap_or(first);
    let (head, tail) = (&pattern[..first], &pattern[last + 1..]);
    if s.len() < head.len() + tail.len() || !s.starts_with(head) || !s.ends_with(tail) {
        return false;
    }
    let mut rest = &s[head.len()..s.len() - tail.len()];
    // The middle parts in order, each at its leftmost place (greedy is optimal for `*`).
    for part in pattern[first + 1..last.max(first + 1)].split(|&b| b == b'*') {
        if part.is_empty() {
            continue;
        }
        match rest.windows(part.len()).position(|w| w == part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A [`glob`] pattern split once at its `*`s, for patterns tested against many strings.
#[derive(Debug, Clone)]
pub struct Glob {
    /// The pattern has no `*`: `head` is all of it.
    exact: bool,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The non-empty parts between the first and the last `*`, in order.
    middle: Vec<Vec<u8>>,
}

impl Glob {
    /// The pattern, split.
    pub fn new(pattern: &[u8]) -> Glob {
        let Some(first) = pattern.iter().position(|&b| b == b'*') else {
            return Glob {
                exact: true,
                head: pattern.to_vec(),
                tail: Vec::new(),
                middle: Vec::new(),
            };
        };
        let last = pattern.iter().rposition(|&b| b == b'*').unwrap_or(first);
        Glob {
            exact: false,
            head: pattern[..first].to_vec(),
            tail: pattern[last + 1..].to_vec(),
            middle: pattern[first + 1..last.max(first + 1)]
                .split(|&b| b == b'*')
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// Whether `s` matches, as [`glob`] decides (`globs_match_as_glob_does` checks it).
    pub fn matches(&self, s: &[u8]) -> bool {
        if self.exact {
            return self.head == s;
        }
        let (head, tail) = (&self.head, &self.tail);
        if s.len() < head.len() + tail.len() || !s.starts_with(head) || !s.ends_with(tail) {
            return false;
        }
        let mut rest = &s[head.len()..s.len() - tail.len()];
        for part in &self.middle {
            match rest.windows(part.len()).position(|w| w == part.as_slice()) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split pattern decides as [`glob`] does, on 20,000 random patterns (with runs of `*`,
    /// leading and trailing ones, none) and strings over a small alphabet, so matches are
    /// frequent, and on the shipped configuration's field patterns.
    #[test]
    fn globs_match_as_glob_does() {
        let mut rng = crate::testrng::Rng(0x2f8b_d5c3_5a1e_0e9d);
        let alphabet = b"ab[*";
        let mut matched = 0;
        for _ in 0..20_000 {
            let plen = 1 + rng.below(7);
            let slen = rng.below(9);
            let pattern: Vec<u8> = (0..plen).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            let s: Vec<u8> = (0..slen)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .filter(|&b| b != b'*')
                .collect();
            let g = Glob::new(&pattern);
            assert_eq!(
                g.matches(&s),
                glob(&pattern, &s),
                "{:?} {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&s)
            );
            matched += usize::from(glob(&pattern, &s));
        }
        assert!(matched > 1_000, "only {matched} matches");
        let c = WafConfig::from_yaml(DEFAULT_YAML).expect("config");
        for f in c.exclusions.iter().flat_map(|e| &e.fields) {
            for s in [
                "metadata[note]",
                "description",
                "shipping[name]",
                "email",
                "x[email]",
                "url",
                "a",
            ] {
                assert_eq!(
                    Glob::new(f.as_bytes()).matches(s.as_bytes()),
                    glob(f.as_bytes(), s.as_bytes())
                );
            }
        }
    }

    #[test]
    fn shipped_config_parses() {
        let c = WafConfig::from_yaml(DEFAULT_YAML).unwrap();
        assert_eq!(c.threshold, 5);
        assert!(!c.exclusions.is_empty());
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(WafConfig::from_yaml("paranoia: 3").is_err());
        assert!(WafConfig::from_yaml("bogus: 1").is_err());
        assert!(WafConfig::from_yaml("exclusions: [{path: '/v1/*', fields: []}]").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob(b"metadata[*]", b"metadata[note]"));
        assert!(!glob(b"metadata[*]", b"metadatax"));
        assert!(glob(b"/v1/*", b"/v1/payment_intents"));
        assert!(glob(b"942*", b"942100"));
        assert!(glob(b"*[name]", b"billing_details[name]"));
        assert!(!glob(b"description", b"descriptions"));
        assert!(glob(b"*[address][*]", b"shipping[address][line1]"));
        assert!(!glob(b"*[address][*]", b"shipping[address]"));
        assert!(glob(b"a*b*c", b"abc"));
        assert!(glob(b"a*b*c", b"a-b-b-c"));
        assert!(!glob(b"a*b*c", b"a-c"));
        assert!(!glob(b"ab*ba", b"aba"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a**b", b"ab") && glob(b"*a*", b"bab") && !glob(b"*a*", b"bbb"));
        assert!(glob(b"a*", b"a") && !glob(b"a*b", b"a") && glob(b"*b", b"b") && !glob(b"ab*b", b"ab"));
    }
}
