//! Runs loadgen for about two seconds against the whole stack started in-process the way
//! `paymentd dev` starts it (every role on loopback, in-memory stores, an ephemeral software
//! HSM), and checks that payments went through with no errors.

use loadgen::client::StripeClient;
use loadgen::report::Step;
use loadgen::run::{run, Mode, RunConfig, Workload};
use loadgen::schedule::{Mix, Phases};
use pay_core::Env;
use pay_net::ratelimit::RateLimit;
use pay_store::memory::MemoryBackend;
use paymentd::local::{start_local, LocalOptions};
use paymentd::wiring::Tuning;
use std::sync::Arc;
use std::time::Duration;

async fn dev_stack() -> paymentd::local::LocalNode {
    let env = Env::real("loadgen-test");
    let hsm = Arc::new(pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
    let mut tuning = Tuning::default();
    // The default per-key and per-IP limits (100 and 200 requests/s) are meant for merchants,
    // not for a load test from one address with one key.
    let unlimited = RateLimit {
        per_second: 1e6,
        burst: 1e6,
    };
    tuning.api.key_rate = unlimited;
    tuning.api.ip_rate = unlimited;
    // Likewise the WAF's own per-IP and per-key buckets in front of the API (a release build
    // outruns them with four connections).
    let mut proxy = pay_waf::proxy::ProxyConfig::new("api");
    proxy.ip_rate = unlimited;
    proxy.key_rate = unlimited;
    tuning.waf_proxy = Some(proxy);
    start_local(LocalOptions {
        public_port: 0,
        env,
        store: Arc::new(MemoryBackend::new()),
        acquirer_store: Arc::new(MemoryBackend::new()),
        hsm,
        tuning,
        create_account: true,
        operator: Default::default(),
    })
    .await
    .expect("dev stack starts")
}

fn workload(decline: f64) -> Workload {
    Workload {
        mix: Mix::new(0.3, 0.2, decline).unwrap(),
        shares: (0.3, 0.2, decline),
        card: "4242424242424242".into(),
        unique_cards: decline > 0.0,
        decline_card: "4000000000000002".into(),
        amount: 2000,
        currency: "usd".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_closed_loop_against_the_dev_stack() {
    let node = dev_stack().await;
    let key = node.secret_key.as_ref().unwrap().expose().clone();
    let client = StripeClient::new(&node.public_url, &key, None, 32, Duration::from_secs(10)).unwrap();

    // Open loop, 1.5 s (0.5 s warmup), with manual captures, refunds and a few declines.
    let report = run(RunConfig {
        client: client.clone(),
        mode: Mode::Open {
            rate: 40.0,
            max_in_flight: 32,
        },
        phases: Phases {
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(1),
        },
        workload: workload(0.1),
        drain: Duration::from_secs(10),
    })
    .await
    .unwrap();
    eprintln!("{}", report.to_text());
    assert_eq!(report.error_count, 0, "errors: {:?}", report.errors);
    assert_eq!(report.flows_failed, 0);
    // 40 flows are due in the window; every one completes.
    assert_eq!(report.flows_ok, 40, "{}", report.to_text());
    assert_eq!(report.confirmed + report.expected_declines, 40);
    // 20 more flows ran in the warmup.
    assert_eq!(report.flows_run_total, 60);
    assert!(report.confirmed >= 30, "{}", report.to_text());
    assert!(report.expected_declines >= 1, "{}", report.to_text());
    for step in [Step::PaymentMethod, Step::Confirm, Step::Capture, Step::Refund] {
        let s = report.step(step).unwrap();
        assert!(s.count > 0, "no {} recorded", step.name());
        assert!(s.p50_ms > 0.0 && s.p99_ms >= s.p50_ms);
    }

    // Closed loop, 4 connections, about 0.5 s.
    let report = run(RunConfig {
        client,
        mode: Mode::Closed { connections: 4 },
        phases: Phases {
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
        },
        workload: workload(0.0),
        drain: Duration::from_secs(10),
    })
    .await
    .unwrap();
    eprintln!("{}", report.to_text());
    assert_eq!(report.error_count, 0, "errors: {:?}", report.errors);
    assert!(report.confirmed > 0);
    assert_eq!(report.expected_declines, 0);

    // What loadgen reported is what the server did: the payments are there.
    let check = StripeClient::new(&node.public_url, &key, None, 2, Duration::from_secs(10)).unwrap();
    let list = check.get("/v1/payment_intents?limit=100").await.unwrap();
    assert_eq!(list.status, 200);
    let data = list.json["data"].as_array().unwrap();
    assert!(data.iter().any(|pi| pi["status"] == "succeeded"));
    node.node.shutdown().await;
}
