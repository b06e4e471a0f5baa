//! The versioned model configuration: weights, thresholds, the FX table and the lookup tables
//! (IIN, IP ranges, disposable email domains), read from YAML.
//!
//! The built-in configuration is `config/model.yaml`, compiled into the binary. A deployment
//! may load its own file ([`FraudConfig::from_path`]); each lookup table there either
//! `extend`s the built-in table (entries added, and preferred on equal prefixes) or
//! `replace`s it.

use crate::decimal::{div_round_half_away, Decimal};
use crate::model::Weights;
use pay_core::{CardBrand, Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

/// The built-in model file.
pub const BUILTIN_YAML: &str = include_str!("../config/model.yaml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read fraud config {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown or missing fields.
    #[error("invalid fraud config: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid fraud config: {0}")]
    Invalid(String),
}

/// Score thresholds (0–99): `elevated <= score < highest` is elevated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Lowest elevated score (Stripe: 65).
    pub elevated: u8,
    /// Lowest highest-risk score (Stripe: 75).
    pub highest: u8,
}

/// Whether a configured table adds to the built-in one or replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Built-in entries plus these (these win on equal keys).
    #[default]
    Extend,
    /// Only these entries.
    Replace,
}

/// An override table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides<T> {
    /// Extend or replace.
    #[serde(default)]
    pub mode: Mode,
    /// Entries.
    #[serde(default = "Vec::new")]
    pub entries: Vec<T>,
}

impl<T> Default for Overrides<T> {
    fn default() -> Self {
        Overrides {
            mode: Mode::Extend,
            entries: vec![],
        }
    }
}

/// One IIN (BIN) table row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IinEntry {
    /// Leading digits (1–9).
    pub prefix: String,
    /// Network (`visa`, `mastercard`, …).
    pub brand: String,
    /// Issuing country (ISO 3166 alpha-2).
    pub country: String,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: String,
}

/// One IP range row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRangeEntry {
    /// CIDR (`192.0.2.0/24`, `2001:db8::/32`).
    pub cidr: String,
    /// Country (ISO 3166 alpha-2).
    pub country: String,
}

/// The file format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    version: String,
    bias: f64,
    thresholds: Thresholds,
    max_reasons: usize,
    test_mode_cap: bool,
    weights: Weights,
    /// USD per one major unit of the currency, as decimal strings.
    fx_to_usd: BTreeMap<String, Decimal>,
    #[serde(default)]
    iin: Overrides<IinEntry>,
    #[serde(default)]
    ip_ranges: Overrides<IpRangeEntry>,
    #[serde(default)]
    disposable_email_domains: Overrides<String>,
}

/// The loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct FraudConfig {
    /// Model version (reported on every assessment).
    pub version: String,
    /// Intercept of the logistic model.
    pub bias: f64,
    /// Level thresholds.
    pub thresholds: Thresholds,
    /// How many reasons an assessment lists.
    pub max_reasons: usize,
    /// As at Stripe, test-mode payments score below the elevated threshold unless a test card
    /// forces a level (rules still see every fact, velocity included).
    pub test_mode_cap: bool,
    /// Feature weights.
    pub weights: Weights,
    /// FX table.
    pub fx: FxTable,
    /// IIN table.
    pub iin: IinTable,
    /// IP → country table.
    pub ip: IpTable,
    /// Disposable email domains.
    pub disposable: DisposableDomains,
}

impl FraudConfig {
    /// The compiled-in `config/model.yaml`.
    pub fn builtin() -> FraudConfig {
        match FraudConfig::from_yaml_str(BUILTIN_YAML) {
            Ok(c) => c,
            // The file is compiled in and covered by tests; failing here is a build defect.
            Err(e) => panic!("built-in fraud config is invalid: {e}"),
        }
    }

    /// Reads a YAML file.
    pub fn from_path(path: &Path) -> Result<FraudConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        FraudConfig::from_yaml_str(&text)
    }

    /// Parses and validates YAML.
    pub fn from_yaml_str(text: &str) -> Result<FraudConfig, ConfigError> {
        let f: ConfigFile = serde_yaml_ng::from_str(text)?;
        if f.version.trim().is_empty() {
            return Err(ConfigError::Invalid("version must not be empty".into()));
        }
        if !(f.thresholds.elevated < f.thresholds.highest && f.thresholds.highest <= 99) {
            return Err(ConfigError::Invalid(
                "thresholds must satisfy elevated < highest <= 99".into(),
            ));
        }
        if !f.bias.is_finite() || !f.weights.all_finite() {
            return Err(ConfigError::Invalid("bias and weights must be finite numbers".into()));
        }
        let mut fx = BTreeMap::new();
        for (code, rate) in f.fx_to_usd {
            let c = Currency::parse(&code).map_err(|e| ConfigError::Invalid(format!("fx_to_usd: {e}")))?;
            if rate <= Decimal::ZERO {
                return Err(ConfigError::Invalid(format!("fx_to_usd.{code} must be positive")));
            }
            fx.insert(c.code(), rate);
        }
        Ok(FraudConfig {
            version: f.version,
            bias: f.bias,
            thresholds: f.thresholds,
            max_reasons: f.max_reasons,
            test_mode_cap: f.test_mode_cap,
            weights: f.weights,
            fx: FxTable { rates: fx },
            iin: IinTable::new(&f.iin)?,
            ip: IpTable::new(&f.ip_ranges)?,
            disposable: DisposableDomains::new(&f.disposable_email_domains),
        })
    }
}

/// Static FX rates to USD.
#[derive(Debug, Clone)]
pub struct FxTable {
    rates: BTreeMap<&'static str, Decimal>,
}

impl FxTable {
    /// The amount in US cents, rounded half away from zero; `None` for a currency without a
    /// rate. Integer arithmetic only.
    pub fn to_usd_cents(&self, m: Money) -> Option<i64> {
        let rate = self.rates.get(m.currency.code())?;
        // cents = minor / 10^exp * rate * 100, with rate = raw / 10^18.
        let num = i128::from(m.amount).checked_mul(rate.raw())?.checked_mul(100)?;
        let den = 10_i128.pow(u32::from(m.currency.exponent())) * 10_i128.pow(crate::decimal::SCALE);
        i64::try_from(div_round_half_away(num, den)).ok()
    }
}

/// What the IIN table knows about a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IinInfo {
    /// Network.
    pub brand: String,
    /// Issuing country, when known.
    pub country: Option<String>,
    /// Funding type.
    pub funding: String,
}

/// IIN (BIN) table: configured rows by longest prefix, then (unless replaced) the built-in
/// network ranges and test-card countries of `pay_core::card`.
#[derive(Debug, Clone)]
pub struct IinTable {
    rows: Vec<IinEntry>,
    builtin: bool,
}

impl IinTable {
    fn new(o: &Overrides<IinEntry>) -> Result<IinTable, ConfigError> {
        for r in &o.entries {
            if r.prefix.is_empty() || r.prefix.len() > 9 || !r.prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::Invalid(format!(
                    "iin prefix `{}` must be 1–9 digits",
                    r.prefix
                )));
            }
        }
        let mut rows = o.entries.clone();
        rows.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(IinTable {
            rows,
            builtin: o.mode == Mode::Extend,
        })
    }

    /// Looks up a BIN (first six or more digits).
    pub fn lookup(&self, bin: &str) -> Option<IinInfo> {
        if let Some(r) = self.rows.iter().find(|r| bin.starts_with(&r.prefix)) {
            return Some(IinInfo {
                brand: r.brand.clone(),
                country: Some(r.country.clone()),
                funding: r.funding.clone(),
            });
        }
        if !self.builtin || bin.is_empty() {
            return None;
        }
        let brand = CardBrand::detect(bin);
        let (country, funding) = pay_core::card::bin_info(bin);
        if brand == CardBrand::Unknown && country.is_none() {
            return None;
        }
        Some(IinInfo {
            brand: brand.as_str().to_owned(),
            country: country.map(str::to_owned),
            funding: funding.to_owned(),
        })
    }
}

/// An address as a 128-bit number; IPv4 is mapped into `::ffff:0:0/96`.
fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Parses `addr/len` into (network bits, prefix length in the 128-bit space).
pub fn parse_cidr(text: &str) -> Option<(u128, u8)> {
    let (addr, len) = text.split_once('/')?;
    let ip: IpAddr = addr.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok()?;
    let len = match ip {
        IpAddr::V4(_) if len <= 32 => len + 96,
        IpAddr::V6(_) if len <= 128 => len,
        _ => return None,
    };
    let mask = prefix_mask(len);
    Some((ip_bits(ip) & mask, len))
}

fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Built-in IP ranges. Documentation ranges (RFC 5737, RFC 3849) are mapped to fixed countries
/// so tests and the simulator can place clients; the rest are a few well-known allocations.
const BUILTIN_IP_RANGES: &[(&str, &str)] = &[
    ("192.0.2.0/24", "US"),
    ("198.51.100.0/24", "GB"),
    ("203.0.113.0/24", "DE"),
    ("2001:db8::/33", "US"),
    ("2001:db8:8000::/33", "FR"),
    ("8.8.8.0/24", "US"),
    ("1.1.1.0/24", "AU"),
    ("81.2.69.0/24", "GB"),
    ("89.160.20.0/24", "SE"),
    ("175.16.199.0/24", "CN"),
    ("216.160.83.0/24", "US"),
    ("67.43.156.0/24", "BT"),
    ("202.196.224.0/20", "PH"),
    ("2a02:cf40::/29", "NO"),
    ("240e::/20", "CN"),
    ("2003::/19", "DE"),
];

/// IP → country by longest matching prefix (IPv4, IPv6 and v4-mapped IPv6 alike).
#[derive(Debug, Clone)]
pub struct IpTable {
    /// (network, prefix length, country), longest prefix first.
    rows: Vec<(u128, u8, String)>,
}

impl IpTable {
    fn new(o: &Overrides<IpRangeEntry>) -> Result<IpTable, ConfigError> {
        let mut rows: Vec<(u128, u8, String)> = vec![];
        for e in &o.entries {
            let (net, len) = parse_cidr(&e.cidr)
                .ok_or_else(|| ConfigError::Invalid(format!("ip range `{}` is not a CIDR", e.cidr)))?;
            rows.push((net, len, e.country.clone()));
        }
        if o.mode == Mode::Extend {
            for (cidr, country) in BUILTIN_IP_RANGES {
                if let Some((net, len)) = parse_cidr(cidr) {
                    if !rows.iter().any(|r| r.0 == net && r.1 == len) {
                        rows.push((net, len, (*country).to_owned()));
                    }
                }
            }
        }
        // Stable: configured rows stay ahead of built-in ones of the same length.
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        Ok(IpTable { rows })
    }

    /// The country of `ip`, when a range covers it.
    pub fn country(&self, ip: IpAddr) -> Option<&str> {
        let bits = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ip_bits(IpAddr::V4(v4)),
                None => ip_bits(ip),
            },
            v4 => ip_bits(v4),
        };
        self.rows
            .iter()
            .find(|(net, len, _)| bits & prefix_mask(*len) == *net)
            .map(|r| r.2.as_str())
    }
}

const BUILTIN_DISPOSABLE: &[&str] = &[
    "10minutemail.com",
    "dispostable.com",
    "fakeinbox.com",
    "getnada.com",
    "guerrillamail.com",
    "mailinator.com",
    "maildrop.cc",
    "mintemail.com",
    "sharklasers.com",
    "temp-mail.org",
    "tempmail.com",
    "throwawaymail.com",
    "trashmail.com",
    "yopmail.com",
];

/// Disposable email domains (a domain and all its subdomains).
#[derive(Debug, Clone)]
pub struct DisposableDomains {
    domains: BTreeSet<String>,
}

impl DisposableDomains {
    fn new(o: &Overrides<String>) -> DisposableDomains {
        let mut domains: BTreeSet<String> = o.entries.iter().map(|d| d.trim().to_ascii_lowercase()).collect();
        if o.mode == Mode::Extend {
            domains.extend(BUILTIN_DISPOSABLE.iter().map(|d| (*d).to_owned()));
        }
        DisposableDomains { domains }
    }

    /// True when `domain` (lowercase) or one of its parents is listed.
    pub fn contains(&self, domain: &str) -> bool {
        let mut d = domain;
        loop {
            if self.domains.contains(d) {
                return true;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return false,
            }
        }
    }
}

/// The lowercase domain of an email address.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_loads_with_stripe_thresholds() {
        let c = FraudConfig::builtin();
        assert_eq!(
            c.thresholds,
            Thresholds {
                elevated: 65,
                highest: 75
            }
        );
        assert!(!c.version.is_empty());
    }

    #[test]
    fn fx_rounds_half_away_from_zero_in_integers() {
        let c = FraudConfig::from_yaml_str(&BUILTIN_YAML.replace("eur: \"1.08\"", "eur: \"1.005\"")).unwrap();
        let fx = &c.fx;
        assert_eq!(fx.to_usd_cents(Money::new(1234, Currency::USD)), Some(1234));
        // 1.00 EUR * 1.005 = 100.5 cents → 101; negative → -101.
        assert_eq!(
            fx.to_usd_cents(Money::new(100, Currency::parse("eur").unwrap())),
            Some(101)
        );
        assert_eq!(
            fx.to_usd_cents(Money::new(-100, Currency::parse("eur").unwrap())),
            Some(-101)
        );
        // 0.99 EUR * 1.005 = 99.495 → 99.
        assert_eq!(
            fx.to_usd_cents(Money::new(99, Currency::parse("eur").unwrap())),
            Some(99)
        );
        // Zero-decimal JPY: 1000 JPY * 0.0067 = 6.70 USD.
        assert_eq!(
            FraudConfig::builtin()
                .fx
                .to_usd_cents(Money::new(1000, Currency::parse("jpy").unwrap())),
            Some(670)
        );
        // Three-decimal KWD: 1.000 KWD * 3.25 = 325 cents.
        assert_eq!(
            FraudConfig::builtin()
                .fx
                .to_usd_cents(Money::new(1000, Currency::parse("kwd").unwrap())),
            Some(325)
        );
        assert_eq!(fx.to_usd_cents(Money::new(100, Currency::parse("xof").unwrap())), None);
    }

    #[test]
    fn iin_lookup_prefers_configured_rows() {
        let c = FraudConfig::builtin();
        let v = c.iin.lookup("424242").unwrap();
        assert_eq!(
            (v.brand.as_str(), v.country.as_deref(), v.funding.as_str()),
            ("visa", Some("US"), "credit")
        );
        assert_eq!(c.iin.lookup("400000760").unwrap().country.as_deref(), Some("BR"));
        assert_eq!(c.iin.lookup("999999"), None);
        let yaml = BUILTIN_YAML.to_owned()
            + "\niin:\n  mode: extend\n  entries:\n    - { prefix: \"424242\", brand: visa, country: GB, funding: debit }\n";
        let c = FraudConfig::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.iin.lookup("424242").unwrap().country.as_deref(), Some("GB"));
        assert_eq!(c.iin.lookup("555555").unwrap().brand, "mastercard");
        let yaml = BUILTIN_YAML.to_owned()
            + "\niin:\n  mode: replace\n  entries:\n    - { prefix: \"42\", brand: visa, country: FR, funding: credit }\n";
        let c = FraudConfig::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.iin.lookup("424242").unwrap().country.as_deref(), Some("FR"));
        assert_eq!(c.iin.lookup("555555"), None);
    }

    #[test]
    fn ip_longest_prefix_v4_v6_and_mapped() {
        let yaml = BUILTIN_YAML.to_owned()
            + "\nip_ranges:\n  mode: extend\n  entries:\n    - { cidr: \"192.0.2.128/25\", country: CA }\n    - { cidr: \"10.0.0.0/8\", country: NL }\n";
        let c = FraudConfig::from_yaml_str(&yaml).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.ip.country(ip("192.0.2.1")), Some("US"));
        assert_eq!(c.ip.country(ip("192.0.2.200")), Some("CA"));
        assert_eq!(c.ip.country(ip("::ffff:192.0.2.200")), Some("CA"));
        assert_eq!(c.ip.country(ip("10.255.0.1")), Some("NL"));
        assert_eq!(c.ip.country(ip("2001:db8::1")), Some("US"));
        assert_eq!(c.ip.country(ip("2001:db8:ffff::1")), Some("FR"));
        assert_eq!(c.ip.country(ip("172.16.0.1")), None);
        let yaml = BUILTIN_YAML.to_owned()
            + "\nip_ranges:\n  mode: replace\n  entries:\n    - { cidr: \"0.0.0.0/0\", country: ZZ }\n";
        let c = FraudConfig::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.ip.country(ip("192.0.2.1")), Some("ZZ"));
        assert_eq!(c.ip.country(ip("2001:db8::1")), None);
        assert!(parse_cidr("1.2.3.4/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
    }

    #[test]
    fn disposable_domains_match_subdomains() {
        let c = FraudConfig::builtin();
        assert!(c.disposable.contains("mailinator.com"));
        assert!(c.disposable.contains("eu.mailinator.com"));
        assert!(!c.disposable.contains("gmail.com"));
        assert!(!c.disposable.contains("com"));
        assert_eq!(email_domain("Jane@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(email_domain("nope"), None);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(FraudConfig::from_yaml_str("version: x").is_err());
        let bad = BUILTIN_YAML.replace("highest: 75", "highest: 60");
        assert!(matches!(FraudConfig::from_yaml_str(&bad), Err(ConfigError::Invalid(_))));
        let bad = BUILTIN_YAML.replace("eur: \"1.08\"", "eur: \"abc\"");
        assert!(FraudConfig::from_yaml_str(&bad).is_err());
    }
}
