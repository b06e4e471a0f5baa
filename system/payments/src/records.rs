//! What the payment service stores: each public object wrapped with the internal facts that
//! must never be shown (vault token, network authorization id, in-flight operations).

use pay_core::{AccountId, AttemptId, Timestamp};
use pay_proto::acquirer::NetworkResult;
use pay_proto::objects::{Charge, IntentStatus, PaymentIntent, Refund, RefundStatus};
use pay_proto::payments::PaymentMethodRef;
use pay_store::{Entity, Table};
use serde::{Deserialize, Serialize};

/// A capture or void sent (or about to be sent) to the network, not yet recorded as done.
/// While one is pending the intent accepts no other capture or cancel; the reconciler and any
/// retry resume it with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    /// What is in flight.
    pub kind: PendingKind,
    /// The network idempotency key.
    pub key: String,
    /// Amount (capture).
    pub amount: i64,
    /// Why canceled (void).
    pub cancellation_reason: Option<String>,
    /// When it started (Unix ms).
    pub since: i64,
}

/// Kinds of in-flight follow-up operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// Capture of the authorization.
    Capture,
    /// Release of the authorization (cancel).
    Void,
}

/// A PaymentIntent with its internal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// Owning merchant.
    pub account: AccountId,
    /// The public object.
    pub intent: PaymentIntent,
    /// The attached payment method, with its vault token.
    pub payment_method: Option<PaymentMethodRef>,
    /// Authorization attempts made so far; attempt ids derive from (intent, number).
    pub attempt_count: u32,
    /// The network authorization of the successful attempt.
    pub authorization_id: Option<String>,
    /// A capture or void in flight.
    pub pending: Option<PendingOp>,
    /// When the intent entered `processing` (Unix ms), for the reconciler's grace period.
    pub processing_since: Option<i64>,
    /// Unix ms, for ordering (the public `created` is in seconds).
    pub created_ms: i64,
}

impl IntentRecord {
    /// The index value the reconciler scans: `pending_op` while a follow-up is in flight,
    /// else the status.
    pub fn index_state(&self) -> String {
        if self.pending.is_some() {
            "pending_op".to_owned()
        } else {
            self.intent.status.as_str().to_owned()
        }
    }

    /// The id of attempt number `n`.
    pub fn attempt_id(&self, n: u32) -> AttemptId {
        AttemptId::derived(&[self.intent.id.as_str(), &n.to_string()])
    }
}

impl Entity for IntentRecord {
    const TABLE: Table = Table::PaymentIntents;
    fn id(&self) -> &str {
        self.intent.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        self.intent.customer.as_ref().map(|c| c.to_string())
    }
    fn k2(&self) -> Option<String> {
        Some(self.index_state())
    }
}

/// State of an authorization attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Recorded before the network call: the recovery point. The network outcome is unknown
    /// until it is settled.
    Authorizing,
    /// The network approved.
    Approved,
    /// The network declined, or fraud blocked it before the network.
    Declined,
}

/// Fraud's verdict recorded on the attempt and copied to the charge's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskVerdict {
    /// `normal`, `elevated`, `highest`, or `not_assessed`.
    pub risk_level: String,
    /// 0–99 when assessed.
    pub risk_score: Option<u8>,
    /// The rule that fired.
    pub rule: Option<String>,
    /// What to do.
    pub action: RiskAction,
    /// How the verdict was reached when fraud was unreachable (`fail_open`/`fail_closed`).
    pub fallback: Option<String>,
}

/// What fraud detection decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskAction {
    /// Proceed.
    Allow,
    /// Proceed, but open a review.
    Review,
    /// Decline without calling the network.
    Block,
}

/// One authorization attempt: the recovery point of a confirm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// `pa_…`, derived from the intent id and attempt number.
    pub id: AttemptId,
    /// Merchant.
    pub account: AccountId,
    /// The intent.
    pub intent: String,
    /// Attempt number (1-based).
    pub number: u32,
    /// The network idempotency key (derived from the attempt id).
    pub network_key: String,
    /// Amount authorized.
    pub amount: i64,
    /// Capture together with the authorization.
    pub capture: bool,
    /// The card used.
    pub payment_method: PaymentMethodRef,
    /// State.
    pub state: AttemptState,
    /// Fraud's verdict.
    pub risk: RiskVerdict,
    /// The network's answer once known.
    pub result: Option<NetworkResult>,
    /// Unix ms.
    pub created_ms: i64,
}

impl Attempt {
    /// The network idempotency key of an attempt: a pure function of the attempt id, so every
    /// retry of the same attempt asks the network with the same key.
    pub fn network_key_for(id: &AttemptId) -> String {
        format!("{id}:authorize")
    }
}

impl Entity for Attempt {
    const TABLE: Table = Table::PaymentAttempts;
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.intent.clone())
    }
    fn k2(&self) -> Option<String> {
        Some(format!("{:?}", self.state).to_lowercase())
    }
}

/// A Charge with its internal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRecord {
    /// Merchant.
    pub account: AccountId,
    /// The public object.
    pub charge: Charge,
    /// The network authorization.
    pub authorization_id: Option<String>,
    /// Sum of refunds sent but not yet settled.
    pub refund_pending: i64,
    /// Unix ms.
    pub created_ms: i64,
}

impl ChargeRecord {
    /// What may still be refunded: captured, minus refunded, minus refunds in flight.
    pub fn refundable(&self) -> i64 {
        self.charge.amount_captured - self.charge.amount_refunded - self.refund_pending
    }
}

impl Entity for ChargeRecord {
    const TABLE: Table = Table::Charges;
    fn id(&self) -> &str {
        self.charge.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        self.charge.payment_intent.as_ref().map(|p| p.to_string())
    }
}

/// A Refund with its internal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// Merchant.
    pub account: AccountId,
    /// The public object.
    pub refund: Refund,
    /// The network authorization refunded.
    pub authorization_id: String,
    /// The network idempotency key.
    pub network_key: String,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for RefundRecord {
    const TABLE: Table = Table::Refunds;
    fn id(&self) -> &str {
        self.refund.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        self.refund.charge.as_ref().map(|c| c.to_string())
    }
    fn k2(&self) -> Option<String> {
        Some(
            match self.refund.status {
                RefundStatus::Pending => "pending",
                RefundStatus::Succeeded => "succeeded",
                RefundStatus::Failed => "failed",
                RefundStatus::Canceled => "canceled",
            }
            .to_owned(),
        )
    }
}

/// Whether `status` is one an intent can be updated in.
pub fn updatable(status: IntentStatus) -> bool {
    matches!(
        status,
        IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation | IntentStatus::RequiresAction
    )
}
