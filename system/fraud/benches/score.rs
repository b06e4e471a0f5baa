//! Score a payment and evaluate 50 rules: `cargo bench -p pay-fraud`.
//!
//! Criterion reports the mean; the p99 over individually timed runs is printed at the end.

use criterion::{criterion_group, criterion_main, Criterion};
use pay_core::{Currency, Money, Timestamp};
use pay_fraud::{CvcCheck, FraudEngine, MemoryLists, PaymentContext, RuleSet, VelocityCounts};
use std::hint::black_box;
use std::time::Instant;

fn fifty_rules(lists: &MemoryLists) -> RuleSet {
    let mut rs = RuleSet::radar_defaults();
    let templates = [
        "Block if :card_attempts_1h: > {n} and :card_declines_1h: > 3",
        "Review if :amount_in_usd: > {n}00 and :card_country: != :ip_country:",
        "Block if :email_domain: in @blocked_domains and :risk_score: > {n}",
        "Review if ::order_type:: = 'gift_card_{n}' or :customer_age_days: < 1",
        "Allow if :card_fingerprint: in @trusted_cards and :risk_score: < {n}",
        "Block if :ip_country: in ('KP', 'IR', 'X{n}') and not :livemode:",
        "Review if :cvc_check: = 'fail' and (:ip_attempts_1h: > {n} or :ip_distinct_cards_24h: >= 4)",
        "Block if :card_brand: = 'amex' and :card_funding: = 'prepaid' and :amount: > {n}.50",
    ];
    let mut i = 0;
    while rs.len() < 50 {
        let t = templates[i % templates.len()].replace("{n}", &(10 + i).to_string());
        rs.add(&format!("rule_{i}"), &t, lists).expect("bench rule compiles");
        i += 1;
    }
    rs
}

fn setup() -> (FraudEngine, PaymentContext, VelocityCounts, RuleSet, MemoryLists) {
    let mut lists = MemoryLists::new();
    lists.create("blocked_domains", false);
    lists.create("trusted_cards", true);
    for i in 0..1000 {
        lists.add("blocked_domains", &format!("spam{i}.test"));
        lists.add("trusted_cards", &format!("fp_{i}"));
    }
    let rules = fifty_rules(&lists);
    let mut ctx = PaymentContext::new(
        "pa_bench",
        "acct_1",
        Money::new(12_345, Currency::USD),
        Timestamp::from_secs(1_800_000_000),
    );
    ctx.card_fingerprint = Some("fp_x".into());
    ctx.card_bin = Some("424242".into());
    ctx.card_last4 = Some("4242".into());
    ctx.cvc_check = CvcCheck::Pass;
    ctx.ip = "198.51.100.7".parse().ok();
    ctx.customer_id = Some("cus_1".into());
    ctx.customer_created = Some(Timestamp::from_secs(1_790_000_000));
    ctx.email = Some("jane@example.com".into());
    ctx.metadata.insert("order_type".into(), "standard".into());
    let v = VelocityCounts {
        card_attempts_1h: Some(3),
        card_attempts_24h: Some(5),
        card_declines_1h: Some(1),
        card_declines_24h: Some(1),
        ip_attempts_1h: Some(3),
        ip_attempts_24h: Some(9),
        customer_distinct_cards_24h: Some(1),
        ip_distinct_cards_24h: Some(2),
    };
    (FraudEngine::builtin(), ctx, v, rules, lists)
}

fn bench(c: &mut Criterion) {
    let (engine, ctx, v, rules, lists) = setup();
    assert_eq!(rules.len(), 50);
    c.bench_function("score + 50 rules", |b| {
        b.iter(|| black_box(engine.score(black_box(&ctx), &v, &rules, &lists)))
    });
    let mut samples: Vec<u128> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            black_box(engine.score(black_box(&ctx), &v, &rules, &lists));
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let mean = samples.iter().sum::<u128>() / samples.len() as u128;
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "score + 50 rules over {} runs: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        mean as f64 / 1000.0,
        p(0.50) as f64 / 1000.0,
        p(0.99) as f64 / 1000.0,
        *samples.last().unwrap_or(&0) as f64 / 1000.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
