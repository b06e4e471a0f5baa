//! The payment service's flows: each reads records, asks [`crate::machine`] what changes, and
//! commits the new records with their events in one transaction (the outbox).
//!
//! Exactly-once, in three layers:
//! * **Recovery points.** A confirm records its attempt (`authorizing`) and moves the intent to
//!   `processing` before calling the network; a capture, void or refund records itself as
//!   pending first. Anything interrupted after that point — a crash, a lost answer — is resumed
//!   by the next confirm/capture/cancel/refund call or by the [reconciler](Payments::reconcile_once),
//!   never started again.
//! * **Network keys derived from what is being done.** The attempt id derives from (intent,
//!   attempt number), the capture key from the intent, the refund key from the refund id; the
//!   network applies each key once. So a resumed operation is the same operation.
//! * **Derived ids for creates.** An intent or refund created with a request key (from the
//!   client's Idempotency-Key) gets an id derived from it, so re-running the request finds it.
//!
//! Concurrent writers are serialized by version checks: a loser re-reads and re-decides.

use crate::machine::{self, AttemptOutcome, CancelPlan, PendingEvent};
use crate::records::*;
use async_trait::async_trait;
use pay_core::faults::{self, FaultAction};
use pay_core::{
    AccountId, ApiError, ChargeId, Currency, Env, Event, EventId, JsonText, PaymentIntentId, RefundId, ReviewId,
};
use pay_net::CallError;
use pay_proto::acquirer::NetworkResult;
use pay_proto::objects::*;
use pay_proto::payments::*;
use pay_proto::tokenizer::{ForwardAuthorize, ForwardFollowUp, TokenizerClient};
use pay_store::{ConflictKind, Db, Index, ListQuery, Page, StoreError, Table, Versioned};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Largest amount accepted, in minor units (Stripe's eight-digit limit).
pub const MAX_AMOUNT: i64 = pay_core::money::MAX_CHARGE_AMOUNT;

/// Scores a payment before the network sees it (the fraud service, through its client).
#[async_trait]
pub trait RiskAssessor: Send + Sync + 'static {
    /// The verdict for authorizing `amount` of `intent` with `pm`. Implementations apply their
    /// own fail-open/fail-closed policy and time budget and never fail.
    async fn assess(&self, intent: &IntentRecord, pm: &PaymentMethodRef, ctx: &RequestContext) -> RiskVerdict;
    /// Reports the network's answer to `attempt` for velocity features (best effort).
    async fn record_outcome(&self, _attempt: &pay_core::AttemptId, _approved: bool) {}
}

/// Tunables of the payment service.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// Attempts per network call before answering 503 and leaving the rest to the reconciler.
    pub network_attempts: u32,
    /// Delay before the second network attempt; doubles.
    pub network_backoff: Duration,
    /// The reconciler leaves operations younger than this to their own request.
    pub reconcile_grace: Duration,
    /// Deliberate bugs for the simulator's planted-bug proof (feature `planted-bugs` only).
    #[cfg(feature = "planted-bugs")]
    pub bugs: PlantedBugs,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            network_attempts: 3,
            network_backoff: Duration::from_millis(200),
            reconcile_grace: Duration::from_secs(5),
            #[cfg(feature = "planted-bugs")]
            bugs: PlantedBugs::default(),
        }
    }
}

/// Deliberate bugs the simulator must catch (never compiled into production builds).
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PlantedBugs {
    /// Resuming an attempt sends the network a fresh key instead of the attempt's.
    pub fresh_key_on_retry: bool,
    /// Events are committed in their own transaction before the state change.
    pub event_outside_txn: bool,
}

/// What a network call came to.
enum Forwarded {
    /// The network answered.
    Answer(NetworkResult),
    /// The call was refused before reaching the network (4xx): certainly not applied.
    Refused(ApiError),
    /// No answer: it may or may not have been applied.
    Unknown(String),
}

/// Counts of what one reconciler pass settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Attempts settled.
    pub attempts: u32,
    /// Captures and voids settled.
    pub follow_ups: u32,
    /// Refunds settled.
    pub refunds: u32,
    /// Items still unresolved.
    pub unresolved: u32,
}

/// The payment service.
pub struct Payments {
    db: Db,
    env: Env,
    tokenizer: TokenizerClient,
    risk: Option<Arc<dyn RiskAssessor>>,
    config: PaymentsConfig,
    sightings: Sightings,
}

/// How many consecutive reconciler passes have seen each unsettled item. An item's own
/// timestamp says how old it is only while the clock that wrote it agrees with ours: one
/// stamped by a clock running ahead (or before the clock was stepped back) looks younger than
/// the grace for as long as the error. Passes are counted by the reconciler itself, so after
/// `grace / every` passes an item has had its grace whatever the clocks said.
#[derive(Default)]
struct Sightings {
    /// The reconciler's period in ms (0 until `run_reconciler` starts: timestamps only).
    every_ms: std::sync::atomic::AtomicU64,
    /// Item key → passes that saw it unsettled.
    seen: std::sync::Mutex<BTreeMap<String, u32>>,
}

impl Sightings {
    /// Passes after which an item is due whatever its timestamp says (`None` without a period).
    fn passes(&self, grace: Duration) -> Option<u32> {
        let every = self.every_ms.load(std::sync::atomic::Ordering::Relaxed);
        (every > 0).then(|| {
            u32::try_from((grace.as_millis() as u64).div_ceil(every))
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }
}

/// Whether the reconciler leaves an item to its own request for now: its timestamp says it is
/// younger than the grace (`stamped > cutoff`), and this is not yet more than `passes` passes
/// that saw it unsettled.
fn in_grace(stamped: Option<i64>, cutoff: i64, sightings: u32, passes: Option<u32>) -> bool {
    stamped.is_some_and(|t| t > cutoff) && passes.is_none_or(|p| sightings <= p)
}

fn store(e: StoreError) -> ApiError {
    e.into_api_error()
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict { .. })
}

const CONFLICT_RETRIES: usize = 16;

fn contended() -> ApiError {
    ApiError::unavailable("The object is being modified by concurrent requests; retry the request.")
}

impl Payments {
    /// A payment service storing in `db` and reaching the network through `tokenizer`.
    pub fn new(
        db: Db,
        env: Env,
        tokenizer: TokenizerClient,
        risk: Option<Arc<dyn RiskAssessor>>,
        config: PaymentsConfig,
    ) -> Payments {
        Payments {
            db,
            env,
            tokenizer,
            risk,
            config,
            sightings: Sightings::default(),
        }
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn event(&self, account: &AccountId, (kind, object): PendingEvent, ctx: Option<&RequestContext>) -> Event {
        let mut e = Event::new(
            EventId::generate(self.env.entropy.as_ref()),
            account,
            kind,
            object,
            self.env.now(),
        );
        if let Some(c) = ctx {
            e.request.id = c.request_id.clone();
            e.request.idempotency_key = c.idempotency_key.clone();
        }
        e
    }

    /// Commits `txn` with `events`. (With the planted bug, events go in a transaction of their
    /// own first, which the simulator must notice.)
    async fn commit_with_events(
        &self,
        mut txn: pay_store::TxnBuilder,
        account: &AccountId,
        events: Vec<PendingEvent>,
        ctx: Option<&RequestContext>,
    ) -> Result<(), StoreError> {
        let events: Vec<Event> = events.into_iter().map(|e| self.event(account, e, ctx)).collect();
        #[cfg(feature = "planted-bugs")]
        if self.config.bugs.event_outside_txn {
            let mut side = self.db.txn();
            for e in events {
                side.event(e);
            }
            self.db.commit(side).await?;
            return self.db.commit(txn).await.map(|_| ());
        }
        for e in events {
            txn.event(e);
        }
        self.db.commit(txn).await.map(|_| ())
    }

    async fn load_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
    ) -> Result<Versioned<IntentRecord>, ApiError> {
        self.db
            .get_owned::<IntentRecord>(account.as_str(), id.as_str())
            .await
            .map_err(store)?
            .ok_or_else(|| ApiError::no_such("payment_intent", "intent", id.as_str()))
    }

    // ----- create, read, update -----

    /// Creates a PaymentIntent, confirming it at once when asked.
    pub async fn create_intent(&self, req: CreateIntent) -> Result<PaymentIntent, ApiError> {
        validate_amount("amount", req.amount, req.currency)?;
        let id = match &req.request_key {
            Some(k) => PaymentIntentId::derived(&[req.account.as_str(), k]),
            None => PaymentIntentId::generate(self.env.entropy.as_ref()),
        };
        // No read first: the insert itself finds an intent an earlier run of this request
        // created (a conflict on the derived id), and that run is then resumed.
        let now = self.env.now();
        let status = if req.payment_method.is_some() {
            IntentStatus::RequiresConfirmation
        } else {
            IntentStatus::RequiresPaymentMethod
        };
        let secret = format!(
            "{id}_secret_{}",
            pay_core::ids::random_base62(self.env.entropy.as_ref(), 24)
        );
        let intent = PaymentIntent {
            id: id.clone(),
            object: "payment_intent".into(),
            amount: req.amount,
            amount_capturable: 0,
            amount_received: 0,
            canceled_at: None,
            cancellation_reason: None,
            capture_method: req.capture_method,
            client_secret: Some(secret),
            confirmation_method: req.confirmation_method,
            created: now.unix_secs(),
            currency: req.currency,
            customer: req.customer.clone(),
            description: req.description.clone(),
            last_payment_error: None,
            latest_charge: None,
            livemode: false,
            metadata: req.metadata.clone(),
            next_action: None,
            payment_method: req.payment_method.as_ref().map(|p| p.id.clone()),
            payment_method_types: vec!["card".into()],
            receipt_email: req.receipt_email.clone(),
            review: None,
            statement_descriptor: req.statement_descriptor.clone(),
            status,
        };
        let rec = IntentRecord {
            account: req.account.clone(),
            intent,
            payment_method: req.payment_method.clone(),
            attempt_count: 0,
            authorization_id: None,
            pending: None,
            processing_since: None,
            created_ms: now.millis(),
        };
        let created = ("payment_intent.created", JsonText::of_or_null(&rec.intent));
        if req.confirm {
            if let Some(pm) = rec.payment_method.clone() {
                // Create and confirm: one commit holds the new intent, already processing, and
                // its first attempt (the same recovery point a separate confirm records). An
                // intent this confirm would refuse goes the long way, which gives the refusal.
                if machine::begin_attempt(&rec, Some(pm.clone()), None, not_assessed(), now).is_ok() {
                    return self.create_confirmed(rec, pm, created, &req).await;
                }
            }
        }
        let mut txn = self.db.txn();
        txn.insert(&rec);
        match self
            .commit_with_events(txn, &req.account, vec![created], Some(&req.context))
            .await
        {
            Ok(()) => self.after_create(rec, &req).await,
            Err(e) => self.created_before(&req, &id, e).await,
        }
    }

    /// The insert of a new intent failed with `e`: when the intent exists (an earlier or
    /// concurrent run of the same request created it), carries on from where that run got.
    async fn created_before(
        &self,
        req: &CreateIntent,
        id: &PaymentIntentId,
        e: StoreError,
    ) -> Result<PaymentIntent, ApiError> {
        match e {
            StoreError::Conflict {
                kind: ConflictKind::Exists,
                ..
            } => {
                let existing = self.load_intent(&req.account, id).await?;
                self.after_create(existing.value, req).await
            }
            e => Err(store(e)),
        }
    }

    /// Creates `rec` and starts its first attempt in one commit, then sends the attempt.
    async fn create_confirmed(
        &self,
        rec: IntentRecord,
        pm: PaymentMethodRef,
        created: PendingEvent,
        req: &CreateIntent,
    ) -> Result<PaymentIntent, ApiError> {
        let now = self.env.now();
        let risk = match &self.risk {
            Some(r) => r.assess(&rec, &pm, &req.context).await,
            None => not_assessed(),
        };
        let (next, attempt) = machine::begin_attempt(&rec, Some(pm), None, risk.clone(), now)?;
        let mut txn = self.db.txn();
        if risk.action == RiskAction::Block {
            // Fraud said no: settle at once, the network never sees it.
            let s = machine::settle_attempt(&next, &attempt, &AttemptOutcome::Blocked, None, now);
            txn.insert(&s.intent).insert(&s.attempt).insert(&s.charge);
            let mut events = vec![created];
            events.extend(s.events);
            return match self
                .commit_with_events(txn, &req.account, events, Some(&req.context))
                .await
            {
                Ok(()) => Err(s.error.unwrap_or_else(|| ApiError::internal("blocked without error"))),
                Err(e) => self.created_before(req, &rec.intent.id, e).await,
            };
        }
        txn.insert(&next).insert(&attempt);
        match self
            .commit_with_events(txn, &req.account, vec![created], Some(&req.context))
            .await
        {
            // Both records were just inserted: each is at version 1.
            Ok(()) => {
                self.run_attempt(next, attempt, Some(&req.context), true, Some((1, 1)))
                    .await
            }
            Err(e) => self.created_before(req, &rec.intent.id, e).await,
        }
    }

    async fn after_create(&self, rec: IntentRecord, req: &CreateIntent) -> Result<PaymentIntent, ApiError> {
        if !req.confirm {
            return Ok(rec.intent);
        }
        // Confirming: also resumes a confirm that an earlier run of this request started.
        if rec.intent.status == IntentStatus::RequiresConfirmation || rec.intent.status == IntentStatus::Processing {
            let confirm = ConfirmIntent {
                payment_method: None,
                capture_method: None,
                receipt_email: None,
                context: req.context.clone(),
            };
            return self.confirm_intent(&req.account, &rec.intent.id, confirm).await;
        }
        match rec.intent.status {
            IntentStatus::RequiresPaymentMethod if rec.attempt_count == 0 => {
                let confirm = ConfirmIntent {
                    payment_method: None,
                    capture_method: None,
                    receipt_email: None,
                    context: req.context.clone(),
                };
                self.confirm_intent(&req.account, &rec.intent.id, confirm).await
            }
            // The earlier run already finished its confirm: report how it ended.
            _ => self.replay_attempt_outcome(rec).await,
        }
    }

    /// For a request re-run after its attempt settled: the same answer the first run gave.
    async fn replay_attempt_outcome(&self, rec: IntentRecord) -> Result<PaymentIntent, ApiError> {
        if rec.intent.status == IntentStatus::RequiresPaymentMethod {
            if let Some(lpe) = &rec.intent.last_payment_error {
                return Err(ApiError::card_declined(
                    lpe.code.as_deref().unwrap_or("card_declined"),
                    lpe.decline_code.as_deref(),
                    lpe.message.clone(),
                )
                .with_payment_intent(serde_json::to_value(&rec.intent).unwrap_or_default()));
            }
        }
        Ok(rec.intent)
    }

    /// Reads an intent.
    pub async fn get_intent(&self, account: &AccountId, id: &PaymentIntentId) -> Result<PaymentIntent, ApiError> {
        Ok(self.load_intent(account, id).await?.value.intent)
    }

    /// Updates an intent that is not yet confirmed (or failed back to needing a method).
    pub async fn update_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        upd: UpdateIntent,
    ) -> Result<PaymentIntent, ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Versioned { version, value: rec } = self.load_intent(account, id).await?;
            if !updatable(rec.intent.status) {
                return Err(machine::unexpected_state("update", &rec.intent));
            }
            let mut next = rec.clone();
            if let Some(a) = upd.amount {
                validate_amount("amount", a, upd.currency.unwrap_or(rec.intent.currency))?;
                next.intent.amount = a;
            }
            if let Some(c) = upd.currency {
                validate_amount("amount", next.intent.amount, c)?;
                next.intent.currency = c;
            }
            if let Some(c) = &upd.customer {
                next.intent.customer = c.clone();
            }
            if let Some(pm) = &upd.payment_method {
                next.payment_method = Some(pm.clone());
                next.intent.payment_method = Some(pm.id.clone());
                next.intent.status = IntentStatus::RequiresConfirmation;
            }
            if let Some(cm) = upd.capture_method {
                next.intent.capture_method = cm;
            }
            if let Some(d) = &upd.description {
                next.intent.description = d.clone();
            }
            if upd.clear_metadata {
                next.intent.metadata.clear();
            }
            if let Some(m) = &upd.metadata {
                for (k, v) in m {
                    if v.is_empty() {
                        next.intent.metadata.remove(k);
                    } else {
                        next.intent.metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(e) = &upd.receipt_email {
                next.intent.receipt_email = e.clone();
            }
            if let Some(s) = &upd.statement_descriptor {
                next.intent.statement_descriptor = s.clone();
            }
            let mut txn = self.db.txn();
            txn.update(version, &next);
            match self.db.commit(txn).await {
                Ok(_) => return Ok(next.intent),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Lists intents, newest first.
    pub async fn list_intents(
        &self,
        account: &AccountId,
        req: &ListRequest,
    ) -> Result<ListPage<PaymentIntent>, ApiError> {
        let filter = req.customer.as_ref().map(|c| (Index::K1, c.to_string()));
        let page: Page<Versioned<IntentRecord>> = self
            .db
            .list(list_query(account, req, filter))
            .await
            .map_err(list_error)?;
        Ok(ListPage {
            data: page.items.into_iter().map(|v| v.value.intent).collect(),
            has_more: page.has_more,
        })
    }

    // ----- confirm -----

    /// Confirms an intent: fraud check, authorization through the tokenizer, and recording of
    /// the outcome. On a processing intent, resumes the attempt in flight instead.
    pub async fn confirm_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: ConfirmIntent,
    ) -> Result<PaymentIntent, ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Versioned { version, value: rec } = self.load_intent(account, id).await?;
            if rec.intent.status == IntentStatus::Processing {
                return self.resume_attempt(rec, Some(&req.context)).await;
            }
            let pm = req.payment_method.clone().or_else(|| rec.payment_method.clone());
            // Validate before asking fraud, so an invalid confirm costs nothing.
            machine::begin_attempt(&rec, pm.clone(), req.capture_method, not_assessed(), self.env.now())?;
            let pm = pm.ok_or_else(|| ApiError::internal("payment method vanished"))?;
            let risk = match &self.risk {
                Some(r) => r.assess(&rec, &pm, &req.context).await,
                None => not_assessed(),
            };
            let mut base = rec.clone();
            if let Some(e) = &req.receipt_email {
                base.intent.receipt_email = Some(e.clone());
            }
            let (next, attempt) =
                machine::begin_attempt(&base, Some(pm), req.capture_method, risk.clone(), self.env.now())?;
            if risk.action == RiskAction::Block {
                // Fraud said no: settle at once, the network never sees it.
                let s = machine::settle_attempt(&next, &attempt, &AttemptOutcome::Blocked, None, self.env.now());
                let mut txn = self.db.txn();
                txn.update(version, &s.intent).insert(&s.attempt).insert(&s.charge);
                match self
                    .commit_with_events(txn, account, s.events, Some(&req.context))
                    .await
                {
                    Ok(()) => return Err(s.error.unwrap_or_else(|| ApiError::internal("blocked without error"))),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(store(e)),
                }
            }
            let mut txn = self.db.txn();
            txn.update(version, &next).insert(&attempt);
            match self.db.commit(txn).await {
                Ok(_) => {
                    return self
                        .run_attempt(next, attempt, Some(&req.context), true, Some((version + 1, 1)))
                        .await
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Resumes the attempt of a `processing` intent.
    async fn resume_attempt(&self, rec: IntentRecord, ctx: Option<&RequestContext>) -> Result<PaymentIntent, ApiError> {
        let attempt_id = rec.attempt_id(rec.attempt_count);
        let Some(att) = self.db.get::<Attempt>(attempt_id.as_str()).await.map_err(store)? else {
            return Err(ApiError::internal("A processing payment has no attempt record."));
        };
        if att.value.state != AttemptState::Authorizing {
            // Settled by someone else just now: answer from the settled state.
            let fresh = self.load_intent(&rec.account, &rec.intent.id).await?.value;
            return self.replay_attempt_outcome(fresh).await;
        }
        self.run_attempt(rec, att.value, ctx, false, None).await
    }

    /// Sends the attempt to the network (with its own key) and records the outcome.
    /// `versions` are the stored versions of `rec` and `attempt` when the caller has just
    /// written them (the outcome is then recorded without reading them again; a concurrent
    /// change makes that commit conflict, and the records are read afresh).
    async fn run_attempt(
        &self,
        rec: IntentRecord,
        attempt: Attempt,
        ctx: Option<&RequestContext>,
        first_send: bool,
        versions: Option<(i64, i64)>,
    ) -> Result<PaymentIntent, ApiError> {
        #[allow(unused_mut)]
        let mut key = attempt.network_key.clone();
        #[cfg(feature = "planted-bugs")]
        if self.config.bugs.fresh_key_on_retry && !first_send {
            key = format!(
                "{}:retry:{}",
                attempt.network_key,
                pay_core::ids::random_base62(self.env.entropy.as_ref(), 8)
            );
        }
        let _ = first_send;
        let fwd = ForwardAuthorize {
            account: rec.account.clone(),
            token: attempt.payment_method.token.clone(),
            amount: attempt.amount,
            currency: rec.intent.currency,
            capture: attempt.capture,
            idempotency_key: key,
        };
        let outcome = match self.forward(|| self.tokenizer.authorize(&fwd)).await {
            Forwarded::Answer(r) => AttemptOutcome::Network(r),
            Forwarded::Refused(e) => AttemptOutcome::Refused(e),
            Forwarded::Unknown(reason) => {
                tracing::warn!(intent = %rec.intent.id, attempt = %attempt.id, %reason, "authorization outcome unknown; left for the reconciler");
                return Err(ApiError::unavailable("The card network did not answer; the payment is processing. Retry the request or check the PaymentIntent later."));
            }
        };
        match faults::apply(self.env.fault(faults::PAYMENTS_AFTER_AUTHORIZE, rec.intent.id.as_str())).await {
            FaultAction::Fail | FaultAction::DropReply => {
                return Err(ApiError::unavailable("Interrupted before recording the authorization."))
            }
            _ => {}
        }
        let approved = match &outcome {
            AttemptOutcome::Network(n) => Some(n.approved),
            _ => None,
        };
        let (account, id, attempt_id) = (rec.account.clone(), rec.intent.id.clone(), attempt.id.clone());
        let known = versions.map(|(iv, av)| {
            (
                Versioned {
                    version: iv,
                    value: rec,
                },
                Versioned {
                    version: av,
                    value: attempt,
                },
            )
        });
        // The outcome report to fraud detection (best effort, its velocity counts) and the
        // settlement are independent writes: they go together, so a confirm waits for one
        // round trip where it waited for two.
        let report = async {
            if let (Some(r), Some(approved)) = (&self.risk, approved) {
                r.record_outcome(&attempt_id, approved).await;
            }
        };
        let ((), settled) = tokio::join!(
            report,
            self.settle_attempt(&account, &id, &attempt_id, outcome, ctx, known)
        );
        settled
    }

    /// Records an attempt's outcome. `known` are the intent and attempt as the caller last
    /// wrote them, used instead of reading them on the first try.
    async fn settle_attempt(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        attempt_id: &pay_core::AttemptId,
        outcome: AttemptOutcome,
        ctx: Option<&RequestContext>,
        mut known: Option<(Versioned<IntentRecord>, Versioned<Attempt>)>,
    ) -> Result<PaymentIntent, ApiError> {
        let review = ReviewId::generate(self.env.entropy.as_ref());
        for _ in 0..CONFLICT_RETRIES {
            let (Versioned { version, value: rec }, att) = match known.take() {
                Some(k) => k,
                None => {
                    let intent = self.load_intent(account, id).await?;
                    let Some(att) = self.db.get::<Attempt>(attempt_id.as_str()).await.map_err(store)? else {
                        return Err(ApiError::internal("attempt record missing"));
                    };
                    (intent, att)
                }
            };
            if att.value.state != AttemptState::Authorizing || rec.intent.status != IntentStatus::Processing {
                return self.replay_attempt_outcome(rec).await;
            }
            let s = machine::settle_attempt(&rec, &att.value, &outcome, Some(review.clone()), self.env.now());
            let mut txn = self.db.txn();
            txn.update(version, &s.intent)
                .update(att.version, &s.attempt)
                .insert(&s.charge);
            match self.commit_with_events(txn, account, s.events, ctx).await {
                Ok(()) => {
                    return match s.error {
                        Some(e) => Err(e),
                        None => Ok(s.intent.intent),
                    }
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Calls the network (through the tokenizer) with retries of the same request.
    async fn forward<F, Fut>(&self, call: F) -> Forwarded
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<NetworkResult, CallError>>,
    {
        let mut delay = self.config.network_backoff;
        let mut last = String::new();
        for attempt in 0..self.config.network_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match call().await {
                Ok(r) => return Forwarded::Answer(r),
                Err(CallError::Api(e)) if e.status < 500 && e.status != 409 && e.status != 429 => {
                    return Forwarded::Refused(e)
                }
                Err(e) => last = e.to_string(),
            }
        }
        Forwarded::Unknown(last)
    }

    // ----- capture and cancel -----

    /// Captures an authorized intent (all, or `amount_to_capture`).
    pub async fn capture_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: CaptureIntent,
    ) -> Result<PaymentIntent, ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Versioned { version, value: rec } = self.load_intent(account, id).await?;
            if let Some(p) = &rec.pending {
                if p.kind == PendingKind::Capture {
                    return self.resume_follow_up(account, id, Some(&req.context)).await;
                }
            }
            let next = machine::begin_capture(&rec, req.amount_to_capture, self.env.now())?;
            let mut txn = self.db.txn();
            txn.update(version, &next);
            match self.db.commit(txn).await {
                Ok(_) => return self.resume_follow_up(account, id, Some(&req.context)).await,
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Cancels an intent, releasing an authorization if there is one.
    pub async fn cancel_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: CancelIntent,
    ) -> Result<PaymentIntent, ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Versioned { version, value: rec } = self.load_intent(account, id).await?;
            if let Some(p) = &rec.pending {
                if p.kind == PendingKind::Void {
                    return self.resume_follow_up(account, id, Some(&req.context)).await;
                }
            }
            match machine::begin_cancel(&rec, req.cancellation_reason.clone(), self.env.now())? {
                CancelPlan::Immediate(next, events) => {
                    let mut txn = self.db.txn();
                    txn.update(version, &next);
                    match self.commit_with_events(txn, account, events, Some(&req.context)).await {
                        Ok(()) => return Ok(next.intent),
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => return Err(store(e)),
                    }
                }
                CancelPlan::Void(next) => {
                    let mut txn = self.db.txn();
                    txn.update(version, &next);
                    match self.db.commit(txn).await {
                        Ok(_) => return self.resume_follow_up(account, id, Some(&req.context)).await,
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => return Err(store(e)),
                    }
                }
            }
        }
        Err(contended())
    }

    /// Sends the intent's pending capture or void and records the answer.
    async fn resume_follow_up(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        ctx: Option<&RequestContext>,
    ) -> Result<PaymentIntent, ApiError> {
        let rec = self.load_intent(account, id).await?.value;
        let Some(pending) = rec.pending.clone() else {
            return Ok(rec.intent);
        };
        let Some(auth) = rec.authorization_id.clone() else {
            return Err(ApiError::internal(
                "A capture or void is pending without an authorization.",
            ));
        };
        let fwd = ForwardFollowUp {
            account: account.clone(),
            authorization_id: auth,
            amount: pending.amount,
            idempotency_key: pending.key.clone(),
        };
        let result = match pending.kind {
            PendingKind::Capture => self.forward(|| self.tokenizer.capture(&fwd)).await,
            PendingKind::Void => self.forward(|| self.tokenizer.void(&fwd)).await,
        };
        let result = match result {
            Forwarded::Answer(r) => r,
            Forwarded::Refused(e) => {
                // Not applied and never will be: drop the pending operation and report.
                self.clear_pending(account, id, &pending).await?;
                return Err(e);
            }
            Forwarded::Unknown(_) => {
                return Err(ApiError::unavailable(
                    "The card network did not answer; retry the request.",
                ))
            }
        };
        for _ in 0..CONFLICT_RETRIES {
            let Versioned { version, value: rec } = self.load_intent(account, id).await?;
            if rec.pending.as_ref() != Some(&pending) {
                return Ok(rec.intent); // settled concurrently
            }
            let Some(charge_id) = rec.intent.latest_charge.clone() else {
                return Err(ApiError::internal("no charge to capture"));
            };
            let Some(ch) = self.db.get::<ChargeRecord>(charge_id.as_str()).await.map_err(store)? else {
                return Err(ApiError::internal("charge record missing"));
            };
            let s = match pending.kind {
                PendingKind::Capture => machine::settle_capture(&rec, &ch.value, &result, self.env.now()),
                PendingKind::Void => machine::settle_void(&rec, &ch.value, &result, self.env.now()),
            };
            let mut txn = self.db.txn();
            txn.update(version, &s.intent).update(ch.version, &s.charge);
            match self.commit_with_events(txn, account, s.events, ctx).await {
                Ok(()) => {
                    return match s.error {
                        Some(e) => Err(e),
                        None => Ok(s.intent.intent),
                    }
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    async fn clear_pending(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        pending: &PendingOp,
    ) -> Result<(), ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_intent(account, id).await?;
            if rec.pending.as_ref() != Some(pending) {
                return Ok(());
            }
            rec.pending = None;
            let mut txn = self.db.txn();
            txn.update(version, &rec);
            match self.db.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    // ----- refunds -----

    /// Creates a refund of an intent's charge or of a charge.
    pub async fn create_refund(&self, req: CreateRefund) -> Result<Refund, ApiError> {
        let charge_id: ChargeId = match (&req.charge, &req.payment_intent) {
            (Some(c), None) => c.clone(),
            (None, Some(pi)) => {
                let rec = self.load_intent(&req.account, pi).await?.value;
                if rec.intent.status != IntentStatus::Succeeded {
                    return Err(ApiError::unexpected_state(
                        "charge_not_refundable",
                        format!(
                            "This PaymentIntent cannot be refunded because it has a status of {}.",
                            rec.intent.status.as_str()
                        ),
                    )
                    .with_param("payment_intent"));
                }
                rec.intent.latest_charge.ok_or_else(|| {
                    ApiError::unexpected_state("charge_not_refundable", "This PaymentIntent has no charge.")
                })?
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_request(
                    "You can only pass one of charge or payment_intent.",
                ))
            }
            (None, None) => return Err(ApiError::missing_param("payment_intent")),
        };
        let id = match &req.request_key {
            Some(k) => RefundId::derived(&[req.account.as_str(), k]),
            None => RefundId::generate(self.env.entropy.as_ref()),
        };
        for _ in 0..CONFLICT_RETRIES {
            if let Some(existing) = self
                .db
                .get_owned::<RefundRecord>(req.account.as_str(), id.as_str())
                .await
                .map_err(store)?
            {
                return self.resume_refund(existing.value, Some(&req.context)).await;
            }
            let Some(ch) = self
                .db
                .get_owned::<ChargeRecord>(req.account.as_str(), charge_id.as_str())
                .await
                .map_err(store)?
            else {
                return Err(ApiError::no_such("charge", "charge", charge_id.as_str()));
            };
            let amount = machine::refund_amount(&ch.value, req.amount)?;
            let (next_charge, refund, events) = machine::begin_refund(
                &ch.value,
                id.clone(),
                amount,
                req.reason.clone(),
                req.metadata.clone(),
                self.env.now(),
            )?;
            let mut txn = self.db.txn();
            txn.update(ch.version, &next_charge).insert(&refund);
            match self
                .commit_with_events(txn, &req.account, events, Some(&req.context))
                .await
            {
                Ok(()) => return self.resume_refund(refund, Some(&req.context)).await,
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Sends a pending refund to the network and records the answer; a refund whose answer is
    /// unknown is returned `pending` and settled later by the reconciler.
    async fn resume_refund(&self, refund: RefundRecord, ctx: Option<&RequestContext>) -> Result<Refund, ApiError> {
        if refund.refund.status != RefundStatus::Pending {
            return Ok(refund.refund);
        }
        let fwd = ForwardFollowUp {
            account: refund.account.clone(),
            authorization_id: refund.authorization_id.clone(),
            amount: refund.refund.amount,
            idempotency_key: refund.network_key.clone(),
        };
        let result = match self.forward(|| self.tokenizer.refund(&fwd)).await {
            Forwarded::Answer(r) => r,
            Forwarded::Refused(e) => {
                // Refused before the network: record the refund as failed.
                let mut r = pay_proto::acquirer::NetworkResult {
                    operation_id: String::new(),
                    idempotency_key: refund.network_key.clone(),
                    kind: pay_proto::acquirer::OpKind::Refund,
                    merchant: refund.account.clone(),
                    approved: false,
                    authorization_id: Some(refund.authorization_id.clone()),
                    amount: refund.refund.amount,
                    currency: refund.refund.currency,
                    decline: None,
                    cvc_check: None,
                    network_transaction_id: None,
                    authorization_code: None,
                    brand: None,
                    last4: None,
                    created: self.env.now().millis(),
                };
                r.decline = Some(pay_proto::acquirer::Decline {
                    code: e.code.unwrap_or_else(|| "refund_failed".into()),
                    decline_code: "refund_failed".into(),
                    message: e.message,
                });
                r
            }
            Forwarded::Unknown(_) => return Ok(refund.refund),
        };
        for _ in 0..CONFLICT_RETRIES {
            let Some(re) = self
                .db
                .get::<RefundRecord>(refund.refund.id.as_str())
                .await
                .map_err(store)?
            else {
                return Err(ApiError::internal("refund record missing"));
            };
            if re.value.refund.status != RefundStatus::Pending {
                return Ok(re.value.refund);
            }
            let Some(charge_id) = re.value.refund.charge.clone() else {
                return Err(ApiError::internal("refund without charge"));
            };
            let Some(ch) = self.db.get::<ChargeRecord>(charge_id.as_str()).await.map_err(store)? else {
                return Err(ApiError::internal("charge record missing"));
            };
            let (c, r, events) = machine::settle_refund(&ch.value, &re.value, &result);
            let mut txn = self.db.txn();
            txn.update(ch.version, &c).update(re.version, &r);
            match self.commit_with_events(txn, &refund.account, events, ctx).await {
                Ok(()) => return Ok(r.refund),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(contended())
    }

    /// Reads a refund.
    pub async fn get_refund(&self, account: &AccountId, id: &RefundId) -> Result<Refund, ApiError> {
        self.db
            .get_owned::<RefundRecord>(account.as_str(), id.as_str())
            .await
            .map_err(store)?
            .map(|v| v.value.refund)
            .ok_or_else(|| ApiError::no_such("refund", "refund", id.as_str()))
    }

    /// Lists refunds, newest first (optionally of one charge or intent).
    pub async fn list_refunds(&self, account: &AccountId, req: &ListRequest) -> Result<ListPage<Refund>, ApiError> {
        let charge = match (&req.charge, &req.payment_intent) {
            (Some(c), _) => Some(c.to_string()),
            (None, Some(pi)) => match self.load_intent(account, pi).await?.value.intent.latest_charge {
                Some(c) => Some(c.to_string()),
                None => {
                    return Ok(ListPage {
                        data: vec![],
                        has_more: false,
                    })
                }
            },
            (None, None) => None,
        };
        let page: Page<Versioned<RefundRecord>> = self
            .db
            .list(list_query(account, req, charge.map(|c| (Index::K1, c))))
            .await
            .map_err(list_error)?;
        Ok(ListPage {
            data: page.items.into_iter().map(|v| v.value.refund).collect(),
            has_more: page.has_more,
        })
    }

    /// Reads a charge.
    pub async fn get_charge(&self, account: &AccountId, id: &ChargeId) -> Result<Charge, ApiError> {
        self.db
            .get_owned::<ChargeRecord>(account.as_str(), id.as_str())
            .await
            .map_err(store)?
            .map(|v| v.value.charge)
            .ok_or_else(|| ApiError::no_such("charge", "charge", id.as_str()))
    }

    /// Lists charges, newest first (optionally of one intent).
    pub async fn list_charges(&self, account: &AccountId, req: &ListRequest) -> Result<ListPage<Charge>, ApiError> {
        let filter = req.payment_intent.as_ref().map(|p| (Index::K1, p.to_string()));
        let page: Page<Versioned<ChargeRecord>> = self
            .db
            .list(list_query(account, req, filter))
            .await
            .map_err(list_error)?;
        Ok(ListPage {
            data: page.items.into_iter().map(|v| v.value.charge).collect(),
            has_more: page.has_more,
        })
    }

    // ----- reconciler -----

    /// One pass of the reconciler: settles every attempt, capture, void and refund whose
    /// outcome is unknown and that is older than the grace period, by asking the network again
    /// with the same key (it answers with the first outcome, or applies the operation now).
    pub async fn reconcile_once(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let cutoff = self.env.now().minus(self.config.reconcile_grace).millis();
        let passes = self.sightings.passes(self.config.reconcile_grace);
        let previous = std::mem::take(&mut *self.sightings.seen.lock().unwrap_or_else(|e| e.into_inner()));
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        // Too young by its own timestamp, and not yet seen unsettled for a whole grace.
        let mut wait = |key: String, stamped: Option<i64>| -> bool {
            let n = previous.get(&key).copied().unwrap_or(0) + 1;
            seen.insert(key, n);
            in_grace(stamped, cutoff, n, passes)
        };
        match self.db.find::<IntentRecord>(None, Index::K2, "processing", 200).await {
            Ok(list) => {
                for v in list {
                    if wait(format!("attempt:{}", v.value.intent.id), v.value.processing_since) {
                        continue;
                    }
                    match self.resume_attempt(v.value, None).await {
                        Err(e) if e.status >= 500 => report.unresolved += 1,
                        _ => report.attempts += 1,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler cannot list processing intents"),
        }
        match self.db.find::<IntentRecord>(None, Index::K2, "pending_op", 200).await {
            Ok(list) => {
                for v in list {
                    if wait(
                        format!("follow_up:{}", v.value.intent.id),
                        v.value.pending.as_ref().map(|p| p.since),
                    ) {
                        continue;
                    }
                    match self.resume_follow_up(&v.value.account, &v.value.intent.id, None).await {
                        Err(e) if e.status >= 500 => report.unresolved += 1,
                        _ => report.follow_ups += 1,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler cannot list pending operations"),
        }
        match self.db.find::<RefundRecord>(None, Index::K2, "pending", 200).await {
            Ok(list) => {
                for v in list {
                    if wait(format!("refund:{}", v.value.refund.id), Some(v.value.created_ms)) {
                        continue;
                    }
                    match self.resume_refund(v.value, None).await {
                        Ok(r) if r.status == RefundStatus::Pending => report.unresolved += 1,
                        Err(_) => report.unresolved += 1,
                        Ok(_) => report.refunds += 1,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler cannot list pending refunds"),
        }
        *self.sightings.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        report
    }

    /// Runs the reconciler every `every` until `stop` resolves.
    pub async fn run_reconciler<S: std::future::Future<Output = ()>>(self: Arc<Self>, every: Duration, stop: S) {
        self.sightings.every_ms.store(
            u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            let r = self.reconcile_once().await;
            if r != ReconcileReport::default() {
                tracing::info!(
                    attempts = r.attempts,
                    follow_ups = r.follow_ups,
                    refunds = r.refunds,
                    unresolved = r.unresolved,
                    "reconciler pass"
                );
            }
        }
    }
}

fn not_assessed() -> RiskVerdict {
    RiskVerdict {
        risk_level: "not_assessed".into(),
        risk_score: None,
        rule: None,
        action: RiskAction::Allow,
        fallback: None,
    }
}

/// Checks an amount (see [`pay_core::money::validate_charge_amount`]).
pub fn validate_amount(param: &str, amount: i64, currency: Currency) -> Result<(), ApiError> {
    pay_core::money::validate_charge_amount(param, amount, currency)
}

fn list_query(account: &AccountId, req: &ListRequest, filter: Option<(Index, String)>) -> ListQuery {
    ListQuery {
        table: Table::PaymentIntents,
        account: account.to_string(),
        filter,
        created_gte: req.created_gte.map(|s| s.saturating_mul(1000)),
        created_lt: req.created_lt.map(|s| s.saturating_mul(1000)),
        starting_after: req.starting_after.clone(),
        ending_before: req.ending_before.clone(),
        limit: req.limit.clamp(1, 100),
    }
}

fn list_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) if m.contains("cursor") => ApiError::invalid_param(
            "starting_after",
            "resource_missing",
            "The object given as a pagination cursor does not exist.",
        )
        .with_status(404),
        other => store(other),
    }
}

#[cfg(test)]
mod reconcile_grace_tests {
    use super::*;

    #[test]
    fn an_item_stamped_by_a_clock_running_ahead_is_settled_after_a_grace_of_passes() {
        // Stamped 120 s ahead of the reconciler's clock (written before the clock was stepped
        // back): by its timestamp it stays young for two more minutes.
        let now = 1_000_000;
        let cutoff = now - 4_000;
        let stamped = Some(now + 120_000);
        let passes = Some(2); // a 4 s grace at one pass every 2 s
        assert!(in_grace(stamped, cutoff, 1, passes));
        assert!(in_grace(stamped, cutoff, 2, passes));
        assert!(
            !in_grace(stamped, cutoff, 3, passes),
            "due on the third pass that sees it"
        );
        // Without a period (reconcile_once called directly) only the timestamp counts.
        assert!(in_grace(stamped, cutoff, 100, None));
    }

    #[test]
    fn an_old_or_unstamped_item_is_due_at_once() {
        assert!(!in_grace(Some(1_000), 5_000, 1, Some(2)));
        assert!(!in_grace(None, 5_000, 1, Some(2)));
        assert!(!in_grace(Some(1_000), 5_000, 1, None));
    }

    #[test]
    fn passes_cover_the_grace() {
        let s = Sightings::default();
        assert_eq!(s.passes(Duration::from_secs(4)), None, "no period yet");
        s.every_ms.store(2_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(s.passes(Duration::from_secs(4)), Some(2));
        s.every_ms.store(3_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(s.passes(Duration::from_secs(4)), Some(2));
        s.every_ms.store(10_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(s.passes(Duration::from_secs(5)), Some(1));
    }
}
