//! The PaymentIntent, Charge and Refund state machines as pure functions.
//!
//! Every decision the payment service makes about state lives here, without I/O: the service
//! reads records, calls one of these functions, and commits what it returns (the new records
//! and the events announcing them) in one transaction. The property tests at the bottom drive
//! random operation sequences with random network outcomes through exactly these functions and
//! check that no illegal transition happens and that refunds never exceed what was captured.

use crate::records::*;
use pay_core::{ApiError, AttemptId, ChargeId, JsonText, RefundId, ReviewId, Timestamp};
use pay_proto::acquirer::NetworkResult;
use pay_proto::objects::*;
use pay_proto::payments::PaymentMethodRef;
use serde_json::Value;

/// An event to append: its type and the object it carries.
pub type PendingEvent = (&'static str, JsonText);

/// True when a PaymentIntent may move from `from` (`None`: creation) to `to`.
pub fn legal_transition(from: Option<IntentStatus>, to: IntentStatus) -> bool {
    use IntentStatus::*;
    match from {
        None => matches!(to, RequiresPaymentMethod | RequiresConfirmation | Processing),
        Some(from) if from == to => true,
        Some(RequiresPaymentMethod) => matches!(to, RequiresConfirmation | Processing | Canceled),
        Some(RequiresConfirmation) => matches!(to, RequiresPaymentMethod | Processing | Canceled),
        Some(RequiresAction) => matches!(to, RequiresPaymentMethod | Processing | Canceled),
        Some(Processing) => matches!(to, RequiresPaymentMethod | RequiresAction | RequiresCapture | Succeeded),
        Some(RequiresCapture) => matches!(to, Succeeded | Canceled),
        Some(Succeeded) | Some(Canceled) => false,
    }
}

/// The error for an operation the intent's state does not allow.
pub fn unexpected_state(op: &str, intent: &PaymentIntent) -> ApiError {
    ApiError::unexpected_state(
        "payment_intent_unexpected_state",
        format!(
            "You cannot {op} this PaymentIntent because it has a status of {}.",
            intent.status.as_str()
        ),
    )
    .with_payment_intent(serde_json::to_value(intent).unwrap_or(Value::Null))
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Starts an authorization attempt: the intent moves to `processing` and the attempt is
/// recorded as `authorizing` (the recovery point) before the network is called.
pub fn begin_attempt(
    rec: &IntentRecord,
    pm: Option<PaymentMethodRef>,
    capture_method: Option<CaptureMethod>,
    risk: RiskVerdict,
    now: Timestamp,
) -> Result<(IntentRecord, Attempt), ApiError> {
    if !updatable(rec.intent.status) {
        return Err(unexpected_state("confirm", &rec.intent));
    }
    let Some(pm) = pm.or_else(|| rec.payment_method.clone()) else {
        return Err(ApiError::unexpected_state(
            "payment_intent_unexpected_state",
            "You cannot confirm this PaymentIntent because it's missing a payment method. Update the PaymentIntent with a payment_method and then confirm it again.",
        )
        .with_payment_intent(json(&rec.intent)));
    };
    let mut next = rec.clone();
    let number = rec.attempt_count + 1;
    let id = rec.attempt_id(number);
    if let Some(cm) = capture_method {
        next.intent.capture_method = cm;
    }
    next.intent.status = IntentStatus::Processing;
    next.intent.payment_method = Some(pm.id.clone());
    next.intent.last_payment_error = None;
    next.payment_method = Some(pm.clone());
    next.attempt_count = number;
    next.processing_since = Some(now.millis());
    let attempt = Attempt {
        network_key: Attempt::network_key_for(&id),
        id,
        account: rec.account.clone(),
        intent: rec.intent.id.to_string(),
        number,
        amount: rec.intent.amount,
        capture: next.intent.capture_method != CaptureMethod::Manual,
        payment_method: pm,
        state: AttemptState::Authorizing,
        risk,
        result: None,
        created_ms: now.millis(),
    };
    Ok((next, attempt))
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// The network answered (approved or declined).
    Network(NetworkResult),
    /// Fraud detection blocked it; the network was never called.
    Blocked,
    /// The card could not be used at all (the tokenizer refused before the network).
    Refused(ApiError),
}

/// The records and events a settled attempt produces, and the error to answer with if it
/// failed.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The intent after the attempt.
    pub intent: IntentRecord,
    /// The attempt, settled.
    pub attempt: Attempt,
    /// The charge the attempt produced.
    pub charge: ChargeRecord,
    /// Events to append.
    pub events: Vec<PendingEvent>,
    /// The card error for a failed attempt (402, with the intent attached).
    pub error: Option<ApiError>,
}

/// The charge id of an attempt (derived, so re-settling never creates a second charge).
pub fn charge_id_for(attempt: &AttemptId) -> ChargeId {
    ChargeId::derived(&[attempt.as_str()])
}

fn card_details(pm: &PaymentMethodRef, cvc: Option<CheckResult>, ntx: Option<String>) -> PaymentMethodDetails {
    let c = &pm.card;
    PaymentMethodDetails {
        kind: "card".to_owned(),
        card: ChargeCard {
            brand: c.brand,
            checks: CardChecks {
                cvc_check: cvc,
                ..CardChecks::default()
            },
            country: c.country.clone(),
            exp_month: c.exp_month,
            exp_year: c.exp_year,
            fingerprint: c.fingerprint.clone(),
            funding: c.funding.clone(),
            last4: c.last4.clone(),
            network: c.brand.as_str().to_owned(),
            network_transaction_id: ntx,
        },
    }
}

/// Applies an attempt's outcome. `review` is the id to give a review opened by a Review verdict.
pub fn settle_attempt(
    rec: &IntentRecord,
    attempt: &Attempt,
    outcome: &AttemptOutcome,
    review: Option<ReviewId>,
    now: Timestamp,
) -> Settlement {
    let mut intent = rec.clone();
    let mut attempt = attempt.clone();
    let charge_id = charge_id_for(&attempt.id);
    let (approved, decline, result) = match outcome {
        AttemptOutcome::Network(r) => (r.approved, r.decline.clone(), Some(r.clone())),
        AttemptOutcome::Blocked => (
            false,
            Some(pay_proto::acquirer::Decline {
                code: "card_declined".into(),
                decline_code: "fraudulent".into(),
                message: "Your card was declined.".into(),
            }),
            None,
        ),
        AttemptOutcome::Refused(e) => (
            false,
            Some(pay_proto::acquirer::Decline {
                code: e.code.clone().unwrap_or_else(|| "card_declined".into()),
                decline_code: e.decline_code.clone().unwrap_or_else(|| "generic_decline".into()),
                message: e.message.clone(),
            }),
            None,
        ),
    };
    let network_status = match outcome {
        AttemptOutcome::Network(r) if r.approved => "approved_by_network",
        AttemptOutcome::Network(_) => "declined_by_network",
        _ => "not_sent_to_network",
    };
    let review_open = approved && attempt.risk.action == RiskAction::Review;
    let outcome_type = match (approved, outcome) {
        (true, _) if review_open => "manual_review",
        (true, _) => "authorized",
        (false, AttemptOutcome::Blocked) => "blocked",
        (false, AttemptOutcome::Refused(_)) => "invalid",
        (false, _) => "issuer_declined",
    };
    let seller_message = match outcome_type {
        "authorized" => "Payment complete.",
        "manual_review" => "Payment complete, placed in review.",
        "blocked" => "Stripe blocked this payment as too risky.",
        _ => "The bank did not return any further details with this decline.",
    };
    let amount = attempt.amount;
    let captured = approved && attempt.capture;
    let cvc = result.as_ref().and_then(|r| r.cvc_check);
    let ntx = result.as_ref().and_then(|r| r.network_transaction_id.clone());
    let charge = Charge {
        id: charge_id.clone(),
        object: "charge".into(),
        amount,
        amount_captured: if captured { amount } else { 0 },
        amount_refunded: 0,
        captured,
        created: now.unix_secs(),
        currency: rec.intent.currency,
        customer: rec.intent.customer.clone(),
        description: rec.intent.description.clone(),
        failure_code: decline.as_ref().map(|d| d.code.clone()),
        failure_message: decline.as_ref().map(|d| d.message.clone()),
        livemode: false,
        metadata: rec.intent.metadata.clone(),
        outcome: Some(ChargeOutcome {
            network_status: network_status.into(),
            reason: decline.as_ref().map(|d| d.decline_code.clone()),
            risk_level: attempt.risk.risk_level.clone(),
            risk_score: attempt.risk.risk_score,
            rule: attempt.risk.rule.clone(),
            seller_message: seller_message.into(),
            kind: outcome_type.into(),
        }),
        paid: approved,
        payment_intent: Some(rec.intent.id.clone()),
        payment_method: Some(attempt.payment_method.id.clone()),
        payment_method_details: Some(card_details(&attempt.payment_method, cvc, ntx)),
        refunded: false,
        review: if review_open { review.clone() } else { None },
        status: if approved {
            ChargeStatus::Succeeded
        } else {
            ChargeStatus::Failed
        },
    };
    let mut events: Vec<PendingEvent> = vec![];
    intent.processing_since = None;
    intent.intent.latest_charge = Some(charge_id.clone());
    let mut error = None;
    if approved {
        attempt.state = AttemptState::Approved;
        intent.authorization_id = result.as_ref().and_then(|r| r.authorization_id.clone());
        if review_open {
            intent.intent.review = review;
        }
        if captured {
            intent.intent.status = IntentStatus::Succeeded;
            intent.intent.amount_received = amount;
            intent.intent.amount_capturable = 0;
        } else {
            intent.intent.status = IntentStatus::RequiresCapture;
            intent.intent.amount_capturable = amount;
        }
        events.push(("charge.succeeded", JsonText::of_or_null(&charge)));
        if review_open {
            events.push(("review.opened", JsonText::of_or_null(&serde_json::json!({"id": intent.intent.review, "object": "review", "charge": charge_id, "payment_intent": rec.intent.id, "open": true, "reason": "rule", "created": now.unix_secs()}))));
        }
        events.push(if captured {
            ("payment_intent.succeeded", JsonText::of_or_null(&intent.intent))
        } else {
            (
                "payment_intent.amount_capturable_updated",
                JsonText::of_or_null(&intent.intent),
            )
        });
    } else {
        attempt.state = AttemptState::Declined;
        let d = decline.clone().unwrap_or(pay_proto::acquirer::Decline {
            code: "card_declined".into(),
            decline_code: "generic_decline".into(),
            message: "Your card was declined.".into(),
        });
        intent.intent.status = IntentStatus::RequiresPaymentMethod;
        intent.intent.last_payment_error = Some(LastPaymentError {
            kind: "card_error".into(),
            code: Some(d.code.clone()),
            decline_code: Some(d.decline_code.clone()),
            message: d.message.clone(),
            charge: Some(charge_id.clone()),
            payment_method: None,
        });
        events.push(("charge.failed", JsonText::of_or_null(&charge)));
        events.push(("payment_intent.payment_failed", JsonText::of_or_null(&intent.intent)));
        error = Some(
            ApiError::card_declined(&d.code, Some(&d.decline_code), d.message.clone())
                .with_payment_intent(json(&intent.intent)),
        );
    }
    attempt.result = result;
    let charge = ChargeRecord {
        account: rec.account.clone(),
        charge,
        authorization_id: intent.authorization_id.clone().filter(|_| approved),
        refund_pending: 0,
        created_ms: now.millis(),
    };
    Settlement {
        intent,
        attempt,
        charge,
        events,
        error,
    }
}

/// Starts a capture: validates the amount and records the capture as pending.
pub fn begin_capture(
    rec: &IntentRecord,
    amount_to_capture: Option<i64>,
    now: Timestamp,
) -> Result<IntentRecord, ApiError> {
    if rec.intent.status != IntentStatus::RequiresCapture || rec.pending.is_some() {
        return Err(unexpected_state("capture", &rec.intent));
    }
    let amount = amount_to_capture.unwrap_or(rec.intent.amount_capturable);
    if amount <= 0 {
        return Err(ApiError::invalid_param(
            "amount_to_capture",
            "parameter_invalid_integer",
            "The amount to capture must be a positive integer.",
        ));
    }
    if amount > rec.intent.amount_capturable {
        return Err(ApiError::invalid_param(
            "amount_to_capture",
            "amount_too_large",
            format!(
                "The amount to capture ({amount}) is greater than the amount capturable ({}).",
                rec.intent.amount_capturable
            ),
        ));
    }
    let mut next = rec.clone();
    next.pending = Some(PendingOp {
        kind: PendingKind::Capture,
        key: format!("{}:capture", rec.intent.id),
        amount,
        cancellation_reason: None,
        since: now.millis(),
    });
    Ok(next)
}

/// What a settled capture or void produces.
#[derive(Debug, Clone)]
pub struct FollowUpSettlement {
    /// The intent after it.
    pub intent: IntentRecord,
    /// The charge after it.
    pub charge: ChargeRecord,
    /// Events.
    pub events: Vec<PendingEvent>,
    /// The error to answer with, if the network refused.
    pub error: Option<ApiError>,
}

/// Applies the network's answer to a pending capture.
pub fn settle_capture(
    rec: &IntentRecord,
    charge: &ChargeRecord,
    result: &NetworkResult,
    now: Timestamp,
) -> FollowUpSettlement {
    let mut intent = rec.clone();
    let mut ch = charge.clone();
    let amount = rec.pending.as_ref().map(|p| p.amount).unwrap_or(result.amount);
    intent.pending = None;
    let mut events = vec![];
    let mut error = None;
    if result.approved {
        intent.intent.status = IntentStatus::Succeeded;
        intent.intent.amount_received = amount;
        intent.intent.amount_capturable = 0;
        ch.charge.captured = true;
        ch.charge.amount_captured = amount;
        events.push(("charge.captured", JsonText::of_or_null(&ch.charge)));
        events.push(("payment_intent.succeeded", JsonText::of_or_null(&intent.intent)));
    } else {
        let d = result.decline.clone();
        let code = d
            .as_ref()
            .map(|d| d.code.clone())
            .unwrap_or_else(|| "capture_failed".into());
        let message = d.map(|d| d.message).unwrap_or_else(|| "The capture failed.".into());
        if code == "authorization_expired" {
            intent.intent.status = IntentStatus::Canceled;
            intent.intent.amount_capturable = 0;
            intent.intent.canceled_at = Some(now.unix_secs());
            intent.intent.cancellation_reason = Some("automatic".into());
            events.push(("payment_intent.canceled", JsonText::of_or_null(&intent.intent)));
        }
        error = Some(ApiError::unexpected_state(&code, message).with_payment_intent(json(&intent.intent)));
    }
    FollowUpSettlement {
        intent,
        charge: ch,
        events,
        error,
    }
}

/// How a cancel proceeds.
#[derive(Debug, Clone)]
pub enum CancelPlan {
    /// Nothing was authorized: cancel now.
    Immediate(IntentRecord, Vec<PendingEvent>),
    /// An authorization must be released first: the intent with the void recorded as pending.
    Void(IntentRecord),
}

/// Validates a cancel and says how it proceeds.
pub fn begin_cancel(rec: &IntentRecord, reason: Option<String>, now: Timestamp) -> Result<CancelPlan, ApiError> {
    if let Some(r) = &reason {
        if !["duplicate", "fraudulent", "requested_by_customer", "abandoned"].contains(&r.as_str()) {
            return Err(ApiError::invalid_param("cancellation_reason", "parameter_invalid", "Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer or abandoned."));
        }
    }
    if rec.pending.is_some() {
        return Err(unexpected_state("cancel", &rec.intent));
    }
    let mut next = rec.clone();
    match rec.intent.status {
        s if updatable(s) => {
            next.intent.status = IntentStatus::Canceled;
            next.intent.canceled_at = Some(now.unix_secs());
            next.intent.cancellation_reason = reason;
            let ev = vec![("payment_intent.canceled", JsonText::of_or_null(&next.intent))];
            Ok(CancelPlan::Immediate(next, ev))
        }
        IntentStatus::RequiresCapture => {
            next.pending = Some(PendingOp {
                kind: PendingKind::Void,
                key: format!("{}:void", rec.intent.id),
                amount: rec.intent.amount_capturable,
                cancellation_reason: reason,
                since: now.millis(),
            });
            Ok(CancelPlan::Void(next))
        }
        _ => Err(unexpected_state("cancel", &rec.intent)),
    }
}

/// Applies the network's answer to a pending void.
pub fn settle_void(
    rec: &IntentRecord,
    charge: &ChargeRecord,
    result: &NetworkResult,
    now: Timestamp,
) -> FollowUpSettlement {
    let mut intent = rec.clone();
    let mut ch = charge.clone();
    let reason = rec.pending.as_ref().and_then(|p| p.cancellation_reason.clone());
    intent.pending = None;
    let mut events = vec![];
    let mut error = None;
    if result.approved {
        intent.intent.status = IntentStatus::Canceled;
        intent.intent.amount_capturable = 0;
        intent.intent.canceled_at = Some(now.unix_secs());
        intent.intent.cancellation_reason = reason;
        // An authorization released without capture shows as fully refunded, as Stripe does.
        ch.charge.amount_refunded = ch.charge.amount;
        ch.charge.refunded = true;
        events.push(("charge.refunded", JsonText::of_or_null(&ch.charge)));
        events.push(("payment_intent.canceled", JsonText::of_or_null(&intent.intent)));
    } else {
        let message = result
            .decline
            .as_ref()
            .map(|d| d.message.clone())
            .unwrap_or_else(|| "The authorization could not be released.".into());
        error = Some(
            ApiError::unexpected_state("payment_intent_unexpected_state", message)
                .with_payment_intent(json(&intent.intent)),
        );
    }
    FollowUpSettlement {
        intent,
        charge: ch,
        events,
        error,
    }
}

/// Validates a refund request against a charge and returns the amount to refund.
pub fn refund_amount(charge: &ChargeRecord, requested: Option<i64>) -> Result<i64, ApiError> {
    if !charge.charge.paid || charge.charge.status != ChargeStatus::Succeeded {
        return Err(ApiError::unexpected_state(
            "charge_not_refundable",
            "This charge cannot be refunded because it did not succeed.",
        ));
    }
    if !charge.charge.captured {
        return Err(ApiError::unexpected_state(
            "charge_not_refundable",
            "This charge has not been captured; cancel the PaymentIntent to release the authorization instead.",
        ));
    }
    let available = charge.refundable();
    if available <= 0 {
        return Err(ApiError::unexpected_state(
            "charge_already_refunded",
            format!("Charge {} has already been refunded.", charge.charge.id),
        ));
    }
    let amount = requested.unwrap_or(available);
    if amount <= 0 {
        return Err(ApiError::invalid_param(
            "amount",
            "parameter_invalid_integer",
            "The refund amount must be a positive integer.",
        ));
    }
    if amount > available {
        return Err(ApiError::invalid_param(
            "amount",
            "amount_too_large",
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({available})."),
        ));
    }
    Ok(amount)
}

/// Starts a refund: the refund is created `pending` and its amount reserved on the charge, so
/// concurrent refunds can never together exceed what was captured.
pub fn begin_refund(
    charge: &ChargeRecord,
    id: RefundId,
    amount: i64,
    reason: Option<String>,
    metadata: Metadata,
    now: Timestamp,
) -> Result<(ChargeRecord, RefundRecord, Vec<PendingEvent>), ApiError> {
    if let Some(r) = &reason {
        if !["duplicate", "fraudulent", "requested_by_customer"].contains(&r.as_str()) {
            return Err(ApiError::invalid_param(
                "reason",
                "parameter_invalid",
                "Invalid reason: must be one of duplicate, fraudulent or requested_by_customer.",
            ));
        }
    }
    let amount = refund_amount(charge, Some(amount))?;
    let Some(authorization_id) = charge.authorization_id.clone() else {
        return Err(ApiError::unexpected_state(
            "charge_not_refundable",
            "This charge has no authorization to refund.",
        ));
    };
    let mut ch = charge.clone();
    ch.refund_pending += amount;
    let refund = Refund {
        id: id.clone(),
        object: "refund".into(),
        amount,
        charge: Some(charge.charge.id.clone()),
        created: now.unix_secs(),
        currency: charge.charge.currency,
        failure_reason: None,
        metadata,
        payment_intent: charge.charge.payment_intent.clone(),
        reason,
        status: RefundStatus::Pending,
    };
    let events = vec![("refund.created", JsonText::of_or_null(&refund))];
    let rec = RefundRecord {
        account: charge.account.clone(),
        refund,
        authorization_id,
        network_key: format!("{id}:refund"),
        created_ms: now.millis(),
    };
    Ok((ch, rec, events))
}

/// Applies the network's answer to a pending refund.
pub fn settle_refund(
    charge: &ChargeRecord,
    refund: &RefundRecord,
    result: &NetworkResult,
) -> (ChargeRecord, RefundRecord, Vec<PendingEvent>) {
    let mut ch = charge.clone();
    let mut re = refund.clone();
    let amount = refund.refund.amount;
    ch.refund_pending = (ch.refund_pending - amount).max(0);
    let mut events = vec![];
    if result.approved {
        re.refund.status = RefundStatus::Succeeded;
        ch.charge.amount_refunded += amount;
        ch.charge.refunded = ch.charge.amount_refunded >= ch.charge.amount_captured;
        events.push(("refund.updated", JsonText::of_or_null(&re.refund)));
        events.push(("charge.refunded", JsonText::of_or_null(&ch.charge)));
    } else {
        re.refund.status = RefundStatus::Failed;
        re.refund.failure_reason = Some(
            result
                .decline
                .as_ref()
                .map(|d| d.code.clone())
                .unwrap_or_else(|| "unknown".into()),
        );
        events.push(("refund.failed", JsonText::of_or_null(&re.refund)));
    }
    (ch, re, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pay_core::{AccountId, CardBrand, CardSummary, Currency, PaymentIntentId, PaymentMethodId, VaultTokenId};
    use pay_proto::acquirer::{Decline, OpKind};
    use proptest::prelude::*;

    fn pm() -> PaymentMethodRef {
        PaymentMethodRef {
            id: PaymentMethodId::parse("pm_test").unwrap(),
            token: VaultTokenId::parse("tok_test").unwrap(),
            card: CardSummary {
                brand: CardBrand::Visa,
                bin: "424242".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2034,
                fingerprint: "fp".into(),
                country: Some("US".into()),
                funding: "credit".into(),
            },
            customer: None,
        }
    }

    fn intent(amount: i64, manual: bool) -> IntentRecord {
        IntentRecord {
            account: AccountId::parse("acct_1").unwrap(),
            intent: PaymentIntent {
                id: PaymentIntentId::parse("pi_1").unwrap(),
                object: "payment_intent".into(),
                amount,
                amount_capturable: 0,
                amount_received: 0,
                canceled_at: None,
                cancellation_reason: None,
                capture_method: if manual {
                    CaptureMethod::Manual
                } else {
                    CaptureMethod::Automatic
                },
                client_secret: None,
                confirmation_method: ConfirmationMethod::Automatic,
                created: 0,
                currency: Currency::USD,
                customer: None,
                description: None,
                last_payment_error: None,
                latest_charge: None,
                livemode: false,
                metadata: Default::default(),
                next_action: None,
                payment_method: None,
                payment_method_types: vec!["card".into()],
                receipt_email: None,
                review: None,
                statement_descriptor: None,
                status: IntentStatus::RequiresPaymentMethod,
            },
            payment_method: None,
            attempt_count: 0,
            authorization_id: None,
            pending: None,
            processing_since: None,
            created_ms: 0,
        }
    }

    fn allow() -> RiskVerdict {
        RiskVerdict {
            risk_level: "normal".into(),
            risk_score: Some(10),
            rule: None,
            action: RiskAction::Allow,
            fallback: None,
        }
    }

    fn network(kind: OpKind, amount: i64, approved: bool) -> NetworkResult {
        NetworkResult {
            operation_id: "acq_x".into(),
            idempotency_key: "k".into(),
            kind,
            merchant: AccountId::parse("acct_1").unwrap(),
            approved,
            authorization_id: Some("acq_auth".into()),
            amount,
            currency: Currency::USD,
            decline: if approved {
                None
            } else {
                Some(Decline {
                    code: "card_declined".into(),
                    decline_code: "generic_decline".into(),
                    message: "declined".into(),
                })
            },
            cvc_check: None,
            network_transaction_id: None,
            authorization_code: None,
            brand: None,
            last4: None,
            created: 0,
        }
    }

    #[test]
    fn transition_table() {
        use IntentStatus::*;
        assert!(legal_transition(None, RequiresPaymentMethod));
        assert!(!legal_transition(None, Succeeded));
        assert!(legal_transition(Some(Processing), Succeeded));
        assert!(!legal_transition(Some(Succeeded), Canceled));
        assert!(!legal_transition(Some(Canceled), Processing));
        assert!(!legal_transition(Some(RequiresCapture), RequiresPaymentMethod));
        assert!(legal_transition(Some(RequiresCapture), RequiresCapture));
    }

    #[test]
    fn decline_returns_to_requires_payment_method_with_error() {
        let (rec, att) =
            begin_attempt(&intent(1000, false), Some(pm()), None, allow(), Timestamp::from_secs(1)).unwrap();
        let s = settle_attempt(
            &rec,
            &att,
            &AttemptOutcome::Network(network(OpKind::Sale, 1000, false)),
            None,
            Timestamp::from_secs(2),
        );
        assert_eq!(s.intent.intent.status, IntentStatus::RequiresPaymentMethod);
        let lpe = s.intent.intent.last_payment_error.unwrap();
        assert_eq!(lpe.decline_code.as_deref(), Some("generic_decline"));
        assert_eq!(s.error.unwrap().status, 402);
        assert_eq!(s.charge.charge.status, ChargeStatus::Failed);
    }

    #[test]
    fn fraud_block_never_reaches_the_network() {
        let (rec, att) =
            begin_attempt(&intent(1000, false), Some(pm()), None, allow(), Timestamp::from_secs(1)).unwrap();
        let s = settle_attempt(&rec, &att, &AttemptOutcome::Blocked, None, Timestamp::from_secs(2));
        assert_eq!(s.error.as_ref().unwrap().decline_code.as_deref(), Some("fraudulent"));
        assert_eq!(
            s.charge.charge.outcome.as_ref().unwrap().network_status,
            "not_sent_to_network"
        );
        assert!(s.attempt.result.is_none());
    }

    /// One operation a client or the network may perform, for random sequences.
    #[derive(Debug, Clone)]
    enum Step {
        Confirm { manual: bool },
        Settle { approved: bool },
        Capture { amount: Option<i64> },
        SettleCapture { approved: bool },
        Cancel,
        SettleVoid { approved: bool },
        Refund { amount: Option<i64> },
        SettleRefund { index: usize, approved: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            any::<bool>().prop_map(|manual| Step::Confirm { manual }),
            any::<bool>().prop_map(|approved| Step::Settle { approved }),
            proptest::option::of(-100i64..2000).prop_map(|amount| Step::Capture { amount }),
            any::<bool>().prop_map(|approved| Step::SettleCapture { approved }),
            Just(Step::Cancel),
            any::<bool>().prop_map(|approved| Step::SettleVoid { approved }),
            proptest::option::of(-100i64..1500).prop_map(|amount| Step::Refund { amount }),
            (0usize..8, any::<bool>()).prop_map(|(index, approved)| Step::SettleRefund { index, approved }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_sequences_stay_legal_and_never_over_refund(amount in 1i64..1000, steps in proptest::collection::vec(step(), 0..40)) {
            let mut rec = intent(amount, false);
            let mut attempt: Option<Attempt> = None;
            let mut charge: Option<ChargeRecord> = None;
            let mut refunds: Vec<RefundRecord> = vec![];
            let mut now = 10i64;
            for s in steps {
                now += 1;
                let t = Timestamp::from_secs(now);
                let before = rec.intent.status;
                match s {
                    Step::Confirm { manual } => {
                        let cm = Some(if manual { CaptureMethod::Manual } else { CaptureMethod::Automatic });
                        if let Ok((r, a)) = begin_attempt(&rec, Some(pm()), cm, allow(), t) {
                            rec = r;
                            attempt = Some(a);
                        }
                    }
                    Step::Settle { approved } => {
                        if let Some(a) = attempt.take().filter(|a| a.state == AttemptState::Authorizing) {
                            let kind = if a.capture { OpKind::Sale } else { OpKind::Authorize };
                            let st = settle_attempt(&rec, &a, &AttemptOutcome::Network(network(kind, a.amount, approved)), None, t);
                            rec = st.intent;
                            charge = Some(st.charge);
                        }
                    }
                    Step::Capture { amount } => {
                        if let Ok(r) = begin_capture(&rec, amount, t) {
                            prop_assert!(r.pending.as_ref().unwrap().amount <= rec.intent.amount_capturable);
                            rec = r;
                        }
                    }
                    Step::SettleCapture { approved } => {
                        if let (Some(p), Some(ch)) = (rec.pending.clone(), charge.clone()) {
                            if p.kind == PendingKind::Capture {
                                let st = settle_capture(&rec, &ch, &network(OpKind::Capture, p.amount, approved), t);
                                rec = st.intent;
                                charge = Some(st.charge);
                            }
                        }
                    }
                    Step::Cancel => match begin_cancel(&rec, None, t) {
                        Ok(CancelPlan::Immediate(r, _)) => rec = r,
                        Ok(CancelPlan::Void(r)) => rec = r,
                        Err(_) => {}
                    },
                    Step::SettleVoid { approved } => {
                        if let (Some(p), Some(ch)) = (rec.pending.clone(), charge.clone()) {
                            if p.kind == PendingKind::Void {
                                let st = settle_void(&rec, &ch, &network(OpKind::Void, p.amount, approved), t);
                                rec = st.intent;
                                charge = Some(st.charge);
                            }
                        }
                    }
                    Step::Refund { amount } => {
                        if let Some(ch) = charge.clone() {
                            let id = RefundId::derived(&[&refunds.len().to_string()]);
                            if let Ok(a) = refund_amount(&ch, amount) {
                                if let Ok((c, r, _)) = begin_refund(&ch, id, a, None, Default::default(), t) {
                                    charge = Some(c);
                                    refunds.push(r);
                                }
                            }
                        }
                    }
                    Step::SettleRefund { index, approved } => {
                        if let (Some(ch), Some(r)) = (charge.clone(), refunds.get(index).cloned()) {
                            if r.refund.status == RefundStatus::Pending {
                                let (c, r2, _) = settle_refund(&ch, &r, &network(OpKind::Refund, r.refund.amount, approved));
                                charge = Some(c);
                                refunds[index] = r2;
                            }
                        }
                    }
                }
                prop_assert!(legal_transition(Some(before), rec.intent.status), "illegal {:?} -> {:?}", before, rec.intent.status);
                prop_assert!(rec.intent.amount_capturable >= 0 && rec.intent.amount_capturable <= rec.intent.amount);
                prop_assert!(rec.intent.amount_received <= rec.intent.amount);
                if let Some(ch) = &charge {
                    let c = &ch.charge;
                    prop_assert!(c.amount_captured <= c.amount);
                    prop_assert!(ch.refund_pending >= 0);
                    if c.captured {
                        let succeeded: i64 = refunds.iter().filter(|r| r.refund.status == RefundStatus::Succeeded).map(|r| r.refund.amount).sum();
                        let pending: i64 = refunds.iter().filter(|r| r.refund.status == RefundStatus::Pending).map(|r| r.refund.amount).sum();
                        prop_assert_eq!(c.amount_refunded, succeeded);
                        prop_assert_eq!(ch.refund_pending, pending);
                        prop_assert!(succeeded + pending <= c.amount_captured, "refunds exceed capture");
                    }
                    if rec.intent.status == IntentStatus::Succeeded {
                        prop_assert_eq!(rec.intent.amount_received, c.amount_captured);
                    }
                }
            }
        }
    }
}
