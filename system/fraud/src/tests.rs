use super::*;
use pay_core::Currency;

fn ctx(attempt: &str) -> PaymentContext {
    let mut c = PaymentContext::new(
        attempt,
        "acct_1",
        Money::new(2_000, Currency::USD),
        Timestamp::from_secs(1_800_000_000),
    );
    c.card_fingerprint = Some("fp_1".into());
    c.card_bin = Some("424242".into());
    c.card_last4 = Some("4242".into());
    c.cvc_check = CvcCheck::Pass;
    c.ip = Some("192.0.2.10".parse().unwrap());
    c.customer_id = Some("cus_1".into());
    c.customer_created = Some(Timestamp::from_secs(1_700_000_000));
    c.email = Some("jane@example.com".into());
    c
}

fn known(n: u32) -> VelocityCounts {
    VelocityCounts {
        card_attempts_1h: Some(n),
        card_attempts_24h: Some(n),
        card_declines_1h: Some(0),
        card_declines_24h: Some(0),
        ip_attempts_1h: Some(n),
        ip_attempts_24h: Some(n),
        customer_distinct_cards_24h: Some(1),
        ip_distinct_cards_24h: Some(1),
    }
}

#[test]
fn an_ordinary_payment_is_normal_and_allowed() {
    let e = FraudEngine::builtin();
    let a = e.score(&ctx("pa_1"), &known(1), &RuleSet::radar_defaults(), &MemoryLists::new());
    assert_eq!(a.risk_level, RiskLevel::Normal, "{a:?}");
    assert!(a.risk_score < 30, "{a:?}");
    assert_eq!(
        a.outcome,
        Outcome {
            action: Action::Allow,
            rule: None
        }
    );
    assert_eq!(a.model_version, "2026-11-01");
    assert!(a.reasons.len() <= 3);
    assert!(a.reasons.windows(2).all(|w| w[0].contribution >= w[1].contribution));
}

#[test]
fn risky_signals_raise_the_score() {
    let e = FraudEngine::builtin();
    let base = e
        .score(&ctx("pa_1"), &known(1), &RuleSet::empty(), &MemoryLists::new())
        .risk_score;
    let mut c = ctx("pa_1");
    c.livemode = true;
    c.cvc_check = CvcCheck::Fail;
    c.ip = Some("203.0.113.9".parse().unwrap()); // DE, card is US
    c.email = Some("x@mailinator.com".into());
    let mut v = known(12);
    v.card_declines_1h = Some(9);
    let a = e.score(&c, &v, &RuleSet::radar_defaults(), &MemoryLists::new());
    assert!(a.risk_score > base);
    assert_eq!(a.risk_level, RiskLevel::Highest, "{a:?}");
    assert_eq!(a.outcome.action, Action::Block);
    assert_eq!(a.outcome.rule.as_ref().unwrap().id, "block_if_high_risk");
    assert_eq!(a.reasons.len(), 3);
    assert!(a.reasons.iter().any(|r| r.feature == "card_attempts_1h"));
    // The same payment in test mode stays below elevated (only test cards elicit levels),
    // but rules still see its facts.
    c.livemode = false;
    let lists = MemoryLists::new();
    let mut rs = RuleSet::radar_defaults();
    rs.add("v", "Review if :card_attempts_1h: > 10", &lists).unwrap();
    let a = e.score(&c, &v, &rs, &lists);
    assert_eq!((a.risk_score, a.risk_level), (64, RiskLevel::Normal));
    assert_eq!(a.outcome.rule.unwrap().id, "v");
}

#[test]
fn internal_addresses_are_no_address() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ] {
        assert_eq!(public_ip(ip.parse().unwrap()), None, "{ip}");
    }
    assert!(public_ip("192.0.2.1".parse().unwrap()).is_some());
    let mut c = ctx("pa_1");
    c.ip = "127.0.0.1".parse().ok();
    assert_eq!(c.observation().ip, None);
}

#[test]
fn stripe_test_cards_force_levels_in_test_mode_only() {
    let e = FraudEngine::builtin();
    let lists = MemoryLists::new();
    let with = |bin: &str, last4: &str, live: bool| {
        let mut c = ctx("pa_t");
        c.card_bin = Some(bin.into());
        c.card_last4 = Some(last4.into());
        c.livemode = live;
        c
    };
    let a = e.score(&with("410000", "0019", false), &known(1), &RuleSet::empty(), &lists);
    assert_eq!(
        (a.risk_level, a.test_card),
        (RiskLevel::Highest, Some(TestCard::AlwaysBlocked))
    );
    assert_eq!(a.outcome.action, Action::Block);
    // Always blocked, even past an Allow rule.
    let mut allow = RuleSet::empty();
    allow.add("a", "Allow if :risk_score: >= 0", &lists).unwrap();
    assert_eq!(
        e.score(&with("410000", "0019", false), &known(1), &allow, &lists)
            .outcome
            .action,
        Action::Block
    );
    let a = e.score(&with("400000", "4954", false), &known(1), &RuleSet::empty(), &lists);
    assert_eq!(a.risk_level, RiskLevel::Highest);
    assert!(a.risk_score >= 75);
    assert_eq!(a.outcome.action, Action::Allow);
    let a = e.score(
        &with("400000", "4954", false),
        &known(1),
        &RuleSet::radar_defaults(),
        &lists,
    );
    assert_eq!(a.outcome.action, Action::Block);
    let a = e.score(
        &with("400000", "9235", false),
        &known(1),
        &RuleSet::radar_defaults(),
        &lists,
    );
    assert_eq!(a.risk_level, RiskLevel::Elevated);
    assert!((65..75).contains(&a.risk_score));
    assert_eq!(a.outcome.action, Action::Review);
    let a = e.score(
        &with("410000", "0019", true),
        &known(1),
        &RuleSet::radar_defaults(),
        &lists,
    );
    assert_eq!(a.test_card, None);
    assert_eq!(a.risk_level, RiskLevel::Normal);
}

#[test]
fn facts_feed_rules() {
    let e = FraudEngine::builtin();
    let lists = MemoryLists::new();
    let mut rs = RuleSet::empty();
    rs.add(
        "geo",
        "Block if :card_country: != :ip_country: and :amount_in_usd: > 500",
        &lists,
    )
    .unwrap();
    rs.add(
        "meta",
        "Review if ::channel:: = 'phone' and :customer_age_days: < 400",
        &lists,
    )
    .unwrap();
    rs.add(
        "dom",
        "Review if :is_disposable_email: or :email_domain: = 'evil.test'",
        &lists,
    )
    .unwrap();
    let mut c = ctx("pa_1");
    c.ip = Some("::ffff:203.0.113.9".parse().unwrap());
    c.amount = Money::new(50_001, Currency::USD);
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule.unwrap().id, "geo");
    // 470 EUR * 1.08 = 507.60 USD.
    c.amount = Money::new(47_000, Currency::parse("eur").unwrap());
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule.unwrap().id, "geo");
    c.amount = Money::new(46_000, Currency::parse("eur").unwrap());
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule, None);
    c.metadata.insert("channel".into(), "phone".into());
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule, None); // customer is ~1157 days old
    c.customer_created = Some(Timestamp::from_secs(1_800_000_000 - 86_400 * 3));
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule.unwrap().id, "meta");
    c.metadata.clear();
    c.email = Some("Someone@Evil.TEST".into());
    assert_eq!(e.score(&c, &known(1), &rs, &lists).outcome.rule.unwrap().id, "dom");
}

#[test]
fn unknown_velocity_scores_without_velocity_rules_firing() {
    let e = FraudEngine::builtin();
    let lists = MemoryLists::new();
    let mut rs = RuleSet::empty();
    rs.add("v", "Block if :card_attempts_1h: > 10", &lists).unwrap();
    let a = e.score(&ctx("pa_1"), &VelocityCounts::unknown(), &rs, &lists);
    assert_eq!(a.outcome.action, Action::Allow);
    assert_eq!(a.velocity, VelocityCounts::unknown());
}
