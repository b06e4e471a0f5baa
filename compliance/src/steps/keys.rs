//! Steps for key management (PCI DSS 3.6, 3.7): KEK rotation and retirement, and the sealed
//! start whose master key only custodian shares rebuild.
//!
//! They act as a key custodian does, through the node's admin endpoint (the calls
//! `paymentd keys rotate`, `paymentd keys set-state`, `paymentd keys status` and
//! `paymentd unseal` make, through [`paymentd::admin::AdminClient`]), and read the stored data
//! keys from the records store to see which KEK wraps each.

use crate::scan;
use crate::target::SealSpec;
use crate::world::PciWorld;
use base64::Engine as _;
use cucumber::{given, then, when};
use pay_hsm::KeyState;
use paymentd::admin::{AdminClient, KeyStatusLine};
use std::collections::BTreeMap;

type StepResult = Result<(), String>;

/// The test card the unseal scenario tokenizes.
const UNSEAL_CARD: &str = "4242424242424242";

async fn admin(w: &mut PciWorld) -> Result<AdminClient, String> {
    w.system()
        .await?
        .admin
        .clone()
        .ok_or_else(|| "this check uses the admin endpoint: pass --admin-url and --admin-token-file".to_owned())
}

fn state_name(s: KeyState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}"))
}

fn describe_keks(lines: &[KeyStatusLine]) -> String {
    lines
        .iter()
        .filter(|l| l.purpose == "kek")
        .map(|l| format!("{} {} ({} data key(s))", l.id, state_name(l.state), l.data_keys))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn key_status(w: &mut PciWorld) -> Result<Vec<KeyStatusLine>, String> {
    let a = admin(w).await?;
    let lines = a
        .keys_status()
        .await
        .map_err(|e| format!("GET /admin/v1/keys failed: {e}"))?;
    w.note(format!(
        "GET {}/admin/v1/keys (as `paymentd keys status`) → KEKs: {}",
        a.base(),
        describe_keks(&lines)
    ));
    Ok(lines)
}

/// The KEK named by every stored data key record, counted, and what was read.
async fn stored_data_key_keks(w: &mut PciWorld) -> Result<(BTreeMap<String, u64>, u64), String> {
    let (records, what) = w.stored_records().await?;
    let mut keks = BTreeMap::new();
    let mut total = 0u64;
    for (loc, text) in records.iter().filter(|(loc, _)| loc.starts_with("data_keys")) {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{loc}: {e}"))?;
        let body = v.get("body").cloned().unwrap_or(v);
        let kek = body
            .pointer("/wrapped/kek")
            .and_then(|k| k.as_str())
            .ok_or_else(|| format!("PCI DSS 3.6.1 violated: data key record {loc} names no wrapping KEK"))?;
        let bytes = body
            .pointer("/wrapped/bytes")
            .and_then(|b| b.as_str())
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default())
            .unwrap_or_default();
        if bytes.len() <= 32 {
            return Err(format!(
                "PCI DSS 3.6.1 violated: data key record {loc} holds {} bytes, the size of an unwrapped key",
                bytes.len()
            ));
        }
        *keks.entry(kek.to_owned()).or_insert(0) += 1;
        total += 1;
    }
    w.note(format!(
        "read {what}: {total} data key record(s), wrapped by: {}",
        keks.iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if total == 0 {
        return Err("no data keys are stored: tokenize a card first, or the check proves nothing".into());
    }
    Ok((keks, total))
}

// ---------------------------------------------------------------- rotation and retirement

#[when("the key custodian rotates the key-encryption key")]
async fn rotate(w: &mut PciWorld) -> StepResult {
    let before = key_status(w).await?;
    let a = admin(w).await?;
    let r = a
        .rotate(500)
        .await
        .map_err(|e| format!("PCI DSS 3.7.4: the KEK rotation was refused: {e}"))?;
    let previous: Vec<String> = r.previous.iter().map(|k| k.0.clone()).collect();
    w.note(format!(
        "POST {}/admin/v1/keys/rotate (as `paymentd keys rotate`) → new KEK {}; previous {} now decrypt_only; {} data key(s) re-wrapped in {} batch(es)",
        a.base(),
        r.new_kek,
        if previous.is_empty() { "none".to_owned() } else { previous.join(", ") },
        r.rewrapped,
        r.batches
    ));
    if before.iter().any(|l| l.id == r.new_kek.0) {
        return Err(format!(
            "PCI DSS 3.7.4 violated: the rotation reused the existing key {}",
            r.new_kek
        ));
    }
    w.rotation = Some((r.new_kek.0, previous));
    Ok(())
}

#[then("every data-encryption key is wrapped by the new key-encryption key version")]
async fn rewrapped(w: &mut PciWorld) -> StepResult {
    let (new, previous) = w.rotation.clone().ok_or("no KEK rotation happened in this scenario")?;
    let (keks, total) = stored_data_key_keks(w).await?;
    let stale: Vec<String> = keks
        .iter()
        .filter(|(k, _)| **k != new)
        .map(|(k, n)| format!("{k} ({n})"))
        .collect();
    if !stale.is_empty() {
        return Err(format!(
            "PCI DSS 3.7.4 violated: after rotating to {new}, data keys are still wrapped by {}",
            stale.join(", ")
        ));
    }
    let status = key_status(w).await?;
    let line = status
        .iter()
        .find(|l| l.id == new)
        .ok_or_else(|| format!("the HSM does not list the new KEK {new}"))?;
    if line.state != KeyState::Active {
        return Err(format!(
            "PCI DSS 3.7.4 violated: the new KEK {new} is {}, not active",
            state_name(line.state)
        ));
    }
    for p in &previous {
        match status.iter().find(|l| &l.id == p) {
            Some(l) if l.data_keys > 0 => {
                return Err(format!(
                    "PCI DSS 3.7.4 violated: the previous KEK {p} still wraps {} data key(s)",
                    l.data_keys
                ))
            }
            Some(l) if l.state == KeyState::Active => {
                return Err(format!("PCI DSS 3.7.4 violated: the previous KEK {p} is still active"))
            }
            _ => {}
        }
    }
    w.note(format!(
        "every one of the {total} stored data key(s) is wrapped by the new KEK version {new} (version {}); previous KEK(s) {} wrap none",
        line.version,
        if previous.is_empty() { "none".to_owned() } else { previous.join(", ") }
    ));
    Ok(())
}

#[when("the key custodian retires the previous key-encryption key")]
async fn retire(w: &mut PciWorld) -> StepResult {
    let (_, previous) = w
        .rotation
        .clone()
        .ok_or("rotate the KEK first: no previous KEK to retire")?;
    if previous.is_empty() {
        return Err("the rotation replaced no KEK: nothing to retire".into());
    }
    let a = admin(w).await?;
    for k in previous {
        let info = a
            .set_state(&k, KeyState::Retired)
            .await
            .map_err(|e| format!("PCI DSS 3.7.5: retiring {k} was refused: {e}"))?;
        w.note(format!(
            "POST {}/admin/v1/keys/{k}/state {{\"state\":\"retired\"}} (as `paymentd keys set-state {k} retired`) → {} is now {}",
            a.base(),
            info.id,
            state_name(info.state)
        ));
        if info.state != KeyState::Retired {
            return Err(format!(
                "PCI DSS 3.7.5 violated: {k} is {} after retiring it",
                state_name(info.state)
            ));
        }
    }
    Ok(())
}

#[then("no data-encryption key is wrapped by a retired key-encryption key")]
async fn none_under_retired(w: &mut PciWorld) -> StepResult {
    let status = key_status(w).await?;
    let retired: Vec<&KeyStatusLine> = status
        .iter()
        .filter(|l| l.purpose == "kek" && matches!(l.state, KeyState::Retired | KeyState::Destroyed))
        .collect();
    if retired.is_empty() {
        return Err("no KEK is retired: the check would prove nothing".into());
    }
    let (keks, total) = stored_data_key_keks(w).await?;
    let mut bad = vec![];
    for r in &retired {
        let stored = keks.get(&r.id).copied().unwrap_or(0);
        if stored > 0 || r.data_keys > 0 {
            bad.push(format!(
                "{} ({} stored, {} counted by the node)",
                r.id, stored, r.data_keys
            ));
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "PCI DSS 3.7.5 violated: data keys are wrapped by retired KEK(s): {}",
            bad.join(", ")
        ));
    }
    w.note(format!(
        "retired KEK(s) {}: none of the {total} stored data key(s) is wrapped by them",
        retired.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

// ---------------------------------------------------------------- split knowledge: unsealing

#[given(expr = "a sealed payment system with {int} key custodians and a threshold of {int}")]
async fn sealed_system(w: &mut PciWorld, custodians: u32, threshold: u32) -> StepResult {
    if w.sys.is_some() {
        return Err("the sealed start must come before anything else uses the system".into());
    }
    let spec = SealSpec {
        custodians: u8::try_from(custodians).map_err(|_| "at most 255 custodians")?,
        threshold: u8::try_from(threshold).map_err(|_| "a threshold of at most 255")?,
    };
    let embedded = w.ctx()?.spec.is_embedded();
    if embedded {
        w.seal = Some(spec);
    }
    let sys = w.system().await?;
    let shares = sys.unseal_shares.len();
    let made_for = sys.custodians;
    let a = sys
        .admin
        .clone()
        .ok_or("this check unseals through the admin endpoint: pass --admin-url")?;
    let st = a
        .seal_status()
        .await
        .map_err(|e| format!("GET /admin/v1/seal-status failed: {e}"))?;
    w.note(format!(
        "GET {}/admin/v1/seal-status → sealed: {}, {} of {} share(s) received",
        a.base(),
        st.sealed,
        st.received,
        st.threshold
    ));
    if !st.sealed {
        return Err(
            "the system is not sealed: start the node sealed (hsm.unseal_threshold, no master key file) for this check"
                .into(),
        );
    }
    if st.threshold != spec.threshold {
        return Err(format!(
            "the node needs {} share(s) to unseal, the scenario expects {}",
            st.threshold, spec.threshold
        ));
    }
    if let Some(n) = made_for {
        if n != spec.custodians || shares != usize::from(n) {
            return Err(format!(
                "{shares} share(s) were made for {n} custodian(s), the scenario expects {}",
                spec.custodians
            ));
        }
        w.note(format!(
            "the keystore's master key exists only as {n} custodian shares, {} of which unseal it (made as `paymentd keys split-master --threshold {} --shares {n}` makes them; held by the harness, never shown)",
            spec.threshold, spec.threshold
        ));
    } else {
        w.note(format!(
            "{shares} custodian share file(s) given (never shown); the node needs {}",
            st.threshold
        ));
    }
    if shares < usize::from(spec.threshold) {
        return Err(format!(
            "{shares} custodian share(s) available, {} needed to unseal",
            spec.threshold
        ));
    }
    Ok(())
}

async fn enter_shares(w: &mut PciWorld, n: usize) -> StepResult {
    let entered = w.shares_entered;
    let sys = w.system().await?;
    let a = sys.admin.clone().ok_or("no admin endpoint")?;
    let shares: Vec<_> = sys.unseal_shares.iter().skip(entered).take(n).cloned().collect();
    if shares.len() < n {
        return Err(format!("only {} custodian share(s) left to enter", shares.len()));
    }
    for s in shares {
        w.shares_entered += 1;
        let st = a
            .unseal(s.to_text().as_str())
            .await
            .map_err(|e| format!("custodian {}'s share was refused: {e}", w.shares_entered))?;
        w.note(format!(
            "custodian {} entered a share: POST {}/admin/v1/unseal (as `paymentd unseal`) → {}",
            w.shares_entered,
            a.base(),
            if st.sealed {
                format!("still sealed, {} of {} share(s) received", st.received, st.threshold)
            } else {
                "unsealed".to_owned()
            }
        ));
    }
    Ok(())
}

#[when(expr = "{int} custodian(s) enter(s) a share")]
async fn custodians_enter(w: &mut PciWorld, n: usize) -> StepResult {
    enter_shares(w, n).await
}

#[when("a second custodian enters a share")]
async fn second_custodian(w: &mut PciWorld) -> StepResult {
    if w.shares_entered != 1 {
        return Err(format!(
            "{} share(s) were entered before: a second custodian comes after the first",
            w.shares_entered
        ));
    }
    enter_shares(w, 1).await
}

async fn seal_state(w: &mut PciWorld) -> Result<(bool, usize, u8), String> {
    let a = admin(w).await?;
    let st = a
        .seal_status()
        .await
        .map_err(|e| format!("GET /admin/v1/seal-status failed: {e}"))?;
    Ok((st.sealed, st.received, st.threshold))
}

#[then("card operations are refused while sealed")]
async fn refused_while_sealed(w: &mut PciWorld) -> StepResult {
    let (sealed, received, threshold) = seal_state(w).await?;
    if !sealed {
        return Err(format!(
            "PCI DSS 3.7.6 violated: the HSM unsealed with {received} share(s), fewer than the threshold of {threshold}"
        ));
    }
    let a = w
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", UNSEAL_CARD),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034"),
            ],
            None,
        )
        .await?;
    w.note(format!(
        "while sealed ({received} of {threshold} share(s)): POST /v1/payment_methods with card {} → {} {}",
        scan::mask(UNSEAL_CARD),
        a.status,
        a.str("/error/message").unwrap_or("")
    ));
    match a.status {
        503 => Ok(()),
        200 => Err(format!(
            "PCI DSS 3.7.6 violated: a card was tokenized while the HSM was sealed ({received} of {threshold} share(s))"
        )),
        s => Err(format!(
            "while sealed a card operation should be refused as unavailable (503), it got {s}"
        )),
    }
}

#[then("card operations are accepted")]
async fn accepted(w: &mut PciWorld) -> StepResult {
    let (sealed, received, threshold) = seal_state(w).await?;
    if sealed {
        return Err(format!(
            "still sealed after {} share(s) ({received} of {threshold} received)",
            w.shares_entered
        ));
    }
    w.note(format!(
        "GET /admin/v1/seal-status → unsealed after {} share(s)",
        w.shares_entered
    ));
    // Each custodian's action is on the audit trail.
    if w.system().await?.audit_log.is_some() {
        let (path, entries, mark) = crate::steps::audit::read_audit(w).await?;
        let unseals: Vec<String> = entries
            .iter()
            .filter(|e| e.line > mark && e.parsed.event == "hsm.unseal")
            .map(|e| format!("line {}: {} by `{}`", e.line, e.parsed.object, e.parsed.actor))
            .collect();
        w.note(format!(
            "audit log {}: {} `hsm.unseal` entr(y/ies): {}",
            path.display(),
            unseals.len(),
            unseals.join("; ")
        ));
    }
    crate::steps::api::tokenize(w, UNSEAL_CARD, "").await?;
    crate::steps::api::charge(w, 1000, "usd", None).await?;
    let p = w.payment.as_ref().ok_or("no payment was made")?;
    if p.status != 200 || p.str("/status") != Some("succeeded") {
        return Err(format!(
            "after unsealing the payment did not succeed: {} {}",
            p.status,
            p.str("/status").or(p.code()).unwrap_or("")
        ));
    }
    Ok(())
}
