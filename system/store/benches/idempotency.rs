//! The idempotency check every POST makes before it runs: `IdemBegin` on the in-memory backend
//! (the store of `paymentd dev` and of the simulator), for a new key, for a replay of a
//! completed key, and the whole begin + finish of a request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pay_core::Env;
use pay_store::memory::MemoryBackend;
use pay_store::model::{IdemBegin, IdemBeginOutcome};
use pay_store::Db;
use std::sync::Arc;

fn begin(key: &str, now: i64) -> IdemBegin {
    IdemBegin {
        account: "acct_bench".into(),
        key: key.into(),
        fingerprint: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        owner: "req_bench".into(),
        now,
        lock_timeout_ms: 30_000,
        expires_at: now + 86_400_000,
    }
}

fn idempotency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = Env::real("bench");
    let db = Db::new(Arc::new(MemoryBackend::new()), env);
    let now = 1_750_000_000_000;

    let mut n = 0u64;
    c.bench_function("idempotency/begin_new_key", |b| {
        b.iter(|| {
            n += 1;
            let out = rt.block_on(db.idem_begin(begin(&format!("new-{n}"), now)));
            assert!(matches!(out, Ok(IdemBeginOutcome::Started { .. })));
        })
    });

    rt.block_on(async {
        db.idem_begin(begin("done", now)).await.expect("begin");
        db.idem_finish(
            "acct_bench",
            "done",
            "req_bench",
            200,
            r#"{"id":"pi_123","object":"payment_intent"}"#,
        )
        .await
        .expect("finish");
    });
    c.bench_function("idempotency/begin_replay_completed", |b| {
        b.iter(|| {
            let out = rt.block_on(db.idem_begin(black_box(begin("done", now))));
            assert!(matches!(out, Ok(IdemBeginOutcome::Completed { .. })));
        })
    });

    let mut m = 0u64;
    c.bench_function("idempotency/begin_and_finish", |b| {
        b.iter(|| {
            m += 1;
            let key = format!("bf-{m}");
            rt.block_on(async {
                db.idem_begin(begin(&key, now)).await.expect("begin");
                db.idem_finish("acct_bench", &key, "req_bench", 200, "{}")
                    .await
                    .expect("finish");
            })
        })
    });
}

criterion_group!(benches, idempotency);
criterion_main!(benches);
