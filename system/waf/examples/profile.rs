//! Inspects the benchmark's typical 1 KB form request in a loop, for profilers that count
//! instructions (`valgrind --tool=callgrind`), which a loaded machine does not disturb:
//! `cargo build --release -p pay-waf --example profile && valgrind --tool=callgrind target/release/examples/profile 200`.

use pay_waf::{HttpRequest, Waf, WafConfig};
use std::hint::black_box;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    // `WAF_PROFILE_DISABLE=932230,942100`: the same without some rules, to see what they cost.
    let mut config = WafConfig::payment_api();
    if let Ok(ids) = std::env::var("WAF_PROFILE_DISABLE") {
        config.disabled_rules = ids.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let waf = Waf::new(config).expect("engine builds");
    let mut body = String::from(
        "amount=2000&currency=usd&payment_method=pm_1Q2w3E4r5T6y7U8i9O0p&confirm=true&capture_method=automatic\
         &description=Order+%231234+-+2x+T-shirt+%28size%3A+M%2FL%29&receipt_email=jenny.rosen%40example.com\
         &statement_descriptor_suffix=ORDER+1234&shipping%5Bname%5D=Jenny+Rosen\
         &shipping%5Baddress%5D%5Bline1%5D=12+O%27Connell+St%2C+Apt+%234&shipping%5Baddress%5D%5Bcity%5D=Dublin\
         &shipping%5Baddress%5D%5Bpostal_code%5D=D01+F5P2&shipping%5Baddress%5D%5Bcountry%5D=IE\
         &expand%5B%5D=latest_charge&expand%5B%5D=customer",
    );
    let mut i = 0;
    while body.len() < 1000 {
        body.push_str(&format!("&metadata%5Bline_{i}%5D=SKU-{i:04}+Cotton+tee+%28blue%29+x1"));
        i += 1;
    }
    let len = body.len().to_string();
    let req = HttpRequest {
        method: "POST",
        target: "/v1/payment_intents",
        version: "HTTP/1.1",
        headers: vec![
            ("Host", b"api.example.test"),
            ("User-Agent", b"Stripe/v1 PythonBindings/16.1.0"),
            ("Authorization", b"Bearer sk_test_6b86b273ff34fce19d6b804e"),
            ("Content-Type", b"application/x-www-form-urlencoded"),
            ("Accept", b"*/*"),
            ("Stripe-Version", b"2026-06-24.dahlia"),
            ("Idempotency-Key", b"5f1b1f0e-8f43-4e0e-a8a7-1c2d3e4f5a6b"),
            ("Content-Length", len.as_bytes()),
        ],
        body: body.as_bytes(),
    };
    // One inspection before the counted ones, so that a run with 0 rounds includes what the
    // first inspection does once (compiling the expressions it is the first to use): the
    // difference between two runs is then the steady-state cost of the extra inspections.
    let mut blocked = usize::from(black_box(waf.inspect(black_box(&req))).blocked);
    for _ in 0..rounds {
        blocked += usize::from(black_box(waf.inspect(black_box(&req))).blocked);
    }
    println!("{rounds} inspections (after one warm-up), {blocked} blocked");
}
