//! One contract suite, run against every storage backend: memory, remote (memory served over
//! loopback HTTP, as the simulator's db host) and PostgreSQL.

use pay_core::{AccountId, Env, Event, EventId, SeededEntropy, Timestamp};
use pay_store::memory::MemoryBackend;
use pay_store::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Widget {
    id: String,
    account: String,
    created: i64,
    color: Option<String>,
    size: Option<String>,
    n: i64,
}

impl Entity for Widget {
    const TABLE: Table = Table::Customers;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created)
    }
    fn k1(&self) -> Option<String> {
        self.color.clone()
    }
    fn k2(&self) -> Option<String> {
        self.size.clone()
    }
}

fn w(id: &str, account: &str, created: i64) -> Widget {
    Widget {
        id: id.into(),
        account: account.into(),
        created,
        color: None,
        size: None,
        n: 0,
    }
}

fn env() -> Env {
    Env::deterministic("contract", 1, Timestamp::from_secs(1_700_000_000)).0
}

fn event(seed: &SeededEntropy, account: &str, kind: &str, object_id: &str, created: i64) -> Event {
    let acct = AccountId::parse(account).unwrap();
    Event::new(
        EventId::generate(seed),
        &acct,
        kind,
        JsonText::of(&serde_json::json!({"id": object_id, "object": "widget"})).unwrap(),
        Timestamp::from_secs(created),
    )
}

async fn memory_db() -> (Db, Option<Box<dyn std::any::Any + Send>>) {
    (Db::new(Arc::new(MemoryBackend::new()), env()), None)
}

async fn remote_db() -> (Db, Option<Box<dyn std::any::Any + Send>>) {
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
    (
        Db::new(Arc::new(pay_store::remote::RemoteBackend::new(client)), env()),
        None,
    )
}

async fn pg_db() -> (Db, Option<Box<dyn std::any::Any + Send>>) {
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    (Db::new(Arc::new(backend), env()), Some(Box::new(tdb)))
}

/// A PostgreSQL store for the tests that also reach into its tables: the store, its pool, and
/// the guard that drops the throwaway database.
async fn pg_db_and_pool() -> (Db, pay_store::postgres::PgConnections, pay_store::testing::TestDatabase) {
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let pool = backend.pool().clone();
    (Db::new(Arc::new(backend), env()), pool, tdb)
}

async fn insert_get_and_conflicts(db: Db) {
    let mut t = db.txn();
    t.insert(&w("cus_a", "acct_1", 10));
    db.commit(t).await.unwrap();
    let got = db.get::<Widget>("cus_a").await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert_eq!(got.value, w("cus_a", "acct_1", 10));
    assert!(db.get::<Widget>("cus_missing").await.unwrap().is_none());
    assert!(db.get_owned::<Widget>("acct_other", "cus_a").await.unwrap().is_none());

    let mut t = db.txn();
    t.insert(&w("cus_a", "acct_1", 11));
    match db.commit(t).await {
        Err(StoreError::Conflict {
            kind: ConflictKind::Exists,
            ..
        }) => {}
        other => panic!("duplicate insert must conflict, got {other:?}"),
    }

    let mut updated = got.value.clone();
    updated.n = 5;
    let mut t = db.txn();
    t.update(1, &updated);
    db.commit(t).await.unwrap();
    let again = db.get::<Widget>("cus_a").await.unwrap().unwrap();
    assert_eq!((again.version, again.value.n), (2, 5));

    let mut t = db.txn();
    t.update(1, &updated);
    match db.commit(t).await {
        Err(StoreError::Conflict {
            kind: ConflictKind::VersionMismatch { expected: 1, actual: 2 },
            ..
        }) => {}
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let mut t = db.txn();
    t.update(1, &w("cus_nope", "acct_1", 1));
    assert!(matches!(
        db.commit(t).await,
        Err(StoreError::Conflict {
            kind: ConflictKind::Missing,
            ..
        })
    ));

    let mut t = db.txn();
    t.delete::<Widget>("cus_a", Some(1));
    assert!(matches!(db.commit(t).await, Err(StoreError::Conflict { .. })));
    let mut t = db.txn();
    t.delete::<Widget>("cus_a", Some(2));
    db.commit(t).await.unwrap();
    assert!(db.get::<Widget>("cus_a").await.unwrap().is_none());
}

async fn transactions_are_atomic_with_their_events(db: Db) {
    let seed = SeededEntropy::new(2, "ev");
    let mut t = db.txn();
    t.insert(&w("cus_b", "acct_1", 1));
    db.commit(t).await.unwrap();

    // One good insert, one stale update: nothing happens, no event appears.
    let mut t = db.txn();
    t.insert(&w("cus_c", "acct_1", 2));
    t.update(7, &w("cus_b", "acct_1", 1));
    t.event(event(&seed, "acct_1", "customer.created", "cus_c", 2));
    assert!(db.commit(t).await.is_err());
    assert!(db.get::<Widget>("cus_c").await.unwrap().is_none());
    let evs = db
        .list_events(EventQuery {
            account: "acct_1".into(),
            kind: None,
            object_id: None,
            created_gte: None,
            starting_after: None,
            ending_before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(evs.items.is_empty());

    // A check on a changed record also aborts.
    let mut t = db.txn();
    t.insert(&w("cus_c", "acct_1", 2));
    t.check::<Widget>("cus_b", 3);
    assert!(db.commit(t).await.is_err());
    assert!(db.get::<Widget>("cus_c").await.unwrap().is_none());

    // The same transaction submitted twice applies once: sent again under its id with its events
    // (a retry after a lost answer sends it whole), it changes nothing.
    let mut t = db.txn();
    t.insert(&w("cus_c", "acct_1", 2));
    t.check::<Widget>("cus_b", 1);
    let created = event(&seed, "acct_1", "customer.created", "cus_c", 2);
    t.event(created.clone());
    let id = t.id().to_owned();
    let req = match db.commit(t).await.unwrap() {
        CommitOutcome::Applied { event_seqs } => {
            assert_eq!(event_seqs.len(), 1);
            event_seqs
        }
        other => panic!("expected applied, got {other:?}"),
    };
    assert!(!req.is_empty());
    let resubmit = Txn {
        id,
        at: 0,
        ops: vec![],
        events: vec![created],
    };
    match db.execute(Request::Commit(resubmit)).await.unwrap() {
        Response::Committed {
            outcome: CommitOutcome::AlreadyApplied,
        } => {}
        other => panic!("resubmission must be a no-op, got {other:?}"),
    }
    let evs = db.events_since(0, 100).await.unwrap();
    assert_eq!(evs.items.len(), 1);

    // Another transaction carrying a stored event's id is not that event's transaction sent
    // again: it is refused whole, whether that event comes first or after a new one (the
    // PostgreSQL backend recognises a resubmission by its events, migration 0018).
    let stored = evs.items[0].event.clone();
    let fresh = event(&seed, "acct_1", "customer.created", "cus_d", 3);
    for events in [vec![stored.clone()], vec![fresh.clone(), stored.clone()]] {
        let mut t = db.txn();
        t.insert(&w("cus_d", "acct_1", 3));
        for e in events {
            t.event(e);
        }
        let answer = db.commit(t).await;
        assert!(matches!(answer, Err(StoreError::Invalid(_))), "{answer:?}");
        assert!(db.get::<Widget>("cus_d").await.unwrap().is_none());
        let evs = db.events_since(0, 100).await.unwrap();
        assert_eq!(evs.items.len(), 1, "a refused transaction stores none of its events");
    }
}

async fn pagination_newest_first(db: Db) {
    for i in 0..25i64 {
        let mut x = w(&format!("cus_{i:02}"), "acct_1", 1000 + i);
        x.color = Some(if i % 2 == 0 { "red".into() } else { "blue".into() });
        x.size = Some(format!("s{}", i % 3));
        let mut t = db.txn();
        t.insert(&x);
        t.insert(&w(&format!("cus_other{i:02}"), "acct_2", 1000 + i));
        db.commit(t).await.unwrap();
    }
    let q = |after: Option<&str>, before: Option<&str>, limit: u32| ListQuery {
        table: Table::Customers,
        account: "acct_1".into(),
        filter: None,
        created_gte: None,
        created_lt: None,
        starting_after: after.map(str::to_owned),
        ending_before: before.map(str::to_owned),
        limit,
    };
    let ids = |p: &Page<Versioned<Widget>>| p.items.iter().map(|v| v.value.id.clone()).collect::<Vec<_>>();
    let p1 = db.list::<Widget>(q(None, None, 10)).await.unwrap();
    assert_eq!(ids(&p1).first().unwrap(), "cus_24");
    assert_eq!(ids(&p1).last().unwrap(), "cus_15");
    assert!(p1.has_more);
    let p2 = db.list::<Widget>(q(Some("cus_15"), None, 10)).await.unwrap();
    assert_eq!(
        ids(&p2),
        (5..15).rev().map(|i| format!("cus_{i:02}")).collect::<Vec<_>>()
    );
    let p3 = db.list::<Widget>(q(Some("cus_05"), None, 10)).await.unwrap();
    assert_eq!(p3.items.len(), 5);
    assert!(!p3.has_more);
    // ending_before gives the page just newer than the cursor, still newest first.
    let back = db.list::<Widget>(q(None, Some("cus_05"), 3)).await.unwrap();
    assert_eq!(ids(&back), vec!["cus_08", "cus_07", "cus_06"]);
    assert!(back.has_more);
    let top = db.list::<Widget>(q(None, Some("cus_22"), 5)).await.unwrap();
    assert_eq!(ids(&top), vec!["cus_24", "cus_23"]);
    assert!(!top.has_more);
    // Filters and ranges.
    let mut fq = q(None, None, 100);
    fq.filter = Some((Index::K1, "red".into()));
    assert_eq!(db.list::<Widget>(fq).await.unwrap().items.len(), 13);
    let mut rq = q(None, None, 100);
    rq.created_gte = Some(1010);
    rq.created_lt = Some(1015);
    assert_eq!(
        ids(&db.list::<Widget>(rq).await.unwrap()),
        vec!["cus_14", "cus_13", "cus_12", "cus_11", "cus_10"]
    );
    // Accounts are isolated, also for cursors.
    assert!(db
        .list::<Widget>(ListQuery {
            account: "acct_3".into(),
            ..q(None, None, 10)
        })
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(db
        .list::<Widget>(ListQuery {
            account: "acct_2".into(),
            ..q(Some("cus_05"), None, 10)
        })
        .await
        .is_err());
    // Secondary-index lookups, oldest first.
    let found = db.find::<Widget>(Some("acct_1"), Index::K2, "s0", 100).await.unwrap();
    assert_eq!(
        found.iter().map(|v| v.value.id.as_str()).collect::<Vec<_>>(),
        vec!["cus_00", "cus_03", "cus_06", "cus_09", "cus_12", "cus_15", "cus_18", "cus_21", "cus_24"]
    );
    assert_eq!(db.find::<Widget>(None, Index::K1, "blue", 3).await.unwrap().len(), 3);
}

async fn events_filter_and_page(db: Db) {
    let seed = SeededEntropy::new(3, "ev");
    let kinds = [
        "payment_intent.created",
        "payment_intent.succeeded",
        "charge.succeeded",
        "payment_intent_x.created",
    ];
    let mut ids = vec![];
    for i in 0..12i64 {
        let mut t = db.txn();
        let e = event(
            &seed,
            "acct_1",
            kinds[i as usize % 4],
            &format!("pi_{}", i % 3),
            1000 + i,
        );
        ids.push(e.id.to_string());
        t.event(e);
        t.event(event(&seed, "acct_2", "charge.succeeded", "ch_x", 1000 + i));
        db.commit(t).await.unwrap();
    }
    let q = EventQuery {
        account: "acct_1".into(),
        kind: None,
        object_id: None,
        created_gte: None,
        starting_after: None,
        ending_before: None,
        limit: 5,
    };
    let p = db.list_events(q.clone()).await.unwrap();
    assert_eq!(
        p.items.iter().map(|e| e.event.id.to_string()).collect::<Vec<_>>(),
        ids.iter().rev().take(5).cloned().collect::<Vec<_>>()
    );
    assert!(p.has_more);
    let next = db
        .list_events(EventQuery {
            starting_after: Some(ids[7].clone()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(next.items[0].event.id.to_string(), ids[6]);
    let prev = db
        .list_events(EventQuery {
            ending_before: Some(ids[7].clone()),
            limit: 2,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        prev.items.iter().map(|e| e.event.id.to_string()).collect::<Vec<_>>(),
        vec![ids[9].clone(), ids[8].clone()]
    );
    let wild = db
        .list_events(EventQuery {
            kind: Some("payment_intent.*".into()),
            limit: 100,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(wild.items.len(), 6, "prefix wildcard must not match payment_intent_x.*");
    let exact = db
        .list_events(EventQuery {
            kind: Some("charge.succeeded".into()),
            limit: 100,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 3);
    let obj = db
        .list_events(EventQuery {
            object_id: Some("pi_1".into()),
            limit: 100,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(obj.items.len(), 4);
    let recent = db
        .list_events(EventQuery {
            created_gte: Some(1010),
            limit: 100,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(recent.items.len(), 2);
    assert!(db.get_event("acct_1", &ids[3]).await.unwrap().is_some());
    assert!(
        db.get_event("acct_2", &ids[3]).await.unwrap().is_none(),
        "events are scoped by account"
    );
    let all = db.events_since(0, 1000).await.unwrap();
    assert_eq!(all.items.len(), 24);
    assert!(all.items.windows(2).all(|w| w[0].seq < w[1].seq));
    let tail = db.events_since(all.items[20].seq, 1000).await.unwrap();
    assert_eq!(tail.items.len(), 3);
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn begin(key: &str, owner: &str, fp: &str, now: i64) -> IdemBegin {
    IdemBegin {
        account: "acct_1".into(),
        key: key.into(),
        fingerprint: fp.into(),
        owner: owner.into(),
        now,
        lock_timeout_ms: 60_000,
        expires_at: now + 86_400_000,
    }
}

/// Lock ages and expiry are measured by the backend's clock where it has one (PostgreSQL),
/// else by the caller's; the test uses real time and short timeouts so both agree.
async fn idempotency_keys_follow_stripe(db: Db) {
    use IdemBeginOutcome::*;
    let t0 = wall_ms();
    assert_eq!(
        db.idem_begin(begin("k1", "req_a", "fp1", t0)).await.unwrap(),
        Started {
            resumed: false,
            recovery_point: None,
            taken_by: Some("req_a".into())
        }
    );
    assert_eq!(
        db.idem_begin(begin("k1", "req_b", "fp1", t0)).await.unwrap(),
        InProgress
    );
    assert_eq!(db.idem_begin(begin("k1", "req_b", "fp2", t0)).await.unwrap(), Mismatch);
    // A retried begin from the lock holder proceeds.
    assert!(matches!(
        db.idem_begin(begin("k1", "req_a", "fp1", t0)).await.unwrap(),
        Started { .. }
    ));
    db.idem_checkpoint("acct_1", "k1", "req_a", "created:pi_123")
        .await
        .unwrap();
    assert_eq!(
        db.idem_checkpoint("acct_1", "k1", "req_b", "x").await,
        Err(StoreError::NotOwner)
    );
    // After the lock timeout an abandoned request is taken over from its recovery point.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let short = |owner: &str| IdemBegin {
        lock_timeout_ms: 300,
        ..begin("k1", owner, "fp1", wall_ms())
    };
    assert_eq!(
        db.idem_begin(short("req_c")).await.unwrap(),
        Started {
            resumed: true,
            recovery_point: Some("created:pi_123".into()),
            // Still the use req_a took: ids derived from it stay the same.
            taken_by: Some("req_a".into())
        }
    );
    assert_eq!(
        db.idem_finish("acct_1", "k1", "req_a", 200, "{}").await,
        Err(StoreError::NotOwner)
    );
    db.idem_finish("acct_1", "k1", "req_c", 200, "{\"id\":\"pi_123\"}")
        .await
        .unwrap();
    assert_eq!(
        db.idem_begin(begin("k1", "req_d", "fp1", wall_ms())).await.unwrap(),
        Completed {
            status: 200,
            body: "{\"id\":\"pi_123\"}".into()
        }
    );
    assert_eq!(
        db.idem_begin(begin("k1", "req_d", "fp9", wall_ms())).await.unwrap(),
        Mismatch
    );
    // Keys are per account.
    let mut other = begin("k1", "req_e", "fp9", wall_ms());
    other.account = "acct_2".into();
    assert!(matches!(db.idem_begin(other).await.unwrap(), Started { .. }));
    // A released key (its request failed with a 5xx) is resumed by a retry with the same
    // parameters, as the same use; releasing twice is harmless.
    assert!(matches!(
        db.idem_begin(begin("k2", "req_f", "fp1", wall_ms())).await.unwrap(),
        Started { .. }
    ));
    db.idem_release("acct_1", "k2", "req_f").await.unwrap();
    db.idem_release("acct_1", "k2", "req_f").await.unwrap();
    assert_eq!(
        db.idem_begin(begin("k2", "req_g", "fp1", wall_ms())).await.unwrap(),
        Started {
            resumed: true,
            recovery_point: None,
            taken_by: Some("req_f".into())
        }
    );
    assert_eq!(
        db.idem_begin(begin("k2", "req_g2", "fp1", wall_ms())).await.unwrap(),
        InProgress
    );
    // Released again, and retried with other parameters: a new request under the key.
    db.idem_release("acct_1", "k2", "req_g").await.unwrap();
    assert_eq!(
        db.idem_begin(begin("k2", "req_g3", "fpX", wall_ms())).await.unwrap(),
        Started {
            resumed: false,
            recovery_point: None,
            taken_by: Some("req_g3".into())
        }
    );
    assert_eq!(
        db.idem_begin(begin("k2", "req_g4", "fp1", wall_ms())).await.unwrap(),
        Mismatch
    );
    // Expired keys start afresh, even with other parameters.
    let now = wall_ms();
    let brief = IdemBegin {
        expires_at: now + 300,
        ..begin("k3", "req_h", "fp1", now)
    };
    assert!(matches!(db.idem_begin(brief).await.unwrap(), Started { .. }));
    db.idem_finish("acct_1", "k3", "req_h", 200, "{}").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        db.idem_begin(begin("k3", "req_i", "fpNEW", wall_ms())).await.unwrap(),
        Started {
            resumed: false,
            recovery_point: None,
            // A new use of the key: ids derived for it differ from the expired use's.
            taken_by: Some("req_i".into())
        }
    );
    // The reaper deletes expired keys.
    let now = wall_ms();
    let brief = IdemBegin {
        expires_at: now + 200,
        ..begin("k4", "req_j", "fp1", now)
    };
    assert!(matches!(db.idem_begin(brief).await.unwrap(), Started { .. }));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (keys, _) = db
        .reap(
            Timestamp::from_millis(wall_ms()),
            std::time::Duration::from_secs(86_400),
        )
        .await
        .unwrap();
    assert!(keys >= 1, "reaped {keys}");
    assert!(matches!(
        db.idem_begin(begin("k4", "req_k", "fp2", wall_ms())).await.unwrap(),
        Started { resumed: false, taken_by: Some(t), .. } if t == "req_k"
    ));
}

async fn concurrent_writers_one_winner(db: Db) {
    let mut t = db.txn();
    t.insert(&w("cus_race", "acct_1", 1));
    db.commit(t).await.unwrap();
    let mut handles = vec![];
    for i in 0..16 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut x = w("cus_race", "acct_1", 1);
            x.n = i;
            let mut t = db.txn();
            t.update(1, &x);
            db.commit(t).await.is_ok()
        }));
    }
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent update of version 1 may win");

    let mut handles = vec![];
    for i in 0..16 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            db.idem_begin(begin("race", &format!("req_{i}"), "fp", 5))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for h in handles {
        match h.await.unwrap() {
            IdemBeginOutcome::Started { .. } => started += 1,
            IdemBeginOutcome::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one concurrent first use of a key may run");
}

/// Reads racing each other answer as each would alone: each gets its own table's record at its
/// latest version, or none, whatever other reads of other tables and ids share its round trip
/// (PostgreSQL groups concurrent reads into one statement, `Reads` in postgres.rs).
async fn racing_reads_answer_as_if_alone(db: Db) {
    racing_reads_after(db, std::future::ready(())).await
}

/// [`racing_reads_answer_as_if_alone`], with `ready` awaited between writing the records and
/// asking for them.
async fn racing_reads_after(db: Db, ready: impl std::future::Future<Output = ()>) {
    const RECORDS: usize = 12;
    let tables = [
        Table::Customers,
        Table::PaymentIntents,
        Table::Charges,
        Table::VaultCards,
    ];
    let record = |table: Table, i: usize, version: i64| Record {
        id: format!("obj_read_{i}"),
        account: format!("acct_{}", i % 3),
        version,
        created: i as i64,
        k1: None,
        k2: None,
        body: JsonText::of(&serde_json::json!({"table": table.name(), "i": i, "version": version})).unwrap(),
    };
    let commit = |id: String, op: Op| {
        let db = db.clone();
        async move {
            let txn = Txn {
                id,
                at: 1,
                ops: vec![op],
                events: vec![],
            };
            db.execute(Request::Commit(txn)).await.unwrap();
        }
    };
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i % tables.len() != t) {
            let record_v1 = record(*table, i, 0);
            commit(
                format!("txn_read_{t}_{i}"),
                Op::Insert {
                    table: *table,
                    record: record_v1,
                },
            )
            .await;
            if i % 2 == 0 {
                let update = Op::Update {
                    table: *table,
                    record: record(*table, i, 1),
                    expected_version: 1,
                };
                commit(format!("txn_read_{t}_{i}_again"), update).await;
            }
        }
    }
    ready.await;
    // Every table and id, each asked three times at once: one in four of them has no record.
    let asks: Vec<(Table, usize)> = (0..3)
        .flat_map(|_| tables.iter().flat_map(|t| (0..RECORDS).map(move |i| (*t, i))))
        .collect();
    let handles: Vec<_> = asks
        .iter()
        .map(|&(table, i)| {
            let db = db.clone();
            tokio::spawn(async move {
                db.execute(Request::Get {
                    table,
                    id: format!("obj_read_{i}"),
                })
                .await
            })
        })
        .collect();
    for ((table, i), h) in asks.into_iter().zip(handles) {
        let got = match h.await.unwrap() {
            Ok(Response::Record { record }) => record,
            other => panic!("{table:?} {i}: not a record answer: {other:?}"),
        };
        let t = tables.iter().position(|x| *x == table).unwrap();
        if i % tables.len() == t {
            assert!(got.is_none(), "{table:?} {i}: no such record, got {got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{table:?} {i}: record missing"));
        let version = if i % 2 == 0 { 2 } else { 1 };
        let want = record(table, i, version - 1);
        assert_eq!(
            (
                got.id.as_str(),
                got.account.as_str(),
                got.version,
                got.created,
                &got.body
            ),
            (
                want.id.as_str(),
                want.account.as_str(),
                version,
                want.created,
                &want.body
            ),
            "{table:?} {i}"
        );
    }
}

/// Commits racing each other answer as each would alone. Of two transactions inserting one id,
/// exactly one applies and the other conflicts without writing its other record or its event;
/// a transaction sent twice at once applies once; all events get distinct sequence numbers.
/// (PostgreSQL groups concurrent commits into shared database transactions, `pg_batch.rs`: this
/// is what that must not change.)
async fn racing_commits_answer_as_if_alone(db: Db) {
    const PAIRS: usize = 24;
    let seed = SeededEntropy::new(11, "race");
    let record = |id: &str| Op::Insert {
        table: Table::Customers,
        record: Record {
            id: id.into(),
            account: "acct_1".into(),
            version: 0,
            created: 1,
            k1: None,
            k2: None,
            body: JsonText::of(
                &serde_json::json!({"id": id, "account": "acct_1", "created": 1, "color": null, "size": null, "n": 0}),
            )
            .unwrap(),
        },
    };
    let mut jobs: Vec<Txn> = vec![];
    for i in 0..PAIRS {
        for side in 0..2 {
            jobs.push(Txn {
                id: format!("txn_race_{i}_{side}"),
                at: 1,
                ops: vec![record(&format!("cus_solo_{i}_{side}")), record(&format!("cus_dup_{i}"))],
                events: vec![event(&seed, "acct_1", "race.won", &format!("cus_dup_{i}"), 1)],
            });
        }
        // Three events: their sequence numbers must follow their order in the transaction.
        let twice = Txn {
            id: format!("txn_twice_{i}"),
            at: 1,
            ops: vec![record(&format!("cus_twice_{i}"))],
            events: ["twice.first", "twice.second", "twice.third"]
                .iter()
                .map(|kind| event(&seed, "acct_1", kind, &format!("cus_twice_{i}"), 1))
                .collect(),
        };
        jobs.push(twice.clone());
        jobs.push(twice);
    }
    let handles: Vec<_> = jobs
        .iter()
        .cloned()
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move { db.execute(Request::Commit(t)).await })
        })
        .collect();
    let mut answers = vec![];
    for h in handles {
        answers.push(match h.await.unwrap() {
            Ok(Response::Committed { outcome }) => Ok(outcome),
            Ok(other) => panic!("not a commit answer: {other:?}"),
            Err(e) => Err(e),
        });
    }
    let mut seqs = std::collections::BTreeSet::new();
    for (i, pair) in answers.chunks(4).enumerate() {
        let (race, twice) = pair.split_at(2);
        let won: Vec<usize> = (0..2)
            .filter(|&side| matches!(race[side], Ok(CommitOutcome::Applied { .. })))
            .collect();
        assert_eq!(won.len(), 1, "pair {i}: {race:?}");
        let (winner, loser) = (won[0], 1 - won[0]);
        assert!(
            matches!(&race[loser], Err(StoreError::Conflict { id, kind: ConflictKind::Exists, .. }) if *id == format!("cus_dup_{i}")),
            "pair {i}: {race:?}"
        );
        for (side, present) in [(winner, true), (loser, false)] {
            let solo = db.get::<Widget>(&format!("cus_solo_{i}_{side}")).await.unwrap();
            assert_eq!(
                solo.is_some(),
                present,
                "pair {i} side {side}: the record commits with its transaction"
            );
            let ev = &jobs[4 * i + side].events[0];
            let stored = db.get_event("acct_1", ev.id.as_str()).await.unwrap();
            assert_eq!(
                stored.is_some(),
                present,
                "pair {i} side {side}: the event commits with its transaction"
            );
        }
        let applied: Vec<&Vec<i64>> = twice
            .iter()
            .filter_map(|a| match a {
                Ok(CommitOutcome::Applied { event_seqs }) => Some(event_seqs),
                _ => None,
            })
            .collect();
        assert_eq!(applied.len(), 1, "twice {i}: {twice:?}");
        let events = &jobs[4 * i + 2].events;
        assert_eq!(applied[0].len(), events.len(), "twice {i}: {twice:?}");
        assert!(
            applied[0].windows(2).all(|w| w[0] < w[1]),
            "twice {i}: {:?}",
            applied[0]
        );
        for (seq, sent) in applied[0].iter().zip(events) {
            let page = db.events_since(seq - 1, 1).await.unwrap();
            let stored = page.items.first().expect("the event at its sequence number");
            assert_eq!(
                (stored.seq, stored.event.id.as_str()),
                (*seq, sent.id.as_str()),
                "twice {i}: each sequence number names the event in its place"
            );
        }
        assert!(
            twice.iter().any(|a| matches!(a, Ok(CommitOutcome::AlreadyApplied))),
            "twice {i}: {twice:?}"
        );
        let Ok(CommitOutcome::Applied { event_seqs }) = &race[winner] else {
            unreachable!("checked above")
        };
        for s in event_seqs.iter().chain(applied[0]) {
            assert!(seqs.insert(*s), "sequence number {s} given twice");
        }
    }
    assert_eq!(seqs.len(), 4 * PAIRS);
}

/// Key calls [`racing_key_calls_answer_as_if_alone`] makes: 8 racers for one key, then 4 for
/// each of 20 keys (take, a stranger's finish, finish or release, take again).
const RACING_KEY_CALLS: u64 = 8 + 4 * 20;

/// Idempotency-key calls racing each other answer as each would alone: of eight requests
/// taking one key at once exactly one starts; keys taken, finished and released at once by
/// their holders all end as their holder left them, and a stranger's finish changes nothing.
async fn racing_key_calls_answer_as_if_alone(db: Db) {
    use IdemBeginOutcome::*;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.idem_begin(begin("contested", &format!("req_{i}"), "fp", wall_ms()))
                    .await
            })
        })
        .collect();
    let mut started = 0;
    for r in racers {
        match r.await.unwrap().unwrap() {
            Started { .. } => started += 1,
            InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one of the racers takes the key");

    let holders: Vec<_> = (0..20)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let key = format!("k_{i}");
                let owner = format!("req_{i}");
                let begun = db.idem_begin(begin(&key, &owner, "fp", wall_ms())).await.unwrap();
                assert!(matches!(begun, Started { resumed: false, .. }), "{key}: {begun:?}");
                let stranger = db.idem_finish("acct_1", &key, "req_stranger", 200, "{}").await;
                assert_eq!(stranger, Err(StoreError::NotOwner), "{key}");
                if i % 2 == 0 {
                    db.idem_finish("acct_1", &key, &owner, 200, &format!("{{\"n\":{i}}}"))
                        .await
                        .unwrap();
                } else {
                    db.idem_release("acct_1", &key, &owner).await.unwrap();
                }
            })
        })
        .collect();
    for h in holders {
        h.await.unwrap();
    }
    for i in 0..20 {
        let again = db
            .idem_begin(begin(&format!("k_{i}"), "req_later", "fp", wall_ms()))
            .await
            .unwrap();
        if i % 2 == 0 {
            assert_eq!(
                again,
                Completed {
                    status: 200,
                    body: format!("{{\"n\":{i}}}")
                },
                "k_{i}"
            );
        } else {
            assert!(matches!(again, Started { resumed: true, .. }), "k_{i}: {again:?}");
        }
    }
}

/// Every backend answers the lookups a table has an index for and refuses the others as a
/// caller's bug, so a new lookup without its index fails here and in the simulator instead of
/// scanning a table in production.
async fn lookups_without_an_index_are_refused(db: Db) {
    let mut stored = w("cus_1", "acct_1", 10);
    stored.color = Some("red".into());
    let mut t = db.txn();
    t.insert(&stored);
    db.commit(t).await.unwrap();
    let found = db.find::<Widget>(Some("acct_1"), Index::K1, "red", 10).await.unwrap();
    assert_eq!(found.len(), 1, "a find on a declared index answers");
    for table in Table::ALL {
        for index in [Index::K1, Index::K2] {
            let req = Request::Find {
                table,
                account: None,
                index,
                value: "x".into(),
                limit: 1,
            };
            let answer = db.execute(req).await;
            if table.indexed(index) {
                assert!(
                    matches!(answer, Ok(Response::Records { .. })),
                    "{table} {index:?}: {answer:?}"
                );
            } else {
                assert!(
                    matches!(answer, Err(StoreError::Invalid(_))),
                    "{table} {index:?}: {answer:?}"
                );
            }
        }
        let list = ListQuery {
            table,
            account: "acct_1".into(),
            filter: Some((Index::K1, "x".into())),
            created_gte: None,
            created_lt: None,
            starting_after: None,
            ending_before: None,
            limit: 10,
        };
        let answer = db.execute(Request::List(list)).await;
        if table.listable() {
            assert!(matches!(answer, Ok(Response::Page { .. })), "{table}: {answer:?}");
        } else {
            assert!(matches!(answer, Err(StoreError::Invalid(_))), "{table}: {answer:?}");
        }
    }
    assert!(
        !Table::PaymentAttempts.indexed(Index::K1) && !Table::VaultCards.listable(),
        "the declaration this test relies on"
    );
}

macro_rules! contract {
    ($modname:ident, $factory:ident) => {
        mod $modname {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn insert_get_and_conflicts() {
                let (db, _guard) = $factory().await;
                super::insert_get_and_conflicts(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transactions_are_atomic_with_their_events() {
                let (db, _guard) = $factory().await;
                super::transactions_are_atomic_with_their_events(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pagination_newest_first() {
                let (db, _guard) = $factory().await;
                super::pagination_newest_first(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn events_filter_and_page() {
                let (db, _guard) = $factory().await;
                super::events_filter_and_page(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idempotency_keys_follow_stripe() {
                let (db, _guard) = $factory().await;
                super::idempotency_keys_follow_stripe(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers_one_winner() {
                let (db, _guard) = $factory().await;
                super::concurrent_writers_one_winner(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_commits_answer_as_if_alone() {
                let (db, _guard) = $factory().await;
                super::racing_commits_answer_as_if_alone(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_reads_answer_as_if_alone() {
                let (db, _guard) = $factory().await;
                super::racing_reads_answer_as_if_alone(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lookups_without_an_index_are_refused() {
                let (db, _guard) = $factory().await;
                super::lookups_without_an_index_are_refused(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_key_calls_answer_as_if_alone() {
                let (db, _guard) = $factory().await;
                super::racing_key_calls_answer_as_if_alone(db).await;
            }
        }
    };
}

contract!(memory, memory_db);
contract!(remote, remote_db);
contract!(postgres, pg_db);

/// A key taken before migration 0006 has no `taken_by`. A request in flight across the upgrade
/// must still resume what it started: its use stays without `taken_by`, whether it is resumed
/// after a crash or retried after a release, so callers keep deriving ids from the key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keys_from_before_0006_keep_deriving_from_the_key() {
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let t0 = wall_ms();
    sqlx::query(
        "INSERT INTO idempotency_keys (account, key, fingerprint, owner, locked_at, expires_at) \
         VALUES ('acct_1', 'old', 'fp1', 'req_old', $1, $2)",
    )
    .bind(t0 - 120_000)
    .bind(t0 + 86_400_000)
    .execute(backend.pool())
    .await
    .unwrap();
    let db = Db::new(Arc::new(backend), env());
    assert_eq!(
        db.idem_begin(begin("old", "req_new", "fp1", wall_ms())).await.unwrap(),
        IdemBeginOutcome::Started {
            resumed: true,
            recovery_point: None,
            taken_by: None
        }
    );
    db.idem_release("acct_1", "old", "req_new").await.unwrap();
    assert_eq!(
        db.idem_begin(begin("old", "req_newer", "fp1", wall_ms()))
            .await
            .unwrap(),
        IdemBeginOutcome::Started {
            resumed: true,
            recovery_point: None,
            taken_by: None
        }
    );
}

/// Migrating a database that already served requests starts a week in which new uses of keys
/// get no `taken_by`: a key released (deleted) before the upgrade and retried after it must
/// derive the ids its first run derived. A new database has no such week.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_new_uses_keep_deriving_from_the_key_in_the_week_after_0006() {
    let (db, pool, _tdb) = pg_db_and_pool().await;
    assert!(matches!(
        db.idem_begin(begin("fresh", "req_1", "fp1", wall_ms())).await.unwrap(),
        IdemBeginOutcome::Started { taken_by: Some(t), .. } if t == "req_1"
    ));
    sqlx::query("INSERT INTO store_settings (name, value) VALUES ('idem_legacy_until', $1)")
        .bind(wall_ms() + 3_600_000)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        db.idem_begin(begin("retried", "req_2", "fp1", wall_ms()))
            .await
            .unwrap(),
        IdemBeginOutcome::Started {
            resumed: false,
            recovery_point: None,
            taken_by: None
        }
    );
    sqlx::query("UPDATE store_settings SET value = $1 WHERE name = 'idem_legacy_until'")
        .bind(wall_ms() - 1)
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        db.idem_begin(begin("later", "req_3", "fp1", wall_ms())).await.unwrap(),
        IdemBeginOutcome::Started { taken_by: Some(t), .. } if t == "req_3"
    ));
}

/// Migration 0006 starts the week of `idem_legacy_until` only on a database that already served
/// requests. The test undoes 0006 by hand on a migrated database, adds an account, and applies
/// 0006 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_0006_starts_the_legacy_week_only_on_a_used_database() {
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let pool = backend.pool().clone();
    let legacy_until = || async {
        sqlx::query_scalar::<_, i64>("SELECT value FROM store_settings WHERE name = 'idem_legacy_until'")
            .fetch_optional(&pool)
            .await
            .unwrap()
    };
    assert_eq!(legacy_until().await, None, "a new database has no legacy week");
    sqlx::raw_sql(
        "DROP TABLE store_settings; \
         ALTER TABLE idempotency_keys DROP COLUMN taken_by; \
         DROP FUNCTION idem_begin(text, text, text, text, bigint, bigint); \
         CREATE FUNCTION idem_begin(text, text, text, text, bigint, bigint) RETURNS void LANGUAGE sql AS ''; \
         DROP FUNCTION idem_finish(text, text, text, integer, text); \
         DROP FUNCTION idem_release(text, text, text); \
         DELETE FROM _sqlx_migrations WHERE version = 6; \
         INSERT INTO accounts (id, account, version, created, body) VALUES ('acct_1', 'acct_1', 1, 0, '{}');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pay_store::postgres::MIGRATOR
        .run(&mut *pool.acquire().await.unwrap())
        .await
        .unwrap();
    let until = legacy_until().await.expect("a used database gets the legacy week");
    let week = until - wall_ms();
    assert!(
        (7 * 86_400_000 - 60_000..=7 * 86_400_000).contains(&week),
        "the week ends in {week} ms"
    );
}

/// Migration 0007 moves the webhook fan-out onto the outbox. Events an older version relayed into
/// the `webhook_events` queue but had not fanned out (the message live, or dead-lettered) go back
/// to the outbox; events whose message was acknowledged stay fanned out; the queue is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_0007_returns_unfanned_events_to_the_outbox() {
    let (db, pool, _tdb) = pg_db_and_pool().await;
    let seed = SeededEntropy::new(7, "0007");
    let mut ids = vec![];
    for (i, object) in ["cus_live", "cus_acked", "cus_dead", "cus_new"].iter().enumerate() {
        let mut t = db.txn();
        let e = event(&seed, "acct_1", "customer.created", object, i as i64);
        ids.push(e.id.to_string());
        t.event(e);
        db.commit(t).await.unwrap();
    }
    // Written as a version before migration 0016 wrote them: waiting with `relayed = false`.
    sqlx::raw_sql("DELETE FROM outbox_pending; UPDATE events SET relayed = false")
        .execute(&pool)
        .await
        .unwrap();
    // What the old relay left: the first three relayed, their messages in three states.
    for (id, state) in ids.iter().zip(["live", "acked", "dead"]) {
        sqlx::query("UPDATE events SET relayed = true WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO queue_messages (id, queue, grp, dedup, body, created, available_at, state) \
             VALUES ('msg_' || $1, 'webhook_events', 'acct_1', $1, '{}', 0, 0, $2)",
        )
        .bind(id)
        .bind(state)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 7")
        .execute(&pool)
        .await
        .unwrap();
    pay_store::postgres::MIGRATOR
        .run(&mut *pool.acquire().await.unwrap())
        .await
        .unwrap();
    let pending = match db.execute(Request::OutboxPending { limit: 10 }).await.unwrap() {
        Response::Pending { events, unreadable } if unreadable.is_empty() => events,
        other => panic!("unexpected {other:?}"),
    };
    let pending: Vec<String> = pending.into_iter().map(|e| e.event.id.to_string()).collect();
    assert_eq!(pending, vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE queue = 'webhook_events'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A waiting outbox row that is not an event this version can read is reported by its sequence
/// number instead of failing the read, so that it cannot hold back every later event; fanning it
/// out with no messages marks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreadable_outbox_rows_are_reported_not_fatal() {
    let (db, pool, _tdb) = pg_db_and_pool().await;
    let seed = SeededEntropy::new(8, "unreadable");
    let bad: i64 = sqlx::query_scalar(
        "INSERT INTO events (id, account, type, created, body) VALUES ('evt_bad', 'acct_1', 'x', 0, '{\"not\": \"an event\"}') RETURNING seq",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut t = db.txn();
    let good = event(&seed, "acct_1", "customer.created", "cus_1", 1);
    let good_id = good.id.to_string();
    t.event(good);
    db.commit(t).await.unwrap();
    let pending = || async {
        match db.execute(Request::OutboxPending { limit: 10 }).await.unwrap() {
            Response::Pending { events, unreadable } => (
                events
                    .into_iter()
                    .map(|e| (e.seq, e.event.id.to_string()))
                    .collect::<Vec<_>>(),
                unreadable,
            ),
            other => panic!("unexpected {other:?}"),
        }
    };
    let (events, unreadable) = pending().await;
    assert_eq!(unreadable, vec![bad]);
    assert_eq!(events.iter().map(|e| e.1.clone()).collect::<Vec<_>>(), vec![good_id]);
    let fan_out = Request::OutboxFanOut {
        now: 0,
        events: vec![
            FanOutEvent {
                seq: bad,
                messages: vec![],
            },
            FanOutEvent {
                seq: events[0].0,
                messages: vec![],
            },
        ],
    };
    match db.execute(fan_out).await.unwrap() {
        Response::FannedOut { seqs } => assert_eq!(seqs, vec![bad, events[0].0]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pending().await, (vec![], vec![]));
}

/// Migration 0016 moves waiting events into `outbox_pending`. Events written before it (as an
/// older `store_commit` wrote them, `relayed = false`) still wait: the fan-out reads both kinds
/// in sequence order within one limit, and sends each event once, whichever kind it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_from_before_0016_are_fanned_out_once_among_the_new_ones() {
    let (db, pool, _tdb) = pg_db_and_pool().await;
    let seed = SeededEntropy::new(16, "0016");
    // An event as a version before 0016 wrote it: `relayed` left false, no outbox_pending row.
    let legacy = |e: Event| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (id, account, type, created, body) VALUES ($1, 'acct_1', 'customer.created', 0, $2) RETURNING seq",
            )
            .bind(e.id.to_string())
            .bind(serde_json::to_value(&e).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let mut seqs = vec![legacy(event(&seed, "acct_1", "customer.created", "cus_old_1", 0)).await];
    for (i, id) in ["cus_a", "cus_b"].iter().enumerate() {
        let mut t = db.txn();
        t.event(event(&seed, "acct_1", "customer.created", id, i as i64));
        match db.commit(t).await.unwrap() {
            pay_store::CommitOutcome::Applied { event_seqs } => seqs.extend(event_seqs),
            other => panic!("unexpected {other:?}"),
        }
        if i == 0 {
            seqs.push(legacy(event(&seed, "acct_1", "customer.created", "cus_old_2", 0)).await);
        }
    }
    // The new write path: the event is written marked, with its row in outbox_pending.
    let (marked, waiting): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events WHERE relayed), (SELECT count(*) FROM outbox_pending)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((marked, waiting), (2, 2));
    let pending = |limit: u32| {
        let db = db.clone();
        async move {
            match db.execute(Request::OutboxPending { limit }).await.unwrap() {
                Response::Pending { events, unreadable } if unreadable.is_empty() => {
                    events.into_iter().map(|e| e.seq).collect::<Vec<i64>>()
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let fan_out = |batch: Vec<i64>| {
        let db = db.clone();
        async move {
            let events = batch
                .into_iter()
                .map(|seq| FanOutEvent { seq, messages: vec![] })
                .collect();
            match db.execute(Request::OutboxFanOut { now: 0, events }).await.unwrap() {
                Response::FannedOut { seqs } => seqs,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    // Old, new, old, new: one order, one limit over both kinds.
    assert_eq!(pending(10).await, seqs);
    assert_eq!(pending(2).await, seqs[..2].to_vec());
    assert_eq!(fan_out(seqs[..2].to_vec()).await, seqs[..2].to_vec());
    assert_eq!(pending(10).await, seqs[2..].to_vec());
    // A stale batch sends only what is still waiting.
    assert_eq!(fan_out(seqs[..3].to_vec()).await, vec![seqs[2]]);
    assert_eq!(fan_out(seqs.clone()).await, vec![seqs[3]]);
    assert_eq!(pending(10).await, Vec::<i64>::new());
    assert_eq!(fan_out(seqs.clone()).await, Vec::<i64>::new());
    let (unmarked, waiting): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events WHERE NOT relayed), (SELECT count(*) FROM outbox_pending)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((unmarked, waiting), (0, 0));
}

/// Migration 0008 gives every record table its own insert and update statement in
/// `store_commit`. Each table must insert, refuse a duplicate, update at its version, refuse a
/// stale or missing update, pass and fail a version check and delete, exactly as the other
/// tables do; a table whose branches are missing or name another table fails here.
///
/// Run twice: through migration 0017's `store_commit_framed` (the transaction without its
/// bodies, the bodies beside it), as this version commits, and through `store_commit` with the
/// bodies inside, as older versions still commit during a rolling upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_table_round_trips_through_store_commit() {
    every_table_round_trips(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_table_round_trips_through_store_commit_framed() {
    every_table_round_trips(true).await;
}

/// The SQLSTATE of a refusal from the database, if `err` is one.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string())
}

/// A transaction of the older wire form (bodies inside) as `store_commit_framed` takes it: the
/// bodies of its inserts and updates, then of its events, moved out in order.
fn framed(mut txn: serde_json::Value) -> (serde_json::Value, Vec<String>) {
    let mut bodies = vec![];
    for op in txn["ops"].as_array_mut().into_iter().flatten() {
        if matches!(op["op"].as_str(), Some("insert" | "update")) {
            if let Some(body) = op.as_object_mut().and_then(|o| o.remove("body")) {
                bodies.push(body.to_string());
            }
        }
    }
    for e in txn["events"].as_array_mut().into_iter().flatten() {
        if let Some(body) = e.as_object_mut().and_then(|o| o.remove("body")) {
            bodies.push(body.to_string());
        }
    }
    (txn, bodies)
}

async fn every_table_round_trips(through_framed: bool) {
    let (_db, pool, _tdb) = pg_db_and_pool().await;
    let mut n = 0;
    let mut commit = |ops: serde_json::Value| {
        n += 1;
        let txn = serde_json::json!({"id": format!("txn_{n}"), "at": n, "ops": ops, "events": []});
        let pool = pool.clone();
        async move {
            if through_framed {
                let (txn, bodies) = framed(txn);
                sqlx::query_scalar::<_, Option<Vec<i64>>>("SELECT store_commit_framed($1, $2)")
                    .bind(txn)
                    .bind(bodies)
                    .fetch_one(&pool)
                    .await
            } else {
                sqlx::query_scalar::<_, Option<Vec<i64>>>("SELECT store_commit($1)")
                    .bind(txn)
                    .fetch_one(&pool)
                    .await
            }
        }
    };
    let refusal = |r: Result<Option<Vec<i64>>, sqlx::Error>| match r {
        Err(sqlx::Error::Database(e)) => (
            e.code().map(|c| c.to_string()).unwrap_or_default(),
            e.message().to_string(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A refusal that must be a conflict (PY001): the conflict as store_commit reports it.
    let conflict = |r: Result<Option<Vec<i64>>, sqlx::Error>| {
        let (code, msg) = refusal(r);
        assert_eq!(code, "PY001", "{msg}");
        serde_json::from_str::<serde_json::Value>(&msg).unwrap()
    };
    for table in Table::ALL {
        let name = table.name();
        let write = |op: &str, k1: &str, body: serde_json::Value, expected: Option<i64>| {
            serde_json::json!({"op": op, "table": name, "id": "rec_1", "account": "acct_1",
                "created": 7, "k1": k1, "k2": null, "body": body, "expected": expected})
        };
        let bare = |op: &str, expected: Option<i64>| serde_json::json!({"op": op, "table": name, "id": "rec_1", "expected": expected});
        let row = || {
            let pool = pool.clone();
            let sql = format!("SELECT version, k1, k2, body FROM {name} WHERE id = 'rec_1'");
            async move {
                sqlx::query_as::<_, (i64, Option<String>, Option<String>, serde_json::Value)>(&sql)
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
            }
        };

        let first = serde_json::json!({"n": 1});
        assert_eq!(
            commit(serde_json::json!([write("insert", "a", first.clone(), None)]))
                .await
                .unwrap(),
            Some(vec![]),
            "{name}"
        );
        assert_eq!(row().await, Some((1, Some("a".into()), None, first.clone())), "{name}");
        let c = conflict(commit(serde_json::json!([write("insert", "b", first.clone(), None)])).await);
        assert_eq!(
            (c["table"].as_str(), c["kind"].as_str()),
            (Some(name), Some("exists")),
            "{c}"
        );

        let second = serde_json::json!({"n": 2});
        commit(serde_json::json!([write("update", "b", second.clone(), Some(1))]))
            .await
            .unwrap();
        assert_eq!(row().await, Some((2, Some("b".into()), None, second.clone())), "{name}");
        let c = conflict(commit(serde_json::json!([write("update", "c", first.clone(), Some(1))])).await);
        assert_eq!(
            (c["table"].as_str(), c["kind"].as_str(), c["actual"].as_i64()),
            (Some(name), Some("version_mismatch"), Some(2)),
            "{c}"
        );
        assert_eq!(
            row().await.map(|r| r.0),
            Some(2),
            "a refused update writes nothing ({name})"
        );

        commit(serde_json::json!([bare("check", Some(2))])).await.unwrap();
        let c = conflict(commit(serde_json::json!([bare("check", Some(1))])).await);
        assert_eq!(
            (c["table"].as_str(), c["kind"].as_str()),
            (Some(name), Some("version_mismatch")),
            "{c}"
        );
        commit(serde_json::json!([bare("delete", Some(2))])).await.unwrap();
        assert_eq!(row().await, None, "{name}");
        let c = conflict(commit(serde_json::json!([write("update", "d", second.clone(), Some(2))])).await);
        assert_eq!(
            (c["table"].as_str(), c["kind"].as_str()),
            (Some(name), Some("missing")),
            "{c}"
        );
    }
    let (code, _) = refusal(
        commit(
            serde_json::json!([{"op": "insert", "table": "events", "id": "x", "account": "a",
            "created": 1, "body": {}}]),
        )
        .await,
    );
    assert_eq!(code, "PY002", "only record tables are written");
    let (code, _) = refusal(commit(serde_json::json!([{"op": "upsert", "table": "customers", "id": "x"}])).await);
    assert_eq!(code, "PY002", "an unknown op is refused");
    if !through_framed {
        return;
    }
    // Bodies that do not match the writes and events, or are not JSON, write nothing.
    let write = serde_json::json!({"op": "insert", "table": "customers", "id": "cus_x", "account": "a", "created": 1});
    let event = serde_json::json!({"id": "evt_x", "account": "a", "type": "customer.created", "object_id": "cus_x", "created": 1});
    for (ops, events, bodies, code) in [
        (vec![write.clone()], vec![], vec![], "PY002"),
        (vec![write.clone()], vec![], vec!["{}", "{}"], "PY002"),
        (vec![write.clone()], vec![event.clone()], vec!["{}"], "PY002"),
        (vec![], vec![event.clone()], vec![], "PY002"),
        (vec![write.clone()], vec![event.clone()], vec!["{}", "{\"a\":"], "22P02"),
        (vec![write.clone()], vec![], vec!["{} {}"], "22P02"),
    ] {
        let txn = serde_json::json!({"id": "txn_bad", "at": 1, "ops": ops, "events": events});
        let (got, _) = refusal(
            sqlx::query_scalar::<_, Option<Vec<i64>>>("SELECT store_commit_framed($1, $2)")
                .bind(&txn)
                .bind(&bodies)
                .fetch_one(&pool)
                .await,
        );
        assert_eq!(got, code, "{txn} with {bodies:?}");
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customers WHERE id = 'cus_x') + (SELECT count(*) FROM events) \
         + (SELECT count(*) FROM store_txns WHERE id = 'txn_bad')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(written, 0, "a refused transaction writes nothing");
}

/// `jsonb` refused a body holding the escape of a NUL character (`\u0000`), and the queue's
/// message bodies, into which the webhook fan-out copies events, are still `jsonb`. Bodies
/// stored as `json` (migration 0017) are refused the same way, so such an event can never be
/// stored only to fail every fan-out after it; text that merely looks like the escape (a
/// backslash written as `\\` before `u0000`) is kept as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bodies_refuse_a_nul_character_as_jsonb_did() {
    let (db, pool, _tdb) = pg_db_and_pool().await;
    let seed = SeededEntropy::new(5, "nul");
    let mut nul = w("cus_nul", "acct_1", 1);
    nul.color = Some("red\0".into());
    let mut t = db.txn();
    t.insert(&nul);
    assert!(
        matches!(db.commit(t).await, Err(StoreError::Invalid(ref m)) if m.contains("22P05")),
        "a record holding NUL is refused"
    );
    let mut nul_event = event(&seed, "acct_1", "customer.created", "cus_ok", 1);
    nul_event.data.object = JsonText::of(&serde_json::json!({"id": "cus_ok", "note": "a\u{0}b"})).unwrap();
    let mut t = db.txn();
    t.insert(&w("cus_ok", "acct_1", 1));
    t.event(nul_event);
    assert!(
        matches!(db.commit(t).await, Err(StoreError::Invalid(ref m)) if m.contains("22P05")),
        "an event holding NUL is refused, and the record beside it with it"
    );
    let written: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM events)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(written, 0);

    let mut lookalike = w("cus_text", "acct_1", 2);
    lookalike.color = Some("C:\\u0000 and \\\\u0000".into());
    let mut t = db.txn();
    t.insert(&lookalike);
    t.event(event(&seed, "acct_1", "customer.created", "cus_text", 2));
    db.commit(t).await.unwrap();
    assert_eq!(db.get::<Widget>("cus_text").await.unwrap().unwrap().value, lookalike);
}

/// A batch of framed transactions (`store_commit_framed_batch`) hands each transaction the
/// bodies that follow those of the transactions before it, so a body never lands in another
/// transaction's record or event, whatever the others' counts, and one transaction's refusal
/// leaves the others' bodies where they belong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_framed_batches_give_each_transaction_its_own_bodies() {
    let (_db, pool, _tdb) = pg_db_and_pool().await;
    let insert =
        |id: &str| serde_json::json!({"op": "insert", "table": "customers", "id": id, "account": "a", "created": 1});
    let event = |id: &str| serde_json::json!({"id": id, "account": "a", "type": "customer.created", "object_id": "x", "created": 1});
    let txn = |id: &str, ops: Vec<serde_json::Value>, events: Vec<serde_json::Value>| {
        serde_json::json!({"id": id, "at": 1, "ops": ops, "events": events}).to_string()
    };
    let txns = vec![
        txn("t1", vec![insert("cus_1"), insert("cus_2")], vec![event("evt_1")]),
        txn("t2", vec![], vec![]),
        // Refused: cus_1 exists. Its bodies must not shift the next transaction's.
        txn("t3", vec![insert("cus_3"), insert("cus_1")], vec![]),
        txn("t4", vec![insert("cus_4")], vec![event("evt_4a"), event("evt_4b")]),
    ];
    let bodies: Vec<String> = [
        r#"{"b":"cus_1"}"#,
        r#"{"b":"cus_2"}"#,
        r#"{"b":"evt_1"}"#,
        r#"{"b":"cus_3"}"#,
        r#"{"b":"cus_1 again"}"#,
        r#"{"b":"cus_4","é":"ü ✓"}"#,
        r#"{"b":"evt_4a"}"#,
        r#"{"b":"evt_4b"}"#,
    ]
    .map(String::from)
    .to_vec();
    let answers: serde_json::Value = sqlx::query_scalar("SELECT store_commit_framed_batch($1, $2, $3)")
        .bind(&txns)
        .bind(&bodies)
        .bind(vec![3i32, 0, 2, 3])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(answers[0]["seqs"], serde_json::json!([1]), "{answers}");
    assert_eq!(answers[1]["seqs"], serde_json::json!([]), "{answers}");
    assert_eq!(answers[2]["code"], "PY001", "{answers}");
    assert_eq!(answers[3]["seqs"], serde_json::json!([2, 3]), "{answers}");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT id, body::text FROM customers UNION ALL SELECT id, body::text FROM events ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let want: Vec<(String, String)> = [
        ("cus_1", 0),
        ("cus_2", 1),
        ("cus_4", 5),
        ("evt_1", 2),
        ("evt_4a", 6),
        ("evt_4b", 7),
    ]
    .iter()
    .map(|(id, b)| (id.to_string(), bodies[*b].clone()))
    .collect();
    assert_eq!(stored, want, "each body as written, in its own record");
    // Counts that do not add up to the bodies refuse the whole batch.
    for counts in [vec![1i32], vec![0, 0], vec![2, -1], vec![1, 1]] {
        let err = sqlx::query("SELECT store_commit_framed_batch($1, $2, $3)")
            .bind(vec![txn("t5", vec![], vec![event("evt_5")]), txn("t6", vec![], vec![])])
            .bind(vec![r#"{"b":"evt_5"}"#.to_string()])
            .bind(&counts)
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("PY002"), "{counts:?}: {err}");
    }
    // The function a batch calls for each transaction (migration 0018) refuses a range of
    // bodies outside the array instead of reading absent ones.
    for (first, count) in [(-1i32, 1i32), (0, 2), (1, 1), (0, -1)] {
        let err = sqlx::query("SELECT store_commit_framed_at($1::jsonb, $2, $3, $4)")
            .bind(txn("t7", vec![], vec![event("evt_7")]))
            .bind(vec![r#"{"b":"evt_7"}"#.to_string()])
            .bind(first)
            .bind(count)
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("PY002"), "{first} {count}: {err}");
    }
}

/// Migration 0017 turns every body column into `json` and moves commits to
/// `store_commit_framed`. Records and events written before it read back as they were written;
/// an older node that keeps calling `store_commit` and `store_commit_batch` with the bodies
/// inside (a rolling upgrade) still writes what this version reads, and this version's framed
/// commits land beside both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_0017_keeps_bodies_and_older_writers() {
    let tdb = pay_store::testing::TestDatabase::create_migrated_to(Some(16))
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let pool = backend.pool().clone();
    let seed = SeededEntropy::new(17, "0017");
    // A transaction as versions before 0017 send it: bodies inside.
    let older_txn = |id: &str, widget: &Widget, event: &Event| {
        serde_json::json!({"id": id, "at": 1, "events": [
            {"id": event.id.as_str(), "account": "acct_1", "type": event.kind, "object_id": event.object_id(),
             "created": event.created, "body": event}],
         "ops": [{"op": "insert", "table": "customers", "id": widget.id, "account": widget.account,
             "created": widget.created, "k1": null, "k2": null, "body": widget}]})
    };
    let mut before = w("cus_before", "acct_1", 1);
    before.color = Some("naïve \"quoted\" ✓ \\ </script>".into());
    let evt_before = event(&seed, "acct_1", "customer.created", "cus_before", 1);
    sqlx::query("SELECT store_commit($1)")
        .bind(older_txn("txn_before", &before, &evt_before))
        .execute(&pool)
        .await
        .unwrap();

    pay_store::postgres::MIGRATOR
        .run(&mut *pool.acquire().await.unwrap())
        .await
        .unwrap();
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'body' AND data_type <> 'json' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        vec![("queue_messages".to_string(), "jsonb".to_string())],
        "every record table's and the events' bodies are json"
    );

    // An older node, still running during the upgrade, commits alone and in a batch.
    let older = w("cus_older", "acct_1", 2);
    let evt_older = event(&seed, "acct_1", "customer.created", "cus_older", 2);
    sqlx::query("SELECT store_commit($1)")
        .bind(older_txn("txn_older", &older, &evt_older))
        .execute(&pool)
        .await
        .unwrap();
    let batched = w("cus_batched", "acct_1", 3);
    let evt_batched = event(&seed, "acct_1", "customer.created", "cus_batched", 3);
    let answers: serde_json::Value = sqlx::query_scalar("SELECT store_commit_batch($1)")
        .bind(serde_json::json!([
            older_txn("txn_batched", &batched, &evt_batched),
            older_txn("txn_older", &older, &evt_older)
        ]))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(answers, serde_json::json!([{"seqs": [3]}, {"seqs": null}]));

    // This version commits framed.
    let db = Db::new(Arc::new(backend), env());
    let newer = w("cus_newer", "acct_1", 4);
    let evt_newer = event(&seed, "acct_1", "customer.created", "cus_newer", 4);
    let mut t = db.txn();
    t.insert(&newer);
    t.event(evt_newer.clone());
    db.commit(t).await.unwrap();

    for widget in [&before, &older, &batched, &newer] {
        let got = db.get::<Widget>(&widget.id).await.unwrap().unwrap();
        assert_eq!((got.version, &got.value), (1, widget), "{}", widget.id);
    }
    let pending = match db.execute(Request::OutboxPending { limit: 10 }).await.unwrap() {
        Response::Pending { events, unreadable } if unreadable.is_empty() => events,
        other => panic!("unexpected {other:?}"),
    };
    let pending: Vec<Event> = pending.into_iter().map(|e| e.event).collect();
    assert_eq!(pending, vec![evt_before, evt_older, evt_batched, evt_newer]);
}

/// Migration 0018: a commit with events is marked as applied by its events (`events.txn_id`)
/// instead of a `store_txns` row. Sent again after its answer was lost, a transaction applied
/// before the migration (marked in the log) and one applied after it (marked by its events) are
/// both answered as already applied and write nothing; a transaction without events is still
/// marked in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_0018_marks_commits_by_their_events() {
    let tdb = pay_store::testing::TestDatabase::create_migrated_to(Some(17))
        .await
        .expect("test PostgreSQL");
    let backend = tdb.backend().await.unwrap();
    let pool = backend.pool().clone();
    let db = Db::new(Arc::new(backend), env());
    let seed = SeededEntropy::new(18, "0018");
    let txn = |id: &str, widget: &str, events: Vec<Event>| Txn {
        id: id.into(),
        at: 1,
        ops: vec![Op::Insert {
            table: Table::Customers,
            record: Record {
                id: widget.into(),
                account: "acct_1".into(),
                version: 1,
                created: 1,
                k1: None,
                k2: None,
                body: JsonText::of(&w(widget, "acct_1", 1)).unwrap(),
            },
        }],
        events,
    };
    let send = |t: &Txn| db.execute(Request::Commit(t.clone()));
    let applied = |answer: Result<Response, StoreError>| match answer {
        Ok(Response::Committed { outcome }) => outcome,
        other => panic!("unexpected {other:?}"),
    };
    let counts = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM events), (SELECT count(*) FROM store_txns)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let before = txn(
        "txn_before",
        "cus_before",
        vec![event(&seed, "acct_1", "customer.created", "cus_before", 1)],
    );
    assert!(matches!(applied(send(&before).await), CommitOutcome::Applied { .. }));
    assert_eq!(
        counts().await,
        (1, 1, 1),
        "before 0018 every commit has a row in the log"
    );

    pay_store::postgres::MIGRATOR
        .run(&mut *pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(applied(send(&before).await), CommitOutcome::AlreadyApplied);

    let after = txn(
        "txn_after",
        "cus_after",
        vec![
            event(&seed, "acct_1", "customer.created", "cus_after", 2),
            event(&seed, "acct_1", "customer.updated", "cus_after", 2),
        ],
    );
    assert!(matches!(applied(send(&after).await), CommitOutcome::Applied { event_seqs } if event_seqs.len() == 2));
    assert_eq!(
        counts().await,
        (2, 3, 1),
        "a commit with events writes no row in the log"
    );
    let marks: Vec<(String, Option<String>)> = sqlx::query_as("SELECT id, txn_id FROM events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let expected: Vec<(String, Option<String>)> = std::iter::once((before.events[0].id.to_string(), None))
        .chain(
            after
                .events
                .iter()
                .map(|e| (e.id.to_string(), Some("txn_after".to_string()))),
        )
        .collect();
    assert_eq!(marks, expected);
    assert_eq!(applied(send(&after).await), CommitOutcome::AlreadyApplied);
    assert_eq!(applied(send(&before).await), CommitOutcome::AlreadyApplied);
    assert_eq!(counts().await, (2, 3, 1), "a transaction sent again writes nothing");

    let quiet = txn("txn_quiet", "cus_quiet", vec![]);
    assert!(matches!(applied(send(&quiet).await), CommitOutcome::Applied { .. }));
    assert_eq!(applied(send(&quiet).await), CommitOutcome::AlreadyApplied);
    assert_eq!(
        counts().await,
        (3, 3, 2),
        "a commit without events is marked in the log"
    );
}

/// Migration 0014's `store_get_many` reads every record table: one round trip answers, for
/// each (table, id) asked, that table's record (numbered by its place in the question) or
/// nothing; a table whose branch is missing or reads another table fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_table_reads_through_store_get_many() {
    let (_db, pool, _tdb) = pg_db_and_pool().await;
    let mut tables: Vec<&str> = vec![];
    let mut ids: Vec<String> = vec![];
    for (i, table) in Table::ALL.iter().enumerate() {
        let name = table.name();
        let txn = serde_json::json!({"id": format!("txn_{i}"), "at": 1, "events": [], "ops": [
            {"op": "insert", "table": name, "id": format!("rec_{i}"), "account": "acct_1",
             "created": i, "k1": null, "k2": null, "body": {"table": name}}]});
        sqlx::query("SELECT store_commit($1)")
            .bind(txn)
            .execute(&pool)
            .await
            .unwrap();
        // Its own record, and the next table's id, which this table does not hold.
        tables.extend([name, name]);
        ids.extend([format!("rec_{i}"), format!("rec_{}", i + 1)]);
    }
    let rows: Vec<(i32, String, serde_json::Value)> =
        sqlx::query_as("SELECT n, id, body FROM store_get_many($1, $2) ORDER BY n")
            .bind(&tables)
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    let want: Vec<(i32, String, serde_json::Value)> = Table::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                2 * i as i32 + 1,
                format!("rec_{i}"),
                serde_json::json!({"table": t.name()}),
            )
        })
        .collect();
    assert_eq!(rows, want);
    for (tables, ids) in [(vec!["events"], vec!["x"]), (vec!["customers"], vec![])] {
        let err = sqlx::query("SELECT * FROM store_get_many($1, $2)")
            .bind(&tables)
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("PY002"), "{tables:?} {ids:?}: {err}");
    }
}

/// Racing commits and racing idempotency-key calls through one batch writer per lane share
/// database transactions, and still answer as if alone; with grouping off each call is its own
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_groups_racing_calls_and_answers_each_alone() {
    use pay_store::postgres::{BatchStats, GroupCommit, PgBackend, PgSettings};
    let tdb = pay_store::testing::TestDatabase::create()
        .await
        .expect("test PostgreSQL");
    for (batches_in_flight, grouped) in [(1, true), (0, false)] {
        let settings = PgSettings {
            max_connections: 8,
            group_commit: GroupCommit {
                batches_in_flight,
                max_batch: 8,
            },
            ..PgSettings::default()
        };
        let backend = Arc::new(PgBackend::connect(&tdb.url, &settings).await.unwrap());
        sqlx::query("TRUNCATE customers, payment_intents, charges, vault_cards, events, store_txns, idempotency_keys")
            .execute(backend.pool())
            .await
            .unwrap();
        let db = Db::new(backend.clone(), env());
        racing_commits_answer_as_if_alone(db.clone()).await;
        racing_key_calls_answer_as_if_alone(db.clone()).await;
        let before = backend.group_commit_stats().reads;
        // The reads race only if they overlap. On a loaded machine the database can answer a
        // read before its caller's task yields, so that each read finds the lane idle and goes
        // alone (seen with two simulator sweeps on both cores: every one of 144 reads alone, in
        // two of five runs). A lock on `customers`, held for a moment from another connection,
        // keeps the first read of that table in flight while the others queue behind it.
        let hold_customers = async {
            use sqlx::Connection;
            let mut locker = sqlx::PgConnection::connect(&tdb.url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
                .execute(&mut locker)
                .await
                .unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
            });
        };
        racing_reads_after(db, hold_customers).await;
        let stats = backend.group_commit_stats();
        assert_eq!(stats.commits.calls, 96 + 54, "{stats:?}");
        assert_eq!(stats.asynchronous.calls, RACING_KEY_CALLS, "{stats:?}");
        let reads = BatchStats {
            batches: stats.reads.batches - before.batches,
            calls: stats.reads.calls - before.calls,
        };
        assert_eq!(reads.calls, 144, "{stats:?}");
        for lane in [stats.commits, stats.asynchronous, reads] {
            if grouped {
                assert!(lane.batches < lane.calls, "{stats:?}");
                assert!(lane.batches * 8 >= lane.calls, "batches hold at most 8: {stats:?}");
            } else {
                assert_eq!(lane.batches, lane.calls, "{stats:?}");
            }
        }
    }
}

/// The schema indexes exactly what `Table::indexed` and `Table::listable` declare: an index
/// the code never reads costs every write, and a declared lookup without its index scans the
/// table (migration 0012).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_indexes_are_the_declared_lookups() {
    let (_db, pool, _tdb) = pg_db_and_pool().await;
    for table in Table::ALL {
        let name = table.name();
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1")
                .bind(name)
                .fetch_all(&pool)
                .await
                .unwrap();
        let has = |suffix: &str| indexes.iter().any(|i| *i == format!("{name}_{suffix}"));
        assert_eq!(has("k1"), table.indexed(Index::K1), "{name}: {indexes:?}");
        assert_eq!(has("k2"), table.indexed(Index::K2), "{name}: {indexes:?}");
        assert_eq!(has("account_created"), table.listable(), "{name}: {indexes:?}");
        assert!(has("pkey"), "{name}: {indexes:?}");
        assert_eq!(
            indexes.len(),
            1 + usize::from(table.indexed(Index::K1))
                + usize::from(table.indexed(Index::K2))
                + usize::from(table.listable()),
            "{name} has an index the declaration does not name: {indexes:?}"
        );
    }
}
