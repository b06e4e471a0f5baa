//! Steps for the security audit log (PCI DSS 10.2, 10.3).
//!
//! The log is the file `paymentd` writes (`audit.file`; on the embedded target each scenario's
//! node writes its own): JSON lines, each with a sequence number, the time, actor, event,
//! outcome, origin and object, chained by SHA-256 hashes, with checkpoints signed by the HSM.
//! The steps read those lines as the node wrote them and verify the file with the verifier
//! `paymentd audit verify` runs ([`paymentd::ops::verify_audit_log`]).

use crate::report::rfc3339;
use crate::scan;
use crate::world::PciWorld;
use cucumber::{then, when};
use paymentd::pay_audit::{Kind, Line, Outcome};
use std::path::PathBuf;

type StepResult = Result<(), String>;

/// One line of the audit log file.
pub(crate) struct Entry {
    /// 1-based line number in the file.
    pub(crate) line: u64,
    /// The line as written.
    pub(crate) text: String,
    /// Parsed.
    pub(crate) parsed: Line,
}

/// The audit log: its path, every line, and how many lines were there before the scenario.
pub(crate) async fn read_audit(w: &mut PciWorld) -> Result<(PathBuf, Vec<Entry>, u64), String> {
    let sys = w.system().await?;
    let path = sys
        .audit_log
        .clone()
        .ok_or("this check reads the audit log: pass --audit-log with the node's audit.file")?;
    let mark = sys.audit_mark;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = vec![];
    for (i, l) in text.lines().enumerate() {
        let parsed: Line = serde_json::from_str(l)
            .map_err(|e| format!("{} line {} is not an audit entry: {e}", path.display(), i + 1))?;
        out.push(Entry {
            line: i as u64 + 1,
            text: l.to_owned(),
            parsed,
        });
    }
    Ok((path, out, mark))
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}

fn time_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    rfc3339(t)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Finds the scenario's last `event` entry (with `outcome` when given), checks it records
/// every detail 10.2.2 asks for, and that no audit entry of the scenario holds card data or a
/// presented key.
async fn entry_for(w: &mut PciWorld, event: &str, outcome: Option<Outcome>) -> StepResult {
    let (path, entries, mark) = read_audit(w).await?;
    let mine: Vec<&Entry> = entries.iter().filter(|e| e.line > mark).collect();
    let found = mine.iter().rev().find(|e| {
        e.parsed.kind == Kind::Event && e.parsed.event == event && outcome.is_none_or(|o| e.parsed.outcome == o)
    });
    let seen: std::collections::BTreeSet<String> = mine
        .iter()
        .map(|e| format!("{} ({})", e.parsed.event, outcome_name(e.parsed.outcome)))
        .collect();
    w.note(format!(
        "read the audit log {}: {} line(s), {} written during this scenario: {}",
        path.display(),
        entries.len(),
        mine.len(),
        seen.into_iter().collect::<Vec<_>>().join(", ")
    ));
    let wanted = match outcome {
        Some(o) => format!("a {} `{event}` entry", outcome_name(o)),
        None => format!("a `{event}` entry"),
    };
    let e = found.ok_or_else(|| {
        format!(
            "PCI DSS 10.2.1 violated: no audit entry records the event: {wanted} was not written during the scenario"
        )
    })?;
    let l = &e.parsed;
    // The time must be the event's: within the scenario, allowing for clock differences.
    let skew = 300_000;
    let mut missing = vec![];
    if l.actor.trim().is_empty() {
        missing.push("actor (user identification)");
    }
    if l.event.trim().is_empty() {
        missing.push("action (type of event)");
    }
    if l.time_ms < w.started_ms - skew || l.time_ms > now_ms() + skew {
        missing.push("time (date and time of the event)");
    }
    if l.origin.trim().is_empty() {
        missing.push("origin");
    }
    if l.object.trim().is_empty() {
        missing.push("object (affected data or resource)");
    }
    if !missing.is_empty() {
        return Err(format!(
            "PCI DSS 10.2.2 violated: the `{event}` audit entry (line {}) lacks {}",
            e.line,
            missing.join(", ")
        ));
    }
    w.note(format!(
        "entry at line {} (seq {}): actor `{}`, action `{}`, time {} ({} ms), outcome {}, origin `{}`, object `{}`, chained to the previous line by hash {}…",
        e.line,
        l.seq,
        l.actor,
        l.event,
        time_text(l.time_ms),
        l.time_ms,
        outcome_name(l.outcome),
        l.origin,
        l.object,
        l.hash.get(..16).unwrap_or(&l.hash)
    ));
    // What the log itself must never hold: card numbers and presented secrets.
    let (pans, _) = w.secrets();
    let mut findings = vec![];
    for m in &mine {
        let loc = format!("audit log line {}", m.line);
        for p in &pans {
            findings.extend(scan::find_pan(&loc, &m.text, p));
        }
        findings.extend(scan::find_pan_like(&loc, &m.text));
    }
    let leaked_key = w
        .wrong_keys
        .iter()
        .any(|k| mine.iter().any(|m| m.text.contains(k.as_str())));
    if leaked_key {
        return Err("PCI DSS 8.3.2 violated: the audit log holds a presented API key unmasked".into());
    }
    w.note(format!(
        "scanned the scenario's {} audit line(s) for {} card number(s), any Luhn-valid card-like number and the presented keys: {} finding(s)",
        mine.len(),
        pans.len(),
        findings.len()
    ));
    w.no_findings("3.4.1", "card data written to the audit log", findings)
}

#[then(expr = "the audit log has an entry for {string} with actor, action, time, outcome, origin and object")]
async fn audit_entry(w: &mut PciWorld, event: String) -> StepResult {
    entry_for(w, &event, None).await
}

#[then(expr = "the audit log has a failed {string} entry with actor, action, time, outcome, origin and object")]
async fn failed_audit_entry(w: &mut PciWorld, event: String) -> StepResult {
    entry_for(w, &event, Some(Outcome::Failure)).await
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}

#[when("an entry of the audit log is altered in its file")]
async fn tamper(w: &mut PciWorld) -> StepResult {
    let (path, entries, mark) = read_audit(w).await?;
    // The verifier must accept the log as written, or detecting the change proves nothing.
    let before = paymentd::ops::verify_audit_log(&path, &[])
        .map_err(|b| format!("PCI DSS 10.3.2: the audit log does not verify even before it is altered: {b}"))?;
    w.note(format!(
        "`paymentd audit verify {}` before the change → {}",
        path.display(),
        one_line(&before)
    ));
    // Alter the scenario's card-access entry (or else its last event): its outcome, as someone
    // covering their tracks would.
    let mine = || entries.iter().filter(|e| e.line > mark && e.parsed.kind == Kind::Event);
    let target = mine()
        .rfind(|e| e.parsed.event == "detokenize")
        .or_else(|| mine().next_back())
        .ok_or("the scenario wrote no audit entry to alter")?;
    let (from, to) = match target.parsed.outcome {
        Outcome::Success => ("\"outcome\":\"success\"", "\"outcome\":\"failure\""),
        Outcome::Failure => ("\"outcome\":\"failure\"", "\"outcome\":\"success\""),
    };
    if !target.text.contains(from) {
        return Err(format!(
            "line {} does not hold its outcome as {from}: cannot alter it",
            target.line
        ));
    }
    let altered_line = target.text.replacen(from, to, 1);
    let embedded = w.ctx()?.spec.is_embedded();
    let sys = w.system().await?;
    // On a deployment the change is made to a copy, so its real audit trail stays intact.
    let file = if embedded {
        path.clone()
    } else {
        sys.scratch.path().join("audit-copy.log")
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines: Vec<&str> = text.lines().collect();
    let idx = usize::try_from(target.line - 1).map_err(|e| e.to_string())?;
    let slot = lines.get_mut(idx).ok_or("the audit log changed while it was read")?;
    *slot = altered_line.as_str();
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(&file, out).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    w.note(format!(
        "altered line {} (seq {}, `{}` by `{}`) of {}{}: outcome {} → {}; every other byte unchanged",
        target.line,
        target.parsed.seq,
        target.parsed.event,
        target.parsed.actor,
        file.display(),
        if embedded {
            " in place (the node's own audit log)".to_owned()
        } else {
            format!(", a copy of {} (the deployment's log is left intact)", path.display())
        },
        outcome_name(target.parsed.outcome),
        if target.parsed.outcome == Outcome::Success {
            "failure"
        } else {
            "success"
        }
    ));
    w.tampered = Some((file, target.line));
    Ok(())
}

#[then("verifying the audit log reports the altered entry")]
async fn verify_reports(w: &mut PciWorld) -> StepResult {
    let (file, line) = w
        .tampered
        .clone()
        .ok_or("no audit entry was altered in this scenario")?;
    match paymentd::ops::verify_audit_log(&file, &[]) {
        Ok(report) => Err(format!(
            "PCI DSS 10.3.2 violated: the audit log still verifies after line {line} was altered ({})",
            one_line(&report)
        )),
        Err(b) => {
            w.note(format!("`paymentd audit verify {}` → {b}", file.display()));
            if b.line != line {
                return Err(format!(
                    "PCI DSS 10.3.2 violated: line {line} was altered but verification reports line {} ({})",
                    b.line, b.reason
                ));
            }
            w.note(format!("the verifier names the altered line {line}"));
            Ok(())
        }
    }
}
