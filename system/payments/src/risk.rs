//! The [`RiskAssessor`] that asks the fraud service, within a time budget, and applies a
//! fail-open or fail-closed policy when it cannot answer in time. Which one applied is
//! recorded on the verdict (`fallback`), and so on the attempt and the charge.

use crate::records::{IntentRecord, RiskAction, RiskVerdict};
use crate::service::RiskAssessor;
use async_trait::async_trait;
use pay_proto::fraud::{FraudClient, OutcomeReport, ScoreRequest};
use pay_proto::payments::{PaymentMethodRef, RequestContext};
use std::time::Duration;

/// What to do when fraud detection does not answer within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Authorize without a score (availability first).
    Open,
    /// Decline as if blocked (risk first).
    Closed,
}

/// Scores payments with the fraud service.
pub struct FraudRisk {
    client: FraudClient,
    budget: Duration,
    policy: FailurePolicy,
}

impl FraudRisk {
    /// Asks `client`, waiting at most `budget` per score.
    pub fn new(client: FraudClient, budget: Duration, policy: FailurePolicy) -> FraudRisk {
        FraudRisk { client, budget, policy }
    }
}

fn action(a: &str) -> Option<RiskAction> {
    match a {
        "allow" => Some(RiskAction::Allow),
        "review" => Some(RiskAction::Review),
        "block" => Some(RiskAction::Block),
        _ => None,
    }
}

#[async_trait]
impl RiskAssessor for FraudRisk {
    async fn assess(&self, intent: &IntentRecord, pm: &PaymentMethodRef, ctx: &RequestContext) -> RiskVerdict {
        // The attempt this confirm will make (see machine::begin_attempt).
        let attempt = intent.attempt_id(intent.attempt_count + 1);
        let req = ScoreRequest {
            account: intent.account.clone(),
            attempt_id: attempt.to_string(),
            livemode: intent.intent.livemode,
            amount: intent.intent.amount,
            currency: intent.intent.currency,
            card: Some(pm.card.clone()),
            cvc_check: None,
            client_ip: ctx.client_ip.clone(),
            customer: pm
                .customer
                .as_ref()
                .or(intent.intent.customer.as_ref())
                .map(|c| c.to_string()),
            customer_created: ctx.customer_created,
            email: ctx.email.clone().or_else(|| intent.intent.receipt_email.clone()),
            metadata: intent.intent.metadata.clone(),
        };
        let failure = match tokio::time::timeout(self.budget, self.client.score(&req)).await {
            Ok(Ok(r)) => match action(&r.action) {
                Some(a) => {
                    return RiskVerdict {
                        risk_level: r.risk_level,
                        risk_score: Some(r.risk_score),
                        rule: r.rule.map(|x| x.id),
                        action: a,
                        fallback: None,
                    }
                }
                None => format!("unknown action `{}`", r.action),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.budget.as_millis()),
        };
        let (action, fallback) = match self.policy {
            FailurePolicy::Open => (RiskAction::Allow, "fail_open"),
            FailurePolicy::Closed => (RiskAction::Block, "fail_closed"),
        };
        tracing::warn!(attempt = %attempt, reason = %failure, policy = fallback, "fraud detection unavailable");
        RiskVerdict {
            risk_level: "not_assessed".into(),
            risk_score: None,
            rule: None,
            action,
            fallback: Some(fallback.into()),
        }
    }

    async fn record_outcome(&self, attempt: &pay_core::AttemptId, approved: bool) {
        let report = OutcomeReport {
            attempt_id: attempt.to_string(),
            outcome: if approved { "approved" } else { "declined" }.into(),
        };
        // Best effort: velocity decline counts are advisory.
        if let Ok(Err(e)) = tokio::time::timeout(self.budget, self.client.outcome(&report)).await {
            tracing::debug!(error = %e, "could not report the attempt outcome to fraud detection");
        }
    }
}
