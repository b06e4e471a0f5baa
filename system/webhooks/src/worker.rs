//! The delivery pipeline: fan-out and delivery passes (see the crate docs).

use crate::endpoints::EndpointRecord;
use crate::signing::{standard_signature_header, stripe_signature_header};
use crate::{Webhooks, RETRY_DELAYS};
use bytes::Bytes;
use pay_core::{AccountId, ApiError, Event};
use pay_proto::webhooks::{ResendEvent, Resent};
use pay_queue::{FanOut, Outgoing, Queue, QueueError, QueueMessage};
use pay_store::{Received, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The wait before the next attempt after a failed one, or `None` when the delivery is given up.
///
/// The schedule is [`RETRY_DELAYS`], indexed by how often the message was received. A receive
/// can also end before the endpoint is called (the HSM or the database unavailable, answered
/// by a short retry), and those must not spend the merchant's retries: a message whose receives
/// ran past the schedule while it is younger than the schedule's span (about three days) keeps
/// to the schedule by age instead, and is given up only once that span has passed.
pub fn next_retry_delay(receive_count: u32, age_ms: u64) -> Option<Duration> {
    if let Some(d) = RETRY_DELAYS.get((receive_count as usize).saturating_sub(1)) {
        return Some(*d);
    }
    let min_gap = RETRY_DELAYS[0].as_millis() as u64;
    let mut at = 0u64;
    for d in RETRY_DELAYS {
        at += d.as_millis() as u64;
        if at >= age_ms + min_gap {
            return Some(Duration::from_millis(at - age_ms));
        }
    }
    None
}

/// One delivery: an event for an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The merchant.
    pub account: AccountId,
    /// `we_…`
    pub endpoint: String,
    /// The event as it is POSTed.
    pub event: Event,
}

/// What one pass did (tests and the simulator drive passes directly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Outbox events fanned out (each turned into its delivery messages, possibly none).
    pub fanned_out: u64,
    /// Delivery messages created.
    pub enqueued: u64,
    /// Deliveries acknowledged by the endpoint (2xx).
    pub delivered: u64,
    /// Deliveries that failed and will be retried.
    pub retried: u64,
    /// Deliveries moved to the dead letters.
    pub dead: u64,
    /// Deliveries dropped because their endpoint was deleted.
    pub dropped: u64,
}

impl TickReport {
    /// True when the pass did anything.
    pub fn busy(&self) -> bool {
        self.fanned_out + self.delivered + self.retried + self.dead + self.dropped > 0
    }
}

/// Why a pass stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The queue or database failed; the pass is retried later and loses nothing.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

enum Outcome {
    Delivered,
    Retry(Duration),
    Dead(String),
    Dropped,
}

impl Webhooks {
    /// Runs passes until `stop` resolves.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let busy = match self.tick().await {
                Ok(r) => r.busy(),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook pass failed; retrying");
                    false
                }
            };
            let pause = if busy { Duration::ZERO } else { self.config.idle_poll };
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: fan out, deliver, refresh metrics.
    pub async fn tick(&self) -> Result<TickReport, PassError> {
        let mut r = TickReport::default();
        for _ in 0..10 {
            if !self.fan_out(&mut r).await? {
                break;
            }
        }
        let (mut standard, mut fifo) = (TickReport::default(), TickReport::default());
        let (a, b) = tokio::join!(self.deliver(false, &mut standard), self.deliver(true, &mut fifo));
        a?;
        b?;
        for x in [standard, fifo] {
            r.delivered += x.delivered;
            r.retried += x.retried;
            r.dead += x.dead;
            r.dropped += x.dropped;
        }
        self.refresh_metrics().await;
        Ok(r)
    }

    /// Fans out one batch of pending outbox events; true when more may be pending.
    async fn fan_out(&self, r: &mut TickReport) -> Result<bool, PassError> {
        const BATCH: u32 = 200;
        let batch = self.outbox.pending(BATCH).await?;
        let oldest = batch
            .events
            .first()
            .map_or(0, |e| self.env.now().millis() / 1000 - e.event.created);
        self.metrics.set(
            "webhook_outbox_oldest_age_seconds",
            "Age of the oldest committed event the fan-out had not handled when its pass began.",
            &[],
            oldest.max(0) as f64,
        );
        if batch.is_empty() {
            return Ok(false);
        }
        let more = batch.len() as u32 >= BATCH;
        let mut endpoints: BTreeMap<String, Vec<EndpointRecord>> = BTreeMap::new();
        let mut fan_outs = Vec::with_capacity(batch.len());
        for &seq in &batch.unreadable {
            // Not an event this version can read: it is marked with no deliveries, so that it
            // cannot hold back every later event; the row stays in the outbox for inspection.
            tracing::error!(seq, "outbox row is not a readable event; fanned out with no deliveries");
            self.metrics.inc(
                "webhook_outbox_unreadable_total",
                "Outbox rows the fan-out could not read as events (marked with no deliveries).",
                &[],
                1,
            );
            fan_outs.push(FanOut { seq, messages: vec![] });
        }
        for stored in batch.events {
            // The event as endpoints see it: without the account, with its delivery count.
            let mut shown = stored.event;
            let mut messages = vec![];
            if let Some(account) = shown.account.take() {
                if !endpoints.contains_key(account.as_str()) {
                    let all = self.all_endpoints(account.as_str()).await?;
                    endpoints.insert(account.to_string(), all);
                }
                let targets: Vec<&EndpointRecord> = endpoints[account.as_str()]
                    .iter()
                    .filter(|e| e.is_enabled() && e.subscribes_to(&shown.kind))
                    .collect();
                shown.pending_webhooks = targets.len() as u32;
                for ep in targets {
                    let d = Delivery {
                        account: account.clone(),
                        endpoint: ep.endpoint.id.clone(),
                        event: shown.clone(),
                    };
                    let out = Outgoing {
                        group: Some(ep.endpoint.id.clone()),
                        dedup: Some(format!("{}/{}", shown.id, ep.endpoint.id)),
                        body: serde_json::to_value(&d).unwrap_or_default(),
                        delay: Duration::ZERO,
                    };
                    messages.push((self.delivery_queue(ep.endpoint.fifo), out));
                }
            }
            fan_outs.push(FanOut {
                seq: stored.seq,
                messages,
            });
        }
        fan_outs.sort_by_key(|f| f.seq);
        // The batch's messages and its events' marks commit together, in event order (which
        // the FIFO endpoints' groups keep); events another fan-out marked meanwhile send nothing.
        let counts: BTreeMap<i64, usize> = fan_outs.iter().map(|f| (f.seq, f.messages.len())).collect();
        for seq in self.outbox.fan_out(fan_outs).await? {
            r.fanned_out += 1;
            r.enqueued += counts.get(&seq).copied().unwrap_or(0) as u64;
        }
        Ok(more)
    }

    async fn deliver(&self, fifo: bool, r: &mut TickReport) -> Result<(), PassError> {
        let q = self.delivery_queue(fifo);
        let batch = q.receive(self.config.concurrency).await?;
        let parsed: Vec<Option<Delivery>> = batch
            .iter()
            .map(|m| serde_json::from_value(m.message.body.clone()).ok())
            .collect();
        // Each endpoint is read once per pass, however many of the batch's deliveries go to it.
        let keys: std::collections::BTreeSet<(&str, &str)> = parsed
            .iter()
            .flatten()
            .map(|d| (d.account.as_str(), d.endpoint.as_str()))
            .collect();
        let loaded = futures::future::join_all(keys.iter().map(|&(account, id)| async move {
            let rec = self.db.get_owned::<EndpointRecord>(account, id).await;
            ((account, id), rec.map(|o| o.map(|r| r.value)))
        }))
        .await;
        let endpoints: BTreeMap<(&str, &str), Result<Option<EndpointRecord>, StoreError>> =
            loaded.into_iter().collect();
        let results = futures::future::join_all(batch.iter().zip(&parsed).map(|(m, d)| {
            let endpoint = d
                .as_ref()
                .and_then(|d| endpoints.get(&(d.account.as_str(), d.endpoint.as_str())));
            async move {
                match (d, endpoint) {
                    (Some(d), Some(endpoint)) => self.attempt(m, d, endpoint).await,
                    _ => Outcome::Dead("not a delivery".into()),
                }
            }
        }))
        .await;
        // Successful deliveries are acknowledged together at the end of the pass.
        let mut acks = vec![];
        for (m, outcome) in batch.iter().zip(results) {
            let label = match outcome {
                Outcome::Delivered => {
                    acks.push(m.receipt.clone());
                    r.delivered += 1;
                    "delivered"
                }
                Outcome::Retry(delay) => {
                    ack_or_stale(q.nack(&m.receipt, delay).await)?;
                    r.retried += 1;
                    "retry"
                }
                Outcome::Dead(reason) => {
                    ack_or_stale(q.dead_letter(&m.receipt, &reason).await)?;
                    r.dead += 1;
                    "dead_letter"
                }
                Outcome::Dropped => {
                    acks.push(m.receipt.clone());
                    r.dropped += 1;
                    "dropped"
                }
            };
            self.metrics.inc(
                "webhook_deliveries_total",
                "Webhook delivery attempts by outcome.",
                &[("outcome", label)],
                1,
            );
        }
        // A receipt gone stale (the attempt outlived the visibility timeout) means the delivery
        // may be attempted again: at least once, as before.
        ack_or_stale(q.ack_all(&acks).await)?;
        Ok(())
    }

    fn retry_or_die(&self, m: &QueueMessage, why: &str) -> Outcome {
        let age_ms = (self.env.now().millis() - m.created).max(0) as u64;
        match next_retry_delay(m.receive_count, age_ms) {
            Some(base) => {
                let base_ms = base.as_millis() as u64;
                let spread = (base_ms as f64 * self.config.jitter) as u64;
                let jitter = if spread > 0 { self.env.entropy.below(spread) } else { 0 };
                Outcome::Retry(Duration::from_millis(base_ms + jitter))
            }
            None => Outcome::Dead(format!(
                "retries exhausted after {} attempts over {} h (last: {why})",
                m.receive_count,
                age_ms / 3_600_000
            )),
        }
    }

    /// One delivery attempt of `d` (the message `m`) to its endpoint, as read this pass.
    async fn attempt(
        &self,
        m: &Received,
        d: &Delivery,
        endpoint: &Result<Option<EndpointRecord>, StoreError>,
    ) -> Outcome {
        let rec = match endpoint {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Dropped,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load webhook endpoint; retrying");
                return Outcome::Retry(Duration::from_secs(5));
            }
        };
        if !rec.is_enabled() {
            return Outcome::Dead("endpoint disabled".into());
        }
        let secrets = match self.signing_secrets(rec).await {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return Outcome::Dead("endpoint has no signing secret".into()),
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %rec.endpoint.id, "cannot unseal webhook secret; retrying");
                return Outcome::Retry(Duration::from_secs(5));
            }
        };
        let body = match serde_json::to_vec_pretty(&d.event) {
            Ok(b) => Bytes::from(b),
            Err(_) => return Outcome::Dead("event not serializable".into()),
        };
        let t = self.env.now().unix_secs();
        let refs: Vec<&pay_core::SecretString> = secrets.iter().collect();
        let stripe = stripe_signature_header(&refs, t, &body);
        let standard = match standard_signature_header(&refs, d.event.id.as_str(), t, &body) {
            Ok(s) => s,
            Err(_) => return Outcome::Dead("invalid signing secret".into()),
        };
        let headers = [
            ("content-type", "application/json; charset=utf-8".to_owned()),
            (
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_owned(),
            ),
            ("stripe-signature", stripe),
            ("webhook-id", d.event.id.to_string()),
            ("webhook-timestamp", t.to_string()),
            ("webhook-signature", standard),
        ];
        let answer = self
            .outbound
            .post(&rec.endpoint.url, &headers, body, self.config.attempt_timeout)
            .await;
        match answer {
            Ok(a) if (200..300).contains(&a.status) => {
                tracing::info!(event = %d.event.id, endpoint = %rec.endpoint.id, attempt = m.message.receive_count, "webhook delivered");
                Outcome::Delivered
            }
            Ok(a) if a.status == 410 => {
                self.disable(&d.account, &rec.endpoint.id, "the endpoint answered 410 Gone")
                    .await;
                Outcome::Dead("endpoint answered 410 Gone; endpoint disabled".into())
            }
            Ok(a) => {
                tracing::info!(event = %d.event.id, endpoint = %rec.endpoint.id, status = a.status, attempt = m.message.receive_count, "webhook attempt failed");
                self.retry_or_die(&m.message, &format!("HTTP {}", a.status))
            }
            Err(crate::outbound::OutboundError::Forbidden(what)) => {
                tracing::warn!(endpoint = %rec.endpoint.id, target = %what, "webhook URL refused by the SSRF guard");
                Outcome::Dead(format!("refused: {what} is not a public address"))
            }
            Err(e) => {
                tracing::info!(event = %d.event.id, endpoint = %rec.endpoint.id, error = %e, attempt = m.message.receive_count, "webhook attempt failed");
                self.retry_or_die(&m.message, &e.to_string())
            }
        }
    }

    async fn disable(&self, account: &AccountId, id: &str, reason: &str) {
        for _ in 0..3 {
            let Ok(Some(cur)) = self.db.get_owned::<EndpointRecord>(account.as_str(), id).await else {
                return;
            };
            let mut rec = cur.value.clone();
            rec.endpoint.status = "disabled".into();
            rec.disabled_reason = Some(reason.to_owned());
            let mut t = self.db.txn();
            t.update(cur.version, &rec);
            if self.db.commit(t).await.is_ok() {
                tracing::warn!(endpoint = %id, reason, "webhook endpoint disabled");
                return;
            }
        }
    }

    async fn refresh_metrics(&self) {
        let now = self.env.now().millis();
        {
            let mut last = self.last_metrics.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|l| now - l < self.config.metrics_every.as_millis() as i64) {
                return;
            }
            *last = Some(now);
        }
        for q in [&self.deliveries, &self.fifo_deliveries] {
            if let Ok(d) = q.depth().await {
                let name = q.config().name.as_str();
                for (state, v) in [
                    ("visible", d.visible),
                    ("in_flight", d.in_flight),
                    ("delayed", d.delayed),
                    ("dead", d.dead),
                ] {
                    self.metrics.set(
                        "webhook_queue_depth",
                        "Messages in the webhook queues by state.",
                        &[("queue", name), ("state", state)],
                        v as f64,
                    );
                }
                self.metrics.set(
                    "webhook_queue_oldest_age_seconds",
                    "Age of the oldest live message.",
                    &[("queue", name)],
                    d.oldest_age_ms as f64 / 1000.0,
                );
            }
        }
    }

    /// Enqueues a delivery of a past event to an endpoint (resending a dead-lettered one, or
    /// any event the merchant asks for).
    pub async fn resend(&self, endpoint: &str, req: ResendEvent) -> Result<Resent, ApiError> {
        let rec = self.endpoint(&req.account, endpoint).await?.value;
        let stored = self
            .db
            .get_event(req.account.as_str(), &req.event)
            .await
            .map_err(|e| e.into_api_error())?
            .ok_or_else(|| ApiError::no_such("event", "event", &req.event))?;
        let mut event = stored.event;
        event.account = None;
        event.pending_webhooks = 1;
        let d = Delivery {
            account: req.account.clone(),
            endpoint: rec.endpoint.id.clone(),
            event,
        };
        let out = Outgoing {
            group: Some(rec.endpoint.id.clone()),
            dedup: req.request_key.map(|k| format!("resend/{}/{k}", rec.endpoint.id)),
            body: serde_json::to_value(&d).unwrap_or_default(),
            delay: Duration::ZERO,
        };
        let ids = self
            .delivery_queue(rec.endpoint.fifo)
            .send(vec![out])
            .await
            .map_err(|e| ApiError::unavailable(format!("webhook queue unavailable: {e}")))?;
        Ok(Resent {
            delivery: ids.into_iter().next().unwrap_or_default(),
        })
    }
}

/// A stale receipt means the message's visibility lapsed and someone else has it now: nothing
/// to do here (the other receiver finishes it).
fn ack_or_stale(r: Result<(), QueueError>) -> Result<(), QueueError> {
    match r {
        Err(QueueError::StaleReceipt) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn the_schedule_follows_the_attempt_count() {
        assert_eq!(next_retry_delay(1, 0), Some(Duration::from_secs(5)));
        assert_eq!(next_retry_delay(2, 5_000), Some(Duration::from_secs(300)));
        assert_eq!(next_retry_delay(9, 50 * H), Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn a_delivery_is_given_up_after_the_tenth_attempt_three_days_on() {
        let span: u64 = RETRY_DELAYS.iter().map(|d| d.as_millis() as u64).sum();
        assert_eq!(next_retry_delay(10, span), None);
        assert_eq!(next_retry_delay(25, span + H), None);
    }

    #[test]
    fn receives_that_never_reached_the_endpoint_do_not_spend_the_retries() {
        // A minute of HSM outage: a dozen 5 s internal retries, then the endpoint fails once.
        let d = next_retry_delay(13, 60_000).expect("still retried");
        // The next attempt is at the schedule's next point after the message's age (5 s + 5 min).
        assert_eq!(d, Duration::from_millis(305_000 - 60_000));
        // Two days in, after many internal retries: still retried, at the schedule's points.
        let d = next_retry_delay(40, 48 * H).expect("still retried");
        assert!(d >= RETRY_DELAYS[0] && d <= Duration::from_secs(24 * 3600), "{d:?}");
    }
}
