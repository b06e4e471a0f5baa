//! Money arithmetic: checked add/sub/mul, summing a basket, decimal parsing and formatting.
//! These run on every amount the API reads or writes, so they must stay in the nanoseconds.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pay_core::{Currency, Money};

fn money(c: &mut Criterion) {
    let usd = Currency::parse("usd").expect("usd is a currency");
    let a = Money::new(2_000, usd);
    let b = Money::new(1_999, usd);
    c.bench_function("money/checked_add", |bench| {
        bench.iter(|| black_box(a).checked_add(black_box(b)))
    });
    c.bench_function("money/checked_sub", |bench| {
        bench.iter(|| black_box(a).checked_sub(black_box(b)))
    });
    c.bench_function("money/checked_mul", |bench| {
        bench.iter(|| black_box(a).checked_mul(black_box(37)))
    });
    let basket: Vec<Money> = (0..100).map(|i| Money::new(i * 137, usd)).collect();
    c.bench_function("money/sum_100", |bench| {
        bench.iter(|| Money::sum(usd, black_box(&basket).iter().copied()))
    });
    c.bench_function("money/parse_decimal", |bench| {
        bench.iter(|| Money::parse_decimal(black_box("12345.67"), usd))
    });
    c.bench_function("money/to_decimal_string", |bench| {
        bench.iter(|| black_box(Money::new(1_234_567, usd)).to_decimal_string())
    });
}

criterion_group!(benches, money);
criterion_main!(benches);
