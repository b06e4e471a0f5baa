//! Steps for key management and the audit log (PCI DSS 3.6/3.7, 10.2, 10.3).
//!
//! The key lifecycle and the audit log are built by a separate piece of work; the scenarios that
//! use these steps are tagged `@pending` until it lands. The steps are written against what that
//! work specifies (a PostgreSQL audit table whose rows carry actor, action, object, outcome, time
//! and origin; `paymentd keys rotate`, `paymentd audit verify`) and find columns by their usual
//! names, so enabling a scenario is removing its `@pending` tag.

use crate::target::Records;
use crate::world::PciWorld;
use cucumber::{then, when};
use sqlx::Row;

type StepResult = Result<(), String>;

/// Audit rows as JSON objects, oldest first, from the first table whose name starts with `audit`.
async fn audit_rows(w: &mut PciWorld) -> Result<(String, Vec<serde_json::Value>), String> {
    let pool = match &w.system().await?.records {
        Records::Postgres(pg) => pg.pool().clone(),
        _ => return Err("the audit log is read from PostgreSQL: run embedded with --database-url or a deployment with --database-url".into()),
    };
    let table: Option<String> = sqlx::query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'audit%' ORDER BY table_name LIMIT 1",
    )
    .fetch_optional(&pool)
    .await
    .map_err(|e| e.to_string())?
    .map(|r| r.get(0));
    let table = table.ok_or("PCI DSS 10.2.1: no audit log table in the database")?;
    let rows = sqlx::query(&format!(
        "SELECT row_to_json(pcicheck_row)::text FROM \"{table}\" pcicheck_row"
    ))
    .fetch_all(&pool)
    .await
    .map_err(|e| e.to_string())?;
    let rows = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.get::<String, _>(0)).ok())
        .collect();
    Ok((table, rows))
}

fn field<'a>(row: &'a serde_json::Value, names: &[&str]) -> Option<&'a serde_json::Value> {
    let obj = row.as_object()?;
    for n in names {
        if let Some(v) = obj.get(*n).filter(|v| !v.is_null()) {
            return Some(v);
        }
    }
    // Rows may keep the entry in a JSON body column.
    obj.get("body").and_then(|b| field(b, names))
}

#[then(expr = "the audit log has an entry for {string} with actor, action, time, outcome, origin and object")]
async fn audit_entry(w: &mut PciWorld, action: String) -> StepResult {
    let (table, rows) = audit_rows(w).await?;
    let row = rows
        .iter()
        .rev()
        .find(|r| r.to_string().contains(&action))
        .ok_or_else(|| format!("PCI DSS 10.2.1 violated: no audit entry for {action} in {table}"))?;
    let want: [(&str, &[&str]); 6] = [
        ("actor", &["actor", "user", "principal", "who", "service"]),
        ("action", &["action", "type", "event", "what"]),
        ("time", &["at", "time", "created", "timestamp", "created_ms"]),
        ("outcome", &["outcome", "result", "status"]),
        ("origin", &["origin", "source", "ip", "client_ip"]),
        ("object", &["object", "object_id", "target", "resource"]),
    ];
    let missing: Vec<&str> = want
        .iter()
        .filter(|(_, names)| field(row, names).is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "PCI DSS 10.2.2 violated: the audit entry for {action} lacks {}",
            missing.join(", ")
        ));
    }
    w.note(format!("{table}: entry for {action}: {row}"));
    Ok(())
}

fn paymentd_bin() -> Result<String, String> {
    // The harness is a tool run by people: it may look for the binary next to itself.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = exe.with_file_name("paymentd");
    if beside.exists() {
        return Ok(beside.display().to_string());
    }
    let up = exe.parent().and_then(|p| p.parent()).map(|p| p.join("paymentd"));
    match up {
        Some(p) if p.exists() => Ok(p.display().to_string()),
        _ => Ok("paymentd".into()),
    }
}

#[when("a row of the audit log is altered directly in the database")]
async fn tamper(w: &mut PciWorld) -> StepResult {
    let (table, rows) = audit_rows(w).await?;
    if rows.len() < 2 {
        return Err("the audit log needs at least two entries to tamper with".into());
    }
    let pool = match &w.system().await?.records {
        Records::Postgres(pg) => pg.pool().clone(),
        _ => return Err("no database".into()),
    };
    let col = ["outcome", "result", "status"]
        .into_iter()
        .find(|c| rows[0].get(*c).is_some())
        .ok_or("no outcome column to alter")?;
    let sql = format!(
        "UPDATE \"{table}\" SET \"{col}\" = 'tampered' WHERE ctid = (SELECT ctid FROM \"{table}\" LIMIT 1 OFFSET 1)"
    );
    sqlx::query(&sql).execute(&pool).await.map_err(|e| e.to_string())?;
    w.note(format!("tampered: {sql}"));
    Ok(())
}

#[then("verifying the audit log reports the altered row")]
async fn verify_reports(w: &mut PciWorld) -> StepResult {
    let ctx = w.ctx()?;
    let url = match &ctx.spec {
        crate::target::TargetSpec::Deployed(d) => d.database_url.clone(),
        crate::target::TargetSpec::Embedded { .. } => ctx.pg.lock().await.as_ref().map(|p| p.url.clone()),
    }
    .ok_or("audit verification needs the database")?;
    let bin = paymentd_bin()?;
    let out = std::process::Command::new(&bin)
        .args(["audit", "verify", "--database-url", &url])
        .output()
        .map_err(|e| format!("cannot run {bin} audit verify: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    w.note(format!(
        "paymentd audit verify → exit {:?}: {}",
        out.status.code(),
        text.trim()
    ));
    if out.status.success() {
        return Err("PCI DSS 10.3.2 violated: audit verification passed over a tampered row".into());
    }
    Ok(())
}

#[when("the key custodian rotates the key-encryption key")]
async fn rotate(w: &mut PciWorld) -> StepResult {
    let ctx = w.ctx()?;
    let url = match &ctx.spec {
        crate::target::TargetSpec::Deployed(d) => d.database_url.clone(),
        crate::target::TargetSpec::Embedded { .. } => ctx.pg.lock().await.as_ref().map(|p| p.url.clone()),
    }
    .ok_or("key rotation needs the database")?;
    let bin = paymentd_bin()?;
    let out = std::process::Command::new(&bin)
        .args(["keys", "rotate", "--database-url", &url])
        .output()
        .map_err(|e| format!("cannot run {bin} keys rotate: {e}"))?;
    w.note(format!(
        "paymentd keys rotate → exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    if !out.status.success() {
        return Err(format!("rotation failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

#[then("every data-encryption key is wrapped by the new key-encryption key version")]
async fn rewrapped(w: &mut PciWorld) -> StepResult {
    let (records, _) = w.stored_records().await?;
    let keks: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|(loc, _)| loc.starts_with("data_keys"))
        .filter_map(|(_, t)| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter_map(|v| {
            let b = v.get("body").cloned().unwrap_or(v);
            b.pointer("/wrapped/kek").and_then(|k| k.as_str()).map(str::to_owned)
        })
        .collect();
    if keks.len() != 1 {
        return Err(format!(
            "PCI DSS 3.6.1/3.7.4: data keys are wrapped by {} KEK versions after rotation",
            keks.len()
        ));
    }
    w.note(format!(
        "after rotation every data key is wrapped by {}",
        keks.into_iter().collect::<Vec<_>>().join("")
    ));
    Ok(())
}
