//! One contract suite for the webhook queue, run against every backend: memory, remote (memory
//! served over loopback HTTP, as the simulator's db host) and PostgreSQL. Time is a manual clock
//! shared by the queue and the test, so visibility timeouts and delays are exact.

use pay_core::{AccountId, Env, Event, EventId, ManualClock, SeededEntropy, Timestamp};
use pay_queue::{FanOut, Mode, Outbox, Outgoing, Queue, QueueConfig, QueueError, StoreQueue};
use pay_store::memory::MemoryBackend;
use pay_store::{Backend, Db, Entity, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

type Guard = Option<Box<dyn std::any::Any + Send>>;

struct Fixture {
    backend: Arc<dyn Backend>,
    env: Env,
    clock: Arc<ManualClock>,
    _guard: Guard,
}

impl Fixture {
    fn db(&self) -> Db {
        Db::new(self.backend.clone(), self.env.clone())
    }

    fn queue(&self, name: &str, mode: Mode, max_receives: u32) -> StoreQueue {
        StoreQueue::new(
            self.db(),
            self.env.clone(),
            QueueConfig {
                name: name.into(),
                mode,
                visibility: Duration::from_secs(30),
                max_receives,
            },
        )
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn env() -> (Env, Arc<ManualClock>) {
    Env::deterministic("queue-contract", 7, Timestamp::from_secs(1_700_000_000))
}

async fn memory() -> Fixture {
    let (env, clock) = env();
    Fixture {
        backend: Arc::new(MemoryBackend::new()),
        env,
        clock,
        _guard: None,
    }
}

async fn remote() -> Fixture {
    use pay_net::Transport;
    let listener = pay_net::TcpTransport.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = pay_store::remote::router(Arc::new(MemoryBackend::new()));
    tokio::spawn(pay_net::serve(
        listener,
        app,
        pay_net::ServeOptions::default(),
        std::future::pending(),
    ));
    let http = pay_net::HttpClient::new(Arc::new(pay_net::TcpTransport));
    let client = pay_net::ServiceClient::new(http, "db", &format!("http://{addr}"), None);
    let (env, clock) = env();
    Fixture {
        backend: Arc::new(pay_store::remote::RemoteBackend::new(client)),
        env,
        clock,
        _guard: None,
    }
}

async fn postgres() -> Fixture {
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let (env, clock) = env();
    Fixture {
        backend: Arc::new(backend),
        env,
        clock,
        _guard: Some(Box::new(tdb)),
    }
}

fn msg(body: serde_json::Value) -> Outgoing {
    Outgoing {
        group: None,
        dedup: None,
        body,
        delay: Duration::ZERO,
    }
}

fn grouped(group: &str, n: i64) -> Outgoing {
    Outgoing {
        group: Some(group.into()),
        dedup: None,
        body: json!({"g": group, "n": n}),
        delay: Duration::ZERO,
    }
}

async fn visibility_timeout_redelivers_and_receipts_go_stale(f: Fixture) {
    let q = f.queue("std", Mode::Standard, 10);
    let ids = q.send(vec![msg(json!({"a": 1}))]).await.unwrap();
    assert_eq!(ids.len(), 1);

    let first = q.receive(10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message.id, ids[0]);
    assert_eq!(first[0].message.receive_count, 1);
    assert_eq!(first[0].message.body, json!({"a": 1}));
    assert!(q.receive(10).await.unwrap().is_empty(), "hidden while in flight");

    f.advance(29);
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "still hidden before the timeout"
    );
    f.advance(1);
    let second = q.receive(10).await.unwrap();
    assert_eq!(second.len(), 1, "redelivered after the visibility timeout");
    assert_eq!(second[0].message.receive_count, 2);

    assert_eq!(q.ack(&first[0].receipt).await, Err(QueueError::StaleReceipt));
    assert_eq!(
        q.nack(&first[0].receipt, Duration::ZERO).await,
        Err(QueueError::StaleReceipt)
    );
    assert_eq!(q.ack("msg_nothing:1").await, Err(QueueError::StaleReceipt));
    assert_eq!(q.ack("garbage").await, Err(QueueError::StaleReceipt));
    q.ack(&second[0].receipt).await.unwrap();
    assert_eq!(
        q.ack(&second[0].receipt).await,
        Err(QueueError::StaleReceipt),
        "acked twice"
    );

    f.advance(60);
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "an acknowledged message never returns"
    );
    let d = q.depth().await.unwrap();
    assert_eq!((d.visible, d.in_flight, d.delayed, d.dead), (0, 0, 0, 0));
}

async fn delays_nacks_and_extensions(f: Fixture) {
    let q = f.queue("delays", Mode::Standard, 10);
    q.send(vec![Outgoing {
        delay: Duration::from_secs(10),
        ..msg(json!("later"))
    }])
    .await
    .unwrap();
    assert_eq!(q.depth().await.unwrap().delayed, 1);
    assert!(q.receive(1).await.unwrap().is_empty(), "delayed send");
    f.advance(10);
    let r = q.receive(1).await.unwrap();
    assert_eq!(r.len(), 1);

    // A nack makes it deliverable again after the given delay, not before.
    q.nack(&r[0].receipt, Duration::from_secs(5)).await.unwrap();
    f.advance(4);
    assert!(q.receive(1).await.unwrap().is_empty());
    f.advance(1);
    let r = q.receive(1).await.unwrap();
    assert_eq!(r[0].message.receive_count, 2);

    // Extending keeps it hidden past the original timeout.
    f.advance(20);
    q.extend(&r[0].receipt, Duration::from_secs(30)).await.unwrap();
    f.advance(20);
    assert!(q.receive(1).await.unwrap().is_empty(), "extended");
    q.ack(&r[0].receipt).await.unwrap();

    // Extending a receipt whose visibility already lapsed is refused: someone else may hold it.
    q.send(vec![msg(json!("lapsed"))]).await.unwrap();
    let r = q.receive(1).await.unwrap();
    f.advance(31);
    assert_eq!(
        q.extend(&r[0].receipt, Duration::from_secs(30)).await,
        Err(QueueError::StaleReceipt)
    );
}

async fn dead_letters_after_max_receives_and_redrive(f: Fixture) {
    let q = f.queue("dlq", Mode::Standard, 3);
    let ids = q.send(vec![msg(json!("poison")), msg(json!("fine"))]).await.unwrap();
    for round in 1..=3 {
        let got = q.receive(10).await.unwrap();
        let poison = got.iter().find(|r| r.message.id == ids[0]).expect("poison delivered");
        assert_eq!(poison.message.receive_count, round);
        if round == 1 {
            let fine = got.iter().find(|r| r.message.id == ids[1]).unwrap();
            q.ack(&fine.receipt).await.unwrap();
        }
        f.advance(30);
    }
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "fourth receive dead-letters instead"
    );
    let d = q.depth().await.unwrap();
    assert_eq!((d.visible, d.dead), (0, 1));
    let letters = q.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.id, ids[0]);
    assert_eq!(letters[0].reason, "max_receives");

    q.redrive(&ids[0]).await.unwrap();
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    let again = q.receive(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.receive_count, 1, "redrive resets the count");

    // A consumer can dead-letter explicitly, with its reason.
    q.dead_letter(&again[0].receipt, "endpoint gone").await.unwrap();
    let letters = q.dead_letters(10).await.unwrap();
    assert_eq!(letters[0].reason, "endpoint gone");
    assert!(q.redrive("msg_unknown").await.is_err());
}

/// g1: 1, 2, 3 and g2: 1, 2, sent interleaved (g1 1, g1 2, g2 1, g1 3, g2 2).
async fn send_two_interleaved_groups(q: &StoreQueue) {
    q.send(vec![
        grouped("g1", 1),
        grouped("g1", 2),
        grouped("g2", 1),
        grouped("g1", 3),
        grouped("g2", 2),
    ])
    .await
    .unwrap();
}

async fn fifo_groups_are_ordered_with_one_in_flight(f: Fixture) {
    let q = f.queue("fifo", Mode::Fifo, 100);
    send_two_interleaved_groups(&q).await;
    let got = q.receive(10).await.unwrap();
    let heads: Vec<_> = got.iter().map(|r| r.message.body.clone()).collect();
    assert_eq!(
        heads,
        vec![json!({"g":"g1","n":1}), json!({"g":"g2","n":1})],
        "one head per group"
    );
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "nothing more while each group is in flight"
    );

    // g1's head fails and comes back: g1 stays blocked behind it, in order.
    let g1 = &got[0];
    let g2 = &got[1];
    q.nack(&g1.receipt, Duration::from_secs(5)).await.unwrap();
    q.ack(&g2.receipt).await.unwrap();
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.body, json!({"g":"g2","n":2}));
    q.ack(&got[0].receipt).await.unwrap();
    f.advance(5);
    let mut order = vec![];
    loop {
        let got = q.receive(10).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert_eq!(got.len(), 1, "only g1 is left");
        order.push(got[0].message.body["n"].as_i64().unwrap());
        q.ack(&got[0].receipt).await.unwrap();
    }
    assert_eq!(order, vec![1, 2, 3]);
}

async fn fifo_poison_head_is_dead_lettered_and_the_group_moves_on(f: Fixture) {
    let q = f.queue("fifo-dlq", Mode::Fifo, 2);
    q.send(vec![grouped("g", 1), grouped("g", 2)]).await.unwrap();
    for _ in 0..2 {
        let got = q.receive(10).await.unwrap();
        assert_eq!(got[0].message.body["n"], 1);
        f.advance(30);
    }
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.body["n"], 2, "the next message becomes the head");
    assert_eq!(q.depth().await.unwrap().dead, 1);
}

async fn standard_queue_delivers_in_parallel(f: Fixture) {
    let q = f.queue("par", Mode::Standard, 10);
    q.send((0..5).map(|i| grouped("same", i)).collect()).await.unwrap();
    assert_eq!(
        q.receive(10).await.unwrap().len(),
        5,
        "groups mean nothing in standard mode"
    );
}

async fn deduplication_ids_make_resends_harmless(f: Fixture) {
    let q = f.queue("dedup", Mode::Standard, 10);
    let with = |d: &str, body: serde_json::Value| Outgoing {
        dedup: Some(d.into()),
        ..msg(body)
    };
    let a = q.send(vec![with("evt_1/we_1", json!(1))]).await.unwrap();
    let b = q
        .send(vec![with("evt_1/we_1", json!(2)), with("evt_1/we_2", json!(3))])
        .await
        .unwrap();
    assert_eq!(a[0], b[0], "same dedup id, same message");
    assert_ne!(b[0], b[1]);
    assert_eq!(q.depth().await.unwrap().visible, 2);
    let got = q.receive(10).await.unwrap();
    let first = got.iter().find(|r| r.message.id == a[0]).unwrap();
    assert_eq!(first.message.body, json!(1), "the resend did not replace the payload");
    for r in &got {
        q.ack(&r.receipt).await.unwrap();
    }
    // Acknowledged within the window: still deduplicated.
    f.advance(3600);
    q.send(vec![with("evt_1/we_1", json!(4))]).await.unwrap();
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "no redelivery of an acknowledged dedup id"
    );

    // The same dedup id in another queue is another message.
    let other = f.queue("dedup-other", Mode::Standard, 10);
    other.send(vec![with("evt_1/we_1", json!(5))]).await.unwrap();
    assert_eq!(other.receive(10).await.unwrap().len(), 1);
}

async fn depth_counts_every_state(f: Fixture) {
    let q = f.queue("depth", Mode::Standard, 1);
    q.send(vec![msg(json!(1)), msg(json!(2)), msg(json!(3))]).await.unwrap();
    f.advance(7);
    q.send(vec![Outgoing {
        delay: Duration::from_secs(60),
        ..msg(json!(4))
    }])
    .await
    .unwrap();
    let got = q.receive(1).await.unwrap();
    assert_eq!(got.len(), 1);
    let d = q.depth().await.unwrap();
    assert_eq!((d.visible, d.in_flight, d.delayed, d.dead), (2, 1, 1, 0));
    assert_eq!(d.oldest_age_ms, 7_000);
    f.advance(30);
    // max_receives = 1: the timed-out message is dead-lettered on the next receive.
    let _ = q.receive(10).await.unwrap();
    assert_eq!(q.depth().await.unwrap().dead, 1);
}

async fn concurrent_receivers_get_each_message_once(f: Fixture) {
    let q = f.queue("conc", Mode::Standard, 10);
    let n = 240;
    for chunk in (0..n).collect::<Vec<i64>>().chunks(60) {
        q.send(chunk.iter().map(|i| msg(json!(i))).collect()).await.unwrap();
    }
    let mut tasks = vec![];
    for _ in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = vec![];
            loop {
                let got = q.receive(7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for r in got {
                    q.ack(&r.receipt).await.unwrap();
                    seen.push(r.message.body.as_i64().unwrap());
                }
            }
            seen
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "every message exactly once across receivers"
    );
}

/// Six receivers work through 4 groups × 25 messages of a FIFO queue in `mode`: no group is
/// ever held by two receivers (in `Fifo` mode, a receive also holds one message per group),
/// every message arrives once, and each group in send order.
async fn concurrent_fifo_receivers(f: Fixture, name: &str, mode: Mode, per_receive: u32) {
    let q = f.queue(name, mode, 10);
    let groups = ["a", "b", "c", "d"];
    let mut batch = vec![];
    for n in 0..25 {
        for g in groups {
            batch.push(grouped(g, n));
        }
    }
    q.send(batch).await.unwrap();
    // (groups held by some receiver, receive counter)
    let held = Arc::new(std::sync::Mutex::new((BTreeSet::<String>::new(), 0u64)));
    let mut tasks = vec![];
    for _ in 0..6 {
        let q = q.clone();
        let held = held.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(u64, usize, String, i64)> = vec![];
            let mut idle = 0;
            while idle < 20 {
                let got = q.receive(per_receive).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                let mine: BTreeSet<String> = got.iter().map(|r| r.message.group.clone().unwrap()).collect();
                if mode == Mode::Fifo {
                    assert_eq!(mine.len(), got.len(), "two messages of one group in flight");
                }
                let stamp = {
                    let mut state = held.lock().unwrap();
                    for g in &mine {
                        assert!(state.0.insert(g.clone()), "group {g} held by two receivers");
                    }
                    state.1 += 1;
                    state.1
                };
                for (i, r) in got.iter().enumerate() {
                    let g = r.message.group.clone().unwrap();
                    seen.push((stamp, i, g, r.message.body["n"].as_i64().unwrap()));
                }
                {
                    let mut state = held.lock().unwrap();
                    for g in &mine {
                        state.0.remove(g);
                    }
                }
                for r in got {
                    q.ack(&r.receipt).await.unwrap();
                }
            }
            seen
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 100, "every message delivered once");
    // A group's next messages are only received after its earlier ones were acknowledged, so
    // the receive stamps (then the position in the receive) order each group as received:
    // that must be send order.
    all.sort();
    let mut per_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, _, g, n) in all {
        per_group.entry(g).or_default().push(n);
    }
    for (g, ns) in per_group {
        assert_eq!(ns, (0..25).collect::<Vec<_>>(), "group {g} out of order");
    }
}

async fn concurrent_fifo_receivers_keep_one_in_flight_per_group(f: Fixture) {
    concurrent_fifo_receivers(f, "conc-fifo", Mode::Fifo, 4).await;
}

async fn concurrent_fifo_batch_receivers_hold_each_group_once(f: Fixture) {
    concurrent_fifo_receivers(f, "conc-fifo-batch", Mode::FifoBatch, 7).await;
}

async fn fifo_batch_takes_each_groups_run_in_order_and_holds_the_group(f: Fixture) {
    let q = f.queue("fifo-batch", Mode::FifoBatch, 100);
    send_two_interleaved_groups(&q).await;
    let first = q.receive(1).await.unwrap();
    assert_eq!(first.len(), 1, "the limit counts messages, not groups");
    assert_eq!(first[0].message.body, json!({"g":"g1","n":1}));
    assert!(
        q.receive(10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.message.group.as_deref() == Some("g2")),
        "g1 is held while its head is in flight"
    );
    // g2 is now in flight too; g1's head comes back at once and the rest of g1 follows it.
    q.nack(&first[0].receipt, Duration::ZERO).await.unwrap();
    let got = q.receive(10).await.unwrap();
    let bodies: Vec<_> = got.iter().map(|r| r.message.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![
            json!({"g":"g1","n":1}),
            json!({"g":"g1","n":2}),
            json!({"g":"g1","n":3})
        ],
        "a group's run, in send order"
    );
    assert!(q.receive(10).await.unwrap().is_empty(), "every group is held");

    // The receiver processes the run in order: 1 succeeds, 2 fails and is retried in 5 s, and
    // 3 is left in flight. Nothing of g1 may overtake 2.
    q.ack(&got[0].receipt).await.unwrap();
    q.nack(&got[1].receipt, Duration::from_secs(5)).await.unwrap();
    f.advance(5);
    let again = q.receive(10).await.unwrap();
    let g1: Vec<_> = again
        .iter()
        .filter(|r| r.message.group.as_deref() == Some("g1"))
        .collect();
    assert_eq!(g1.len(), 1, "3 is still in flight behind 2");
    assert_eq!(g1[0].message.body["n"], 2);
    q.ack(&g1[0].receipt).await.unwrap();
    f.advance(30);
    let rest: Vec<_> = q
        .receive(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.message.group.as_deref() == Some("g1"))
        .collect();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].message.body["n"], 3, "3 comes back once its visibility lapses");
}

async fn ack_all_acknowledges_a_batch_and_reports_a_stale_receipt(f: Fixture) {
    let q = f.queue("ack-all", Mode::Standard, 10);
    q.send((0..4).map(|i| msg(json!({"n": i}))).collect()).await.unwrap();
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 4);
    q.ack_all(&[got[0].receipt.clone(), got[1].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap().in_flight, 2);
    // 2's visibility lapses and it is received again: its first receipt is stale.
    f.advance(31);
    let again = q.receive(10).await.unwrap();
    assert_eq!(again.len(), 2);
    let err = q
        .ack_all(&[got[2].receipt.clone(), "not-a-receipt".into(), again[1].receipt.clone()])
        .await;
    assert!(err.is_err(), "a stale (or malformed) receipt is reported");
    let depth = q.depth().await.unwrap();
    assert_eq!(depth.in_flight, 1, "the current receipt was acknowledged anyway");
    q.ack_all(&[again[0].receipt.clone()]).await.unwrap();
    q.ack_all(&[]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().in_flight, 0);
}

/// A record type for committing transactions with events.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thing {
    id: String,
    account: String,
}

impl Entity for Thing {
    const TABLE: Table = Table::Customers;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_secs(1)
    }
}

fn event(seed: &SeededEntropy, account: &str, object: &str) -> Event {
    Event::new(
        EventId::generate(seed),
        &AccountId::parse(account).unwrap(),
        "customer.created",
        pay_core::JsonText::of(&json!({"id": object, "object": "customer"})).unwrap(),
        Timestamp::from_secs(1_700_000_000),
    )
}

async fn commit_with_event(db: &Db, seed: &SeededEntropy, account: &str, id: &str) -> String {
    let ev = event(seed, account, id);
    let ev_id = ev.id.to_string();
    let mut t = db.txn();
    t.insert(&Thing {
        id: id.into(),
        account: account.into(),
    });
    t.event(ev);
    db.commit(t).await.unwrap();
    ev_id
}

/// Fans out one pending batch into `q`: each event becomes one message in its account's group
/// (no dedup id, so only the outbox's marks can keep an event from being sent twice), except
/// events of `acct_quiet`, which become none. Returns how many events this call marked.
async fn fan_out_once(outbox: &Outbox, q: &StoreQueue, limit: u32) -> usize {
    let batch = outbox.pending(limit).await.unwrap();
    assert!(batch.unreadable.is_empty());
    let fan_outs = batch
        .events
        .iter()
        .map(|e| {
            let account = e.event.account.as_ref().unwrap().to_string();
            let messages = if account == "acct_quiet" {
                vec![]
            } else {
                vec![(
                    q,
                    Outgoing {
                        group: Some(account),
                        dedup: None,
                        body: json!({"id": e.event.id.as_str()}),
                        delay: Duration::ZERO,
                    },
                )]
            };
            FanOut { seq: e.seq, messages }
        })
        .collect();
    outbox.fan_out(fan_outs).await.unwrap().len()
}

async fn outbox_fan_out_sends_each_committed_event_once_in_commit_order(f: Fixture) {
    let db = f.db();
    let outbox = Outbox::new(db.clone(), f.env.clone());
    let seed = SeededEntropy::new(3, "fan-out");
    let mut committed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..60 {
        let account = ["acct_even", "acct_odd", "acct_quiet"][i % 3];
        let id = commit_with_event(&db, &seed, account, &format!("cus_{i}")).await;
        committed.entry(account.to_owned()).or_default().push(id);
    }
    // A transaction that fails has no event to fan out.
    let ghost = event(&seed, "acct_even", "cus_0");
    let ghost_id = ghost.id.to_string();
    let mut t = db.txn();
    t.insert(&Thing {
        id: "cus_0".into(),
        account: "acct_even".into(),
    });
    t.event(ghost);
    assert!(db.commit(t).await.is_err(), "duplicate insert must fail");

    // A batch read before the others fan out sends nothing once they have.
    let stale = outbox.pending(100).await.unwrap().events;
    assert_eq!(stale.len(), 60);

    let q = f.queue("deliveries", Mode::Fifo, 10);
    let mut consumers = vec![];
    for _ in 0..4 {
        let (outbox, q) = (outbox.clone(), q.clone());
        consumers.push(tokio::spawn(async move {
            let mut n = 0;
            // Several passes: a consumer that read events another one marked meanwhile
            // marks fewer than it read, and the events after them are still pending.
            for _ in 0..40 {
                n += fan_out_once(&outbox, &q, 7).await;
            }
            n
        }));
    }
    let mut marked = 0;
    for c in consumers {
        marked += c.await.unwrap();
    }
    assert_eq!(marked, 60, "concurrent fan-outs mark each event once");
    assert!(outbox.pending(100).await.unwrap().is_empty());
    let again = stale
        .iter()
        .map(|e| FanOut {
            seq: e.seq,
            messages: vec![(&q, msg(json!({"id": e.event.id.as_str()})))],
        })
        .collect();
    assert_eq!(
        outbox.fan_out(again).await.unwrap(),
        Vec::<i64>::new(),
        "a stale batch sends nothing"
    );

    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let batch = q.receive(10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            let id = r.message.body["id"].as_str().unwrap().to_owned();
            got.entry(r.message.group.clone().unwrap()).or_default().push(id);
            q.ack(&r.receipt).await.unwrap();
        }
    }
    committed.remove("acct_quiet");
    // Each group in commit order, each event once, the rolled-back one never.
    assert_eq!(got, committed);
    assert!(!got.values().flatten().any(|id| *id == ghost_id));

    // Later commits are fanned out by the next pass.
    commit_with_event(&db, &seed, "acct_odd", "cus_late").await;
    assert_eq!(fan_out_once(&outbox, &q, 100).await, 1);
    assert_eq!(fan_out_once(&outbox, &q, 100).await, 0);
}

macro_rules! contract {
    ($modname:ident, $factory:ident) => {
        mod $modname {
            use super::*;
            contract!(@tests $factory,
                visibility_timeout_redelivers_and_receipts_go_stale,
                delays_nacks_and_extensions,
                dead_letters_after_max_receives_and_redrive,
                fifo_groups_are_ordered_with_one_in_flight,
                fifo_poison_head_is_dead_lettered_and_the_group_moves_on,
                standard_queue_delivers_in_parallel,
                deduplication_ids_make_resends_harmless,
                depth_counts_every_state,
                concurrent_receivers_get_each_message_once,
                concurrent_fifo_receivers_keep_one_in_flight_per_group,
                fifo_batch_takes_each_groups_run_in_order_and_holds_the_group,
                concurrent_fifo_batch_receivers_hold_each_group_once,
                ack_all_acknowledges_a_batch_and_reports_a_stale_receipt,
                outbox_fan_out_sends_each_committed_event_once_in_commit_order);
        }
    };
    (@tests $factory:ident, $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($factory().await).await;
            }
        )*
    };
}

contract!(memory, memory);
contract!(remote, remote);
contract!(postgres, postgres);
