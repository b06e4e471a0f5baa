//! The client-side history: every request a workload client made, as invoke / ok / fail /
//! unknown (Jepsen-style), in the order the simulation produced them.

use serde::{Deserialize, Serialize};

/// What a request was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /v1/payment_methods`.
    CreatePaymentMethod,
    /// `POST /v1/payment_intents` (with `confirm` when set).
    CreateIntent {
        /// Confirmed at creation.
        confirm: bool,
        /// Manual capture.
        manual: bool,
    },
    /// `POST /v1/payment_intents/{id}/confirm`.
    Confirm,
    /// `POST /v1/payment_intents/{id}/capture`.
    Capture {
        /// Amount to capture, if partial.
        amount: Option<i64>,
    },
    /// `POST /v1/payment_intents/{id}/cancel`.
    Cancel,
    /// `POST /v1/refunds`.
    Refund {
        /// Amount, if partial.
        amount: Option<i64>,
    },
    /// `GET /v1/payment_intents/{id}`.
    GetIntent,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Not finished yet.
    Pending,
    /// A 2xx answer.
    Ok {
        /// Status.
        status: u16,
        /// Body.
        body: serde_json::Value,
    },
    /// A 4xx/5xx answer (a decision, or a retryable refusal).
    Fail {
        /// Status.
        status: u16,
        /// Error code.
        code: Option<String>,
        /// Body.
        body: serde_json::Value,
    },
    /// No answer (timeout, reset, abandoned): it may or may not have taken effect.
    Unknown {
        /// What happened.
        reason: String,
    },
}

impl Outcome {
    /// True for an answer that settles the request (not unknown, not a retryable refusal).
    pub fn is_definite(&self) -> bool {
        match self {
            Outcome::Ok { .. } => true,
            Outcome::Fail { status, .. } => *status < 500 && *status != 409 && *status != 429,
            _ => false,
        }
    }

    /// The body of an answer.
    pub fn body(&self) -> Option<&serde_json::Value> {
        match self {
            Outcome::Ok { body, .. } | Outcome::Fail { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: usize,
    /// The client host.
    pub client: String,
    /// The flow this request belongs to.
    pub flow: u64,
    /// What it was.
    pub kind: OpKind,
    /// The Idempotency-Key (every POST carries one).
    pub key: Option<String>,
    /// The object acted on (`pi_…`), if any.
    pub target: Option<String>,
    /// Simulated time of the invocation, ms.
    pub invoked_ms: u64,
    /// Simulated time of the completion, ms.
    pub completed_ms: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// The object id in an answer body (`id`), or in a card error's `payment_intent`.
    pub fn answered_object(&self) -> Option<String> {
        let body = self.outcome.body()?;
        if let Some(id) = body.get("id").and_then(|v| v.as_str()) {
            return Some(id.to_owned());
        }
        body.pointer("/error/payment_intent/id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

/// The whole history of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Requests, in invocation order.
    pub ops: Vec<Op>,
}

impl History {
    /// Records an invocation and returns its index.
    pub fn invoke(
        &mut self,
        client: &str,
        flow: u64,
        kind: OpKind,
        key: Option<String>,
        target: Option<String>,
        now_ms: u64,
    ) -> usize {
        let index = self.ops.len();
        self.ops.push(Op {
            index,
            client: client.to_owned(),
            flow,
            kind,
            key,
            target,
            invoked_ms: now_ms,
            completed_ms: None,
            outcome: Outcome::Pending,
        });
        index
    }

    /// Records how request `index` ended.
    pub fn complete(&mut self, index: usize, outcome: Outcome, now_ms: u64) {
        if let Some(op) = self.ops.get_mut(index) {
            op.outcome = outcome;
            op.completed_ms = Some(now_ms);
        }
    }
}
