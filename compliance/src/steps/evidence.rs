//! Steps that look inside: the database, the logs, every API answer, the vault, the keys, and
//! the retention job.

use crate::scan;
use crate::target::Records;
use crate::world::PciWorld;
use base64::Engine;
use cucumber::{then, when};
use sha2::{Digest, Sha256};
use sqlx::Row;

type StepResult = Result<(), String>;

#[then("no stored record contains the card number")]
async fn no_pan_at_rest(w: &mut PciWorld) -> StepResult {
    let (pans, _) = w.secrets();
    if pans.is_empty() {
        return Err("no card was planted: the scan would prove nothing".into());
    }
    let (records, what) = w.stored_records().await?;
    let findings = PciWorld::scan_records_for_pans(&records, &pans);
    w.note(format!(
        "scanned {what} for {} card number(s) (plain, grouped, hex, base64) and any Luhn-valid 13–19 digit number: {} finding(s)",
        pans.len(),
        findings.len()
    ));
    w.no_findings("3.5.1", "a card number is stored readable", findings)
}

#[then("no stored record contains the CVC")]
async fn no_cvc_at_rest(w: &mut PciWorld) -> StepResult {
    let (_, cvcs) = w.secrets();
    if cvcs.is_empty() {
        return Err("no CVC was planted: the scan would prove nothing".into());
    }
    let (records, what) = w.stored_records().await?;
    let mut findings = vec![];
    for (loc, text) in &records {
        for c in &cvcs {
            findings.extend(scan::find_cvc(loc, text, c));
        }
    }
    w.note(format!(
        "scanned {what} for CVC fields (cvc, cvv, cvc2, card[cvc], …) and the CVC value as a string: {} finding(s)",
        findings.len()
    ));
    w.no_findings("3.3.1", "the CVC is stored after authorization", findings)
}

async fn scan_logs(w: &mut PciWorld, req: &str, pans_too: bool, cvcs_too: bool) -> StepResult {
    let (pans, cvcs) = w.secrets();
    let (text, source) = w.log_text().await?;
    let pans = if pans_too { pans } else { vec![] };
    let cvcs = if cvcs_too { cvcs } else { vec![] };
    let (lines, findings) = scan::scan_log(&text, &pans, &cvcs);
    if lines == 0 {
        return Err(format!(
            "no log lines were captured from {source}: the log check would prove nothing"
        ));
    }
    w.note(format!(
        "scanned {lines} log lines of {source} for {} card number(s), any Luhn-valid card-like number and {} CVC(s): {} finding(s)",
        pans.len(),
        cvcs.len(),
        findings.len()
    ));
    w.no_findings(req, "cardholder data written to the logs", findings)
}

#[then("no log line contains the card number")]
async fn no_pan_in_logs(w: &mut PciWorld) -> StepResult {
    scan_logs(w, "3.4.1", true, false).await
}

#[then("no log line contains the CVC")]
async fn no_cvc_in_logs(w: &mut PciWorld) -> StepResult {
    scan_logs(w, "3.3.1", false, true).await
}

#[then("no API response contained the CVC")]
async fn no_cvc_in_responses(w: &mut PciWorld) -> StepResult {
    let (_, cvcs) = w.secrets();
    let mut findings = vec![];
    for a in &w.responses {
        let text = String::from_utf8_lossy(&a.raw);
        for c in &cvcs {
            findings.extend(scan::find_cvc(&a.request, &text, c));
        }
    }
    let n = w.responses.len();
    w.note(format!(
        "scanned {n} API responses for the CVC: {} finding(s)",
        findings.len()
    ));
    w.no_findings("3.3.1", "the CVC returned by the API", findings)
}

#[then("every API response shows the card only as BIN and last four")]
async fn masked_everywhere(w: &mut PciWorld) -> StepResult {
    let (pans, _) = w.secrets();
    let mut findings = vec![];
    let mut last4_seen = 0;
    for a in &w.responses {
        let text = String::from_utf8_lossy(&a.raw);
        for pan in &pans {
            findings.extend(scan::find_pan(&a.request, &text, pan));
            if text.contains(&format!("\"last4\":\"{}\"", &pan[pan.len().saturating_sub(4)..])) {
                last4_seen += 1;
            }
        }
        findings.extend(scan::find_pan_like(&a.request, &text));
    }
    let n = w.responses.len();
    // One masked card object as the API shows it, for the assessor.
    let sample = w.responses.iter().find_map(|a| {
        let card = a.json.pointer("/card")?;
        Some(format!(
            "{} → card shown as {{brand: {}, last4: {}, exp: {}/{}, fingerprint: {}}}",
            a.request, card["brand"], card["last4"], card["exp_month"], card["exp_year"], card["fingerprint"]
        ))
    });
    if let Some(s) = sample {
        w.note(s);
    }
    w.note(format!(
        "scanned {n} API responses (every answer in this scenario, errors included) for the full card number: {} finding(s); {last4_seen} show the card as last4",
        findings.len()
    ));
    if last4_seen == 0 {
        return Err("no response showed the card at all: the masking check would prove nothing".into());
    }
    w.no_findings("3.4.1", "a full card number in an API response", findings)
}

fn vault_rows(records: &[(String, String)]) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter(|(loc, _)| loc.starts_with("vault_cards"))
        .filter_map(|(_, t)| serde_json::from_str::<serde_json::Value>(t).ok())
        .map(|v| v.get("body").cloned().unwrap_or(v))
        .collect()
}

#[then("the vault holds every card number only as ciphertext")]
async fn vault_ciphertext(w: &mut PciWorld) -> StepResult {
    let (pans, _) = w.secrets();
    let (records, _) = w.stored_records().await?;
    let rows = vault_rows(&records);
    let mut with_ct = 0;
    for body in &rows {
        let ct = body.get("ciphertext").and_then(|c| c.as_str()).unwrap_or("");
        let iv = body.get("iv").and_then(|c| c.as_str()).unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(ct)
            .map_err(|_| "a vault ciphertext is not base64".to_owned())?;
        // AES-GCM: 16-byte tag after the encrypted digits.
        if bytes.len() < 16 + 13 || iv.is_empty() {
            return Err(format!(
                "a vault record is not AES-GCM ciphertext ({} bytes)",
                bytes.len()
            ));
        }
        let text = String::from_utf8_lossy(&bytes);
        for pan in &pans {
            if text.contains(pan.as_str()) {
                return Err("PCI DSS 3.5.1 violated: the vault 'ciphertext' contains the card number".into());
            }
        }
        if body.get("data_key").and_then(|d| d.as_str()).is_none() {
            return Err("a vault record does not name the data key that encrypts it".into());
        }
        with_ct += 1;
    }
    if with_ct == 0 || with_ct < w.cards.iter().filter(|c| !c.payment_method.is_empty()).count() {
        return Err(format!("expected a vault record per tokenized card, found {with_ct}"));
    }
    w.note(format!(
        "vault_cards: {with_ct} records, each AES-256-GCM ciphertext (iv + ciphertext + tag, base64) naming its data key; no plaintext digits"
    ));
    Ok(())
}

#[then("the same card always has the same fingerprint and different cards different ones")]
async fn fingerprints_consistent(w: &mut PciWorld) -> StepResult {
    let mut by_pan: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for c in &w.cards {
        if let Some(f) = &c.fingerprint {
            by_pan.entry(c.pan.clone()).or_default().insert(f.clone());
        }
    }
    if by_pan.len() < 2 {
        return Err("two different cards are needed".into());
    }
    let mut all = std::collections::BTreeSet::new();
    for (pan, fps) in &by_pan {
        if fps.len() != 1 {
            return Err(format!(
                "card {} got {} different fingerprints",
                scan::mask(pan),
                fps.len()
            ));
        }
        all.extend(fps.iter().cloned());
    }
    if all.len() != by_pan.len() {
        return Err("two different cards share a fingerprint".into());
    }
    w.note(format!(
        "{} distinct cards → {} distinct fingerprints; repeated tokenizations of a card → the same fingerprint",
        by_pan.len(),
        all.len()
    ));
    Ok(())
}

#[then("the fingerprint is a keyed hash, not a plain hash of the card number")]
async fn fingerprint_keyed(w: &mut PciWorld) -> StepResult {
    for c in w.cards.clone() {
        let Some(fp) = c.fingerprint.clone() else { continue };
        let digest = Sha256::digest(c.pan.as_bytes());
        let forms = [
            hex::encode(digest),
            base64::engine::general_purpose::STANDARD.encode(digest),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
        ];
        for f in &forms {
            if f.starts_with(&fp) || fp.contains(&f[..12]) {
                return Err(format!(
                    "PCI DSS 3.5.1 violated: the fingerprint of {} is an unkeyed SHA-256 of the number (anyone can test guesses)",
                    scan::mask(&c.pan)
                ));
            }
        }
        if fp.contains(&c.pan) || fp.contains(&c.pan[6..]) {
            return Err("the fingerprint contains card digits".into());
        }
    }
    w.note("no fingerprint equals or contains an unkeyed SHA-256 (hex/base64) of its card number: it is a keyed HMAC computed in the HSM");
    Ok(())
}

#[then("every data-encryption key is stored only wrapped by a key-encryption key")]
async fn data_keys_wrapped(w: &mut PciWorld) -> StepResult {
    let (records, _) = w.stored_records().await?;
    let keys: Vec<serde_json::Value> = records
        .iter()
        .filter(|(loc, _)| loc.starts_with("data_keys"))
        .filter_map(|(_, t)| serde_json::from_str::<serde_json::Value>(t).ok())
        .map(|v| v.get("body").cloned().unwrap_or(v))
        .collect();
    if keys.is_empty() {
        return Err("no data keys found: tokenize a card first".into());
    }
    let mut keks = std::collections::BTreeSet::new();
    for k in &keys {
        let wrapped = k.get("wrapped").ok_or("a data key record has no wrapped key")?;
        let kek = wrapped
            .get("kek")
            .and_then(|x| x.as_str())
            .ok_or("a wrapped key names no KEK")?;
        let mech = wrapped.get("mechanism").and_then(|x| x.as_str()).unwrap_or("");
        let bytes = wrapped
            .get("bytes")
            .and_then(|x| x.as_str())
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default())
            .unwrap_or_default();
        // A raw AES-256 key is 32 bytes; RFC 5649 wrapping adds 8, AES-GCM adds IV and tag.
        if bytes.len() <= 32 {
            return Err(format!(
                "PCI DSS 3.6.1 violated: a data key is stored as {} bytes, the size of an unwrapped key",
                bytes.len()
            ));
        }
        for field in ["key", "plaintext", "secret", "raw"] {
            if k.get(field).is_some() {
                return Err(format!("a data key record has a `{field}` field"));
            }
        }
        keks.insert(format!("{kek} ({mech})"));
    }
    w.note(format!(
        "data_keys: {} record(s), each only as wrapped bytes (> 32) under KEK(s) {} held in the HSM; no plaintext key field",
        keys.len(),
        keks.into_iter().collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

#[when(expr = "the data retention job runs {int} hours later")]
async fn retention_job(w: &mut PciWorld, hours: u64) -> StepResult {
    let backend = w
        .system()
        .await?
        .backend
        .clone()
        .ok_or("the retention check runs the purge against the database: pass --database-url")?;
    let env = pay_core::Env::real("pcicheck");
    let db = pay_store::Db::new(backend, env.clone());
    let now = env.now().plus(std::time::Duration::from_secs(hours * 3600));
    let (keys, txns) = db
        .reap(now, std::time::Duration::from_secs(2 * 86_400))
        .await
        .map_err(|e| e.to_string())?;
    w.note(format!(
        "ran the store's retention purge (the one paymentd runs every 10 minutes) as of {hours} h from now: {keys} expired idempotency record(s) and {txns} transaction id(s) deleted"
    ));
    w.reaped = Some(keys);
    Ok(())
}

#[then(expr = "the stored idempotency record for key {string} has been deleted")]
async fn idem_deleted(w: &mut PciWorld, key: String) -> StepResult {
    let reaped = w.reaped.unwrap_or(0);
    if reaped == 0 {
        return Err("PCI DSS 3.2.1 violated: the retention job deleted no expired records".into());
    }
    let pg = match &w.system().await?.records {
        Records::Postgres(pg) => Some(pg.pool().clone()),
        _ => None,
    };
    if let Some(pool) = pg {
        let n: i64 = sqlx::query("SELECT count(*) FROM idempotency_keys WHERE key = $1")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        w.note(format!(
            "SELECT count(*) FROM idempotency_keys WHERE key = '{key}' → {n}"
        ));
        if n != 0 {
            return Err(format!(
                "PCI DSS 3.2.1 violated: the expired idempotency record {key} is still stored"
            ));
        }
    }
    Ok(())
}
