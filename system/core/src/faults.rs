//! Fault points: named places in service code where the simulator (or a crash test) may inject
//! a failure. Production builds carry [`NoFaults`], which always answers
//! [`FaultAction::Proceed`]; only the simulator and test harnesses construct other injectors.

use std::time::Duration;

/// After the acquirer applied an operation, before it answers (lose or delay the answer).
pub const ACQUIRER_REPLY: &str = "acquirer.reply";
/// Before the acquirer applies an operation (fail or delay it: a slow or failing network).
pub const ACQUIRER_APPLY: &str = "acquirer.apply";
/// After the db host applied a request, before it answers (ambiguous commit).
pub const DB_REPLY: &str = "db.reply";
/// Before the db host applies a request (database unavailable).
pub const DB_APPLY: &str = "db.apply";
/// In the payment service, after the acquirer authorized and before the result is recorded.
pub const PAYMENTS_AFTER_AUTHORIZE: &str = "payments.after_authorize";
/// Before every HSM operation (HSM unavailable).
pub const HSM_CALL: &str = "hsm.call";

/// What to do at a fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Carry on normally.
    Proceed,
    /// Wait this long, then carry on.
    Delay(Duration),
    /// Fail the operation as if the dependency were unavailable.
    Fail,
    /// Do the work but never answer (the caller sees a timeout: an ambiguous outcome).
    DropReply,
    /// Terminate the process immediately (crash tests of a real process).
    Crash,
}

/// Decides what happens at each fault point.
pub trait FaultInjector: Send + Sync + 'static {
    /// The action for `point`; `subject` names what is being done (an operation or object id)
    /// so injectors can target one flow.
    fn at(&self, point: &'static str, subject: &str) -> FaultAction;
}

/// The production injector: never injects anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn at(&self, _point: &'static str, _subject: &str) -> FaultAction {
        FaultAction::Proceed
    }
}

/// Applies the parts of an action that do not depend on the caller: sleeps for `Delay` and
/// aborts the process for `Crash`. Returns the action so the caller handles `Fail` and
/// `DropReply` in its own terms.
pub async fn apply(action: FaultAction) -> FaultAction {
    match action {
        FaultAction::Delay(d) => {
            tokio::time::sleep(d).await;
            FaultAction::Proceed
        }
        FaultAction::Crash => {
            // Deliberate: a crash test needs the process to die without cleanup.
            std::process::abort()
        }
        other => other,
    }
}
