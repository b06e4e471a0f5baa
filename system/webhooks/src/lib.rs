//! Webhook delivery: committed events reach every subscribed merchant endpoint, signed, retried
//! for about three days, and never an event whose change did not commit.
//!
//! The path of an event (see docs/webhooks.md):
//!
//! 1. A service commits a change and its event in one transaction (the outbox).
//! 2. **Fan-out**: the fan-out reads committed events from the outbox, in sequence order, and
//!    each becomes one delivery message per subscribed, enabled endpoint. The messages are sent
//!    in one transaction with marking the events ([`pay_queue::Outbox::fan_out`]), so each
//!    event is fanned out exactly once; rolled-back changes have no event to fan out.
//! 3. **Delivery**: a POST with both signature schemes ([`signing`]); a 2xx acknowledges the
//!    message; anything else is retried on the schedule [`RETRY_DELAYS`] (plus jitter) through
//!    the queue's delayed redelivery; 410 Gone disables the endpoint; after the last attempt the
//!    delivery goes to the dead letters, from where it can be redriven or the event resent.
//!
//! Every message can be delivered more than once (a worker can die between the POST and the
//! acknowledgement), so receivers dedupe by event id (`webhook-id` carries it) — that makes the
//! effect exactly once. FIFO endpoints get their events one at a time, in commit order.

#![warn(missing_docs)]

pub mod endpoints;
pub mod outbound;
pub mod routes;
pub mod signing;
pub mod worker;

use pay_core::Env;
use pay_hsm::Hsm;
use pay_net::metrics::Metrics;
use pay_queue::{Mode, Outbox, QueueConfig, StoreQueue};
use pay_store::Db;
use std::sync::Arc;
use std::time::Duration;

pub use outbound::{Cidr, Outbound, SsrfPolicy};
pub use worker::TickReport;

/// Waits between delivery attempts: the first attempt is immediate, then 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (ten attempts over about three days).
pub const RETRY_DELAYS: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// Deliveries to standard endpoints (parallel).
pub const DELIVERIES_QUEUE: &str = "webhook_deliveries";
/// Deliveries to FIFO endpoints (one in flight per endpoint).
pub const FIFO_DELIVERIES_QUEUE: &str = "webhook_deliveries_fifo";

/// Tunables of the webhook service.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// Per-attempt timeout of a POST.
    pub attempt_timeout: Duration,
    /// How long a received message stays hidden (must exceed `attempt_timeout`).
    pub visibility: Duration,
    /// Deliveries attempted concurrently per queue per pass.
    pub concurrency: u32,
    /// Wait between passes when there was nothing to do.
    pub idle_poll: Duration,
    /// Up to this fraction of each retry delay is added as random jitter.
    pub jitter: f64,
    /// How often queue depth metrics are refreshed.
    pub metrics_every: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            attempt_timeout: Duration::from_secs(15),
            visibility: Duration::from_secs(60),
            concurrency: 32,
            idle_poll: Duration::from_millis(200),
            jitter: 0.1,
            metrics_every: Duration::from_secs(5),
        }
    }
}

/// The webhook service: endpoint management and the delivery pipeline.
pub struct Webhooks {
    pub(crate) db: Db,
    pub(crate) env: Env,
    pub(crate) hsm: Arc<dyn Hsm>,
    pub(crate) outbound: Outbound,
    pub(crate) metrics: Metrics,
    pub(crate) config: WebhooksConfig,
    pub(crate) outbox: Outbox,
    pub(crate) deliveries: StoreQueue,
    pub(crate) fifo_deliveries: StoreQueue,
    pub(crate) last_metrics: std::sync::Mutex<Option<i64>>,
}

impl Webhooks {
    /// A webhook service over `db`, sealing secrets with `hsm` and posting through `outbound`.
    pub fn new(
        db: Db,
        env: Env,
        hsm: Arc<dyn Hsm>,
        outbound: Outbound,
        metrics: Metrics,
        config: WebhooksConfig,
    ) -> Webhooks {
        let q = |name: &str, mode: Mode, visibility: Duration, max_receives: u32| {
            StoreQueue::new(
                db.clone(),
                env.clone(),
                QueueConfig {
                    name: name.into(),
                    mode,
                    visibility,
                    max_receives,
                },
            )
        };
        // A delivery is received once per attempt; the extra receives absorb redeliveries
        // after worker crashes before the queue's own dead-lettering steps in.
        let max_delivery_receives = RETRY_DELAYS.len() as u32 + 1 + 5;
        Webhooks {
            outbox: Outbox::new(db.clone(), env.clone()),
            deliveries: q(
                DELIVERIES_QUEUE,
                Mode::Standard,
                config.visibility,
                max_delivery_receives,
            ),
            fifo_deliveries: q(
                FIFO_DELIVERIES_QUEUE,
                Mode::Fifo,
                config.visibility,
                max_delivery_receives,
            ),
            db,
            env,
            hsm,
            outbound,
            metrics,
            config,
            last_metrics: std::sync::Mutex::new(None),
        }
    }

    /// The queue of deliveries to standard or FIFO endpoints.
    pub fn delivery_queue(&self, fifo: bool) -> &StoreQueue {
        if fifo {
            &self.fifo_deliveries
        } else {
            &self.deliveries
        }
    }
}
