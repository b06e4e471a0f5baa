//! Fraud detection: scores a payment before the card network sees it.
//!
//! * [`FraudEngine::score`] is pure: payment context + velocity counts + rules + value lists →
//!   [`Assessment`] (risk score 0–99, level, the rule that fired and the top reasons).
//! * [`FraudEngine::assess`] first records the attempt in a [`VelocityStore`] and reads its
//!   counts (memory or PostgreSQL, one statement), then scores.
//! * The model is a documented logistic regression ([`model`]) whose weights live in a
//!   versioned YAML file ([`config`]). Stripe's test cards force risk levels in test mode.
//! * Rules are written in a Radar-like language ([`rules`]).
//! * [`service`] is the `fraud` role: an HTTP service over `pay-net` that payments calls, with
//!   CRUD for rules and value lists persisted in the store.
//!
//! No card number or CVC ever reaches this crate: the context carries the BIN, last four and
//! the keyed fingerprint only.

#![warn(missing_docs)]

pub mod config;
pub mod decimal;
pub mod model;
pub mod pg;
pub mod rules;
pub mod service;

pub mod velocity;

pub use config::{ConfigError, FraudConfig};
pub use rules::{
    compile_rule, parse_rule, Action, Attr, CompiledRule, Facts, MemoryLists, ParseError, Rule, RuleAst, RuleSet,
    ValueLists,
};
pub use velocity::{AttemptOutcome, MemoryVelocityStore, Observation, VelocityCounts, VelocityError, VelocityStore};

use decimal::Decimal;
use model::{log_count, log_prior, score_of, Features};
use pay_core::{Money, Timestamp};
use rules::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Result of the CVC check, as Stripe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CvcCheck {
    /// The issuer confirmed the CVC.
    Pass,
    /// The CVC was wrong.
    Fail,
    /// The issuer could not check it.
    Unavailable,
    /// No CVC was given, or it was not checked.
    #[default]
    Unchecked,
}

impl CvcCheck {
    /// Stripe's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CvcCheck::Pass => "pass",
            CvcCheck::Fail => "fail",
            CvcCheck::Unavailable => "unavailable",
            CvcCheck::Unchecked => "unchecked",
        }
    }
}

/// Everything fraud detection knows about a payment attempt. No card number, no CVC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentContext {
    /// The authorization attempt (`pa_…`); velocity is recorded once per attempt.
    pub attempt_id: String,
    /// Merchant account.
    pub account: String,
    /// Live or test mode (test cards force levels in test mode only).
    pub livemode: bool,
    /// Amount and currency.
    pub amount: Money,
    /// Keyed fingerprint of the card number.
    pub card_fingerprint: Option<String>,
    /// First six digits.
    pub card_bin: Option<String>,
    /// Last four digits.
    pub card_last4: Option<String>,
    /// Network (`visa`, …); looked up from the BIN when absent.
    pub card_brand: Option<String>,
    /// Issuing country; looked up from the BIN when absent.
    pub card_country: Option<String>,
    /// Funding; looked up from the BIN when absent.
    pub card_funding: Option<String>,
    /// CVC check result.
    #[serde(default)]
    pub cvc_check: CvcCheck,
    /// Client IP address (internal addresses such as 127.0.0.1 or 10.x are ignored).
    pub ip: Option<IpAddr>,
    /// Customer id.
    pub customer_id: Option<String>,
    /// When the customer was created.
    pub customer_created: Option<Timestamp>,
    /// Customer email.
    pub email: Option<String>,
    /// The payment's metadata (for `::key::` rule references).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Now, from the caller's `Env`.
    pub now: Timestamp,
}

impl PaymentContext {
    /// A context with only the required fields set.
    pub fn new(attempt_id: &str, account: &str, amount: Money, now: Timestamp) -> PaymentContext {
        PaymentContext {
            attempt_id: attempt_id.to_owned(),
            account: account.to_owned(),
            livemode: false,
            amount,
            card_fingerprint: None,
            card_bin: None,
            card_last4: None,
            card_brand: None,
            card_country: None,
            card_funding: None,
            cvc_check: CvcCheck::Unchecked,
            ip: None,
            customer_id: None,
            customer_created: None,
            email: None,
            metadata: BTreeMap::new(),
            now,
        }
    }

    /// The velocity observation of this attempt.
    pub fn observation(&self) -> Observation {
        Observation {
            attempt_id: self.attempt_id.clone(),
            account: self.account.clone(),
            card: self.card_fingerprint.clone(),
            ip: self.ip.and_then(public_ip).map(|ip| ip.to_string()),
            customer: self.customer_id.clone(),
        }
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address if it can say anything about the client: loopback, private,
/// link-local, unspecified and documentation-free internal addresses (a proxy, a load
/// balancer, a test harness) are treated as no address.
pub fn public_ip(ip: IpAddr) -> Option<IpAddr> {
    let ip = canonical_ip(ip);
    let internal = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    (!internal).then_some(ip)
}

/// Risk levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Below the elevated threshold.
    Normal,
    /// Between the thresholds.
    Elevated,
    /// At or above the highest threshold.
    Highest,
}

impl RiskLevel {
    /// Stripe's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Normal => "normal",
            RiskLevel::Elevated => "elevated",
            RiskLevel::Highest => "highest",
        }
    }
}

/// The rule that decided an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredRule {
    /// Rule id.
    pub id: String,
    /// Rule text (canonical form).
    pub text: String,
}

/// What to do with the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Allow, block or review.
    pub action: Action,
    /// The rule that decided it, if one matched.
    pub rule: Option<FiredRule>,
}

/// One reason for a score: a feature and how much it added to the model's log-odds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Feature name (see [`model`]).
    pub feature: String,
    /// weight × value.
    pub contribution: f64,
}

/// Stripe's test cards that force a risk level in test mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestCard {
    /// 4100000000000019: highest risk, always blocked.
    AlwaysBlocked,
    /// 4000000000004954: highest risk.
    HighestRisk,
    /// 4000000000009235: elevated risk.
    ElevatedRisk,
}

impl TestCard {
    /// The test card with this BIN and last four, if any.
    pub fn detect(bin: &str, last4: &str) -> Option<TestCard> {
        match (bin, last4) {
            ("410000", "0019") => Some(TestCard::AlwaysBlocked),
            ("400000", "4954") => Some(TestCard::HighestRisk),
            ("400000", "9235") => Some(TestCard::ElevatedRisk),
            _ => None,
        }
    }
}

/// Fraud's verdict on a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// 0–99.
    pub risk_score: u8,
    /// Level from the thresholds.
    pub risk_level: RiskLevel,
    /// What to do and why.
    pub outcome: Outcome,
    /// Largest contributions first.
    pub reasons: Vec<Reason>,
    /// The model version that scored it.
    pub model_version: String,
    /// A test card that forced the level.
    pub test_card: Option<TestCard>,
    /// The velocity counts used.
    pub velocity: VelocityCounts,
}

/// Id of the built-in rule that blocks test card 4100000000000019.
pub const TEST_CARD_BLOCK_RULE: &str = "test_card_always_blocked";

/// The scoring engine: configuration with its tables, immutable after construction.
#[derive(Debug, Clone)]
pub struct FraudEngine {
    config: FraudConfig,
}

impl FraudEngine {
    /// An engine with `config`.
    pub fn new(config: &FraudConfig) -> FraudEngine {
        FraudEngine { config: config.clone() }
    }

    /// An engine with the built-in model.
    pub fn builtin() -> FraudEngine {
        FraudEngine::new(&FraudConfig::builtin())
    }

    /// The configuration.
    pub fn config(&self) -> &FraudConfig {
        &self.config
    }

    /// Records the attempt in `store`, reads its velocity counts and scores it. On a store
    /// failure the error is returned: the caller chooses between failing closed and scoring
    /// with [`VelocityCounts::unknown`].
    pub async fn assess(
        &self,
        store: &dyn VelocityStore,
        ctx: &PaymentContext,
        rules: &RuleSet,
        lists: &dyn ValueLists,
    ) -> Result<Assessment, VelocityError> {
        let counts = store.observe(&ctx.observation(), ctx.now).await?;
        Ok(self.score(ctx, &counts, rules, lists))
    }

    /// Scores a payment (pure).
    pub fn score(
        &self,
        ctx: &PaymentContext,
        velocity: &VelocityCounts,
        rules: &RuleSet,
        lists: &dyn ValueLists,
    ) -> Assessment {
        let c = &self.config;
        let derived = self.derive(ctx);
        let f = self.features(ctx, &derived, velocity);
        let contributions = c.weights.contributions(&f);
        let z = c.bias + contributions.iter().map(|(_, v)| v).sum::<f64>();
        let mut score = score_of(z);
        let test_card = if ctx.livemode {
            None
        } else {
            match (&ctx.card_bin, &ctx.card_last4) {
                (Some(b), Some(l)) => TestCard::detect(b, l),
                _ => None,
            }
        };
        match test_card {
            Some(TestCard::AlwaysBlocked) | Some(TestCard::HighestRisk) => {
                score = score.max(c.thresholds.highest.saturating_add(20).min(99));
            }
            Some(TestCard::ElevatedRisk) => {
                let mid = c.thresholds.elevated + (c.thresholds.highest - c.thresholds.elevated) / 2;
                if score < c.thresholds.elevated || score >= c.thresholds.highest {
                    score = mid;
                }
            }
            None if !ctx.livemode && c.test_mode_cap => {
                score = score.min(c.thresholds.elevated.saturating_sub(1));
            }
            None => {}
        }
        let risk_level = if score >= c.thresholds.highest {
            RiskLevel::Highest
        } else if score >= c.thresholds.elevated {
            RiskLevel::Elevated
        } else {
            RiskLevel::Normal
        };
        let mut reasons: Vec<Reason> = contributions
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(name, v)| Reason {
                feature: name.to_owned(),
                contribution: (v * 1000.0).round() / 1000.0,
            })
            .collect();
        reasons.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.feature.cmp(&b.feature))
        });
        reasons.truncate(c.max_reasons);

        let facts = self.facts(ctx, &derived, velocity, score, risk_level);
        let outcome = if test_card == Some(TestCard::AlwaysBlocked) {
            Outcome {
                action: Action::Block,
                rule: Some(FiredRule {
                    id: TEST_CARD_BLOCK_RULE.into(),
                    text: "Block if the card is the always-blocked test card 4100000000000019".into(),
                }),
            }
        } else {
            match rules.evaluate(&facts, lists) {
                Some(r) => Outcome {
                    action: r.compiled.action(),
                    rule: Some(FiredRule {
                        id: r.id.clone(),
                        text: r.text.clone(),
                    }),
                },
                None => Outcome {
                    action: Action::Allow,
                    rule: None,
                },
            }
        };
        Assessment {
            risk_score: score,
            risk_level,
            outcome,
            reasons,
            model_version: c.version.clone(),
            test_card,
            velocity: *velocity,
        }
    }

    fn derive(&self, ctx: &PaymentContext) -> Derived {
        let c = &self.config;
        let iin = ctx.card_bin.as_deref().and_then(|b| c.iin.lookup(b));
        let email = ctx.email.as_ref().map(|e| e.trim().to_lowercase());
        let email_domain = email.as_deref().and_then(config::email_domain);
        Derived {
            usd_cents: c.fx.to_usd_cents(ctx.amount),
            card_brand: ctx.card_brand.clone().or_else(|| iin.as_ref().map(|i| i.brand.clone())),
            card_country: ctx
                .card_country
                .clone()
                .or_else(|| iin.as_ref().and_then(|i| i.country.clone())),
            card_funding: ctx
                .card_funding
                .clone()
                .or_else(|| iin.as_ref().map(|i| i.funding.clone())),
            ip_country: ctx
                .ip
                .and_then(public_ip)
                .and_then(|ip| c.ip.country(ip))
                .map(str::to_owned),
            disposable: email_domain.as_deref().map(|d| c.disposable.contains(d)),
            email,
            email_domain,
            customer_age_days: match (&ctx.customer_id, ctx.customer_created) {
                (Some(_), Some(t)) => Some(ctx.now.millis().saturating_sub(t.millis()).max(0) / 86_400_000),
                _ => None,
            },
        }
    }

    fn features(&self, ctx: &PaymentContext, d: &Derived, v: &VelocityCounts) -> Features {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let extra = |x: Option<u32>| x.map(|n| f64::from(n.saturating_sub(1))).unwrap_or(0.0);
        Features {
            amount_usd: d.usd_cents.map(|c| (c.max(0) as f64 / 100.0).ln_1p()).unwrap_or(0.0),
            card_attempts_1h: log_prior(v.card_attempts_1h),
            card_attempts_24h: log_prior(v.card_attempts_24h),
            card_declines_1h: log_count(v.card_declines_1h),
            card_declines_24h: log_count(v.card_declines_24h),
            ip_attempts_1h: log_prior(v.ip_attempts_1h),
            ip_attempts_24h: log_prior(v.ip_attempts_24h),
            customer_distinct_cards_24h: extra(v.customer_distinct_cards_24h),
            ip_distinct_cards_24h: extra(v.ip_distinct_cards_24h),
            country_mismatch: flag(matches!((&d.card_country, &d.ip_country), (Some(a), Some(b)) if a != b)),
            cvc_fail: flag(ctx.cvc_check == CvcCheck::Fail),
            cvc_not_checked: flag(matches!(ctx.cvc_check, CvcCheck::Unavailable | CvcCheck::Unchecked)),
            new_customer: d.customer_age_days.map(|days| 1.0 / (1.0 + days as f64)).unwrap_or(0.0),
            guest_checkout: flag(ctx.customer_id.is_none()),
            disposable_email: flag(d.disposable == Some(true)),
            no_email: flag(d.email.is_none()),
            prepaid_card: flag(d.card_funding.as_deref() == Some("prepaid")),
            unknown_card_country: flag(d.card_country.is_none()),
            unknown_ip: flag(d.ip_country.is_none()),
        }
    }

    fn facts(&self, ctx: &PaymentContext, d: &Derived, v: &VelocityCounts, score: u8, level: RiskLevel) -> Facts {
        let s = |x: &Option<String>| x.clone().map(Value::Str);
        let n = |x: Option<u32>| x.map(|n| Value::Num(Decimal::from_int(i64::from(n))));
        let mut f = Facts::default();
        f.metadata = ctx.metadata.clone();
        f.set(Attr::RiskScore, Some(Value::Num(Decimal::from_int(i64::from(score)))));
        f.set(Attr::RiskLevel, Some(Value::Str(level.as_str().into())));
        f.set(
            Attr::Amount,
            Some(Value::Num(Decimal::from_minor(
                ctx.amount.amount,
                u32::from(ctx.amount.currency.exponent()),
            ))),
        );
        f.set(
            Attr::AmountInUsd,
            d.usd_cents.map(|c| Value::Num(Decimal::from_minor(c, 2))),
        );
        f.set(Attr::Currency, Some(Value::Str(ctx.amount.currency.code().into())));
        f.set(Attr::CardBrand, s(&d.card_brand));
        f.set(Attr::CardBin, s(&ctx.card_bin));
        f.set(Attr::CardLast4, s(&ctx.card_last4));
        f.set(Attr::CardCountry, s(&d.card_country));
        f.set(Attr::CardFunding, s(&d.card_funding));
        f.set(Attr::CardFingerprint, s(&ctx.card_fingerprint));
        f.set(Attr::CvcCheck, Some(Value::Str(ctx.cvc_check.as_str().into())));
        f.set(
            Attr::IpAddress,
            ctx.ip.map(|ip| Value::Str(canonical_ip(ip).to_string())),
        );
        f.set(Attr::IpCountry, s(&d.ip_country));
        f.set(Attr::Email, s(&d.email));
        f.set(Attr::EmailDomain, s(&d.email_domain));
        f.set(Attr::IsDisposableEmail, d.disposable.map(Value::Bool));
        f.set(Attr::Customer, s(&ctx.customer_id));
        f.set(
            Attr::CustomerAgeDays,
            d.customer_age_days.map(|a| Value::Num(Decimal::from_int(a))),
        );
        f.set(Attr::Livemode, Some(Value::Bool(ctx.livemode)));
        f.set(Attr::CardAttempts1h, n(v.card_attempts_1h));
        f.set(Attr::CardAttempts24h, n(v.card_attempts_24h));
        f.set(Attr::CardDeclines1h, n(v.card_declines_1h));
        f.set(Attr::CardDeclines24h, n(v.card_declines_24h));
        f.set(Attr::IpAttempts1h, n(v.ip_attempts_1h));
        f.set(Attr::IpAttempts24h, n(v.ip_attempts_24h));
        f.set(Attr::CustomerDistinctCards24h, n(v.customer_distinct_cards_24h));
        f.set(Attr::IpDistinctCards24h, n(v.ip_distinct_cards_24h));
        f
    }
}

/// Values computed from the context and the tables.
struct Derived {
    usd_cents: Option<i64>,
    card_brand: Option<String>,
    card_country: Option<String>,
    card_funding: Option<String>,
    ip_country: Option<String>,
    email: Option<String>,
    email_domain: Option<String>,
    disposable: Option<bool>,
    customer_age_days: Option<i64>,
}

#[cfg(test)]
mod tests;
