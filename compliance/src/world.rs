//! The cucumber World: one per scenario, holding the system under test and what the scenario
//! planted (card numbers, CVCs) and saw (API answers, evidence).

use crate::scan::{self, Finding};
use crate::target::{Answer, Records, RunContext, SealSpec, System};
use cucumber::World;
use paymentd::wiring::Tuning;
use sqlx::Row;
use std::sync::{Arc, Mutex};

static CURRENT: Mutex<Option<Arc<RunContext>>> = Mutex::new(None);

/// Sets the context the next scenarios' worlds are created with (one run at a time).
pub fn set_context(ctx: Arc<RunContext>) {
    let mut g = match CURRENT.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *g = Some(ctx);
}

fn current_context() -> Result<Arc<RunContext>, String> {
    let g = match CURRENT.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    g.clone()
        .ok_or_else(|| "no run context: scenarios must be started through pcicheck".to_owned())
}

/// A card the scenario tokenized.
#[derive(Clone)]
pub struct PlantedCard {
    /// The number (kept only in harness memory, to search for it).
    pub pan: String,
    /// The CVC given with it.
    pub cvc: String,
    /// The payment method created.
    pub payment_method: String,
    /// The fingerprint the API reported.
    pub fingerprint: Option<String>,
}

/// A TLS endpoint under test.
pub struct TlsEndpoint {
    /// `host:port` to connect to.
    pub addr: String,
    /// Name for SNI.
    pub host: String,
    /// Stops an embedded listener when dropped.
    pub _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// State of one scenario.
#[derive(World)]
#[world(init = Self::new)]
pub struct PciWorld {
    /// The run's shared context.
    pub ctx: Option<Arc<RunContext>>,
    /// Tuning for an embedded node (set by steps before the system starts).
    pub tuning: Tuning,
    /// The system, started on first use.
    pub sys: Option<System>,
    /// Evidence lines for the report.
    pub evidence: Vec<String>,
    /// Every API answer seen.
    pub responses: Vec<Answer>,
    /// Cards tokenized.
    pub cards: Vec<PlantedCard>,
    /// The last payment (PaymentIntent answer).
    pub payment: Option<Answer>,
    /// The answer before the last one in an idempotency sequence.
    pub first: Option<Answer>,
    /// The last answer.
    pub last: Option<Answer>,
    /// Statuses of a series of requests.
    pub statuses: Vec<u16>,
    /// Keys reaped by the retention job.
    pub reaped: Option<u64>,
    /// The TLS endpoint under test.
    pub tls: Option<TlsEndpoint>,
    /// The last TLS probe outcome (description, accepted).
    pub tls_outcome: Option<(String, bool)>,
    /// Last internal call status.
    pub internal_status: Option<u16>,
    /// The hostile payload sent last.
    pub payload: Option<String>,
    /// Parameters of the last payment request (for retries).
    pub last_form: Vec<(String, String)>,
    /// Start the embedded system sealed (set by a step before it starts).
    pub seal: Option<SealSpec>,
    /// Wrong API keys presented (the audit log must not hold them raw).
    pub wrong_keys: Vec<String>,
    /// The last KEK rotation: the new KEK and the ones it replaced.
    pub rotation: Option<(String, Vec<String>)>,
    /// The audit log entry altered by the scenario: the file verified and its line number.
    pub tampered: Option<(std::path::PathBuf, u64)>,
    /// When the scenario began (Unix ms), to place its audit entries in time.
    pub started_ms: i64,
    /// Custodian shares submitted so far.
    pub shares_entered: usize,
}

impl std::fmt::Debug for PciWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints planted card data.
        f.debug_struct("PciWorld")
            .field("started", &self.sys.is_some())
            .field("cards", &self.cards.len())
            .field("responses", &self.responses.len())
            .field("evidence", &self.evidence.len())
            .finish()
    }
}

impl PciWorld {
    fn new() -> PciWorld {
        PciWorld {
            ctx: current_context().ok(),
            tuning: Tuning::default(),
            sys: None,
            evidence: vec![],
            responses: vec![],
            cards: vec![],
            payment: None,
            first: None,
            last: None,
            statuses: vec![],
            reaped: None,
            tls: None,
            tls_outcome: None,
            internal_status: None,
            payload: None,
            last_form: vec![],
            seal: None,
            wrong_keys: vec![],
            rotation: None,
            tampered: None,
            shares_entered: 0,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// The run context.
    pub fn ctx(&self) -> Result<Arc<RunContext>, String> {
        self.ctx
            .clone()
            .ok_or_else(|| "no run context: scenarios must be started through pcicheck".to_owned())
    }

    /// Records a line of evidence.
    pub fn note(&mut self, line: impl Into<String>) {
        self.evidence.push(line.into());
    }

    /// The system, started (embedded) or connected (deployed) on first use.
    pub async fn system(&mut self) -> Result<&mut System, String> {
        if self.sys.is_none() {
            let ctx = self.ctx()?;
            let sys = System::start(&ctx, self.tuning.clone(), self.seal).await?;
            self.note(format!("target: {} (public API {})", ctx.spec.describe(), sys.base_url));
            if ctx.spec.is_embedded() {
                self.note(format!(
                    "embedded node: admin endpoint {}, audit log {}",
                    sys.admin.as_ref().map(|a| a.base()).unwrap_or("none"),
                    sys.audit_log
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "none".into())
                ));
            }
            self.sys = Some(sys);
        }
        self.sys.as_mut().ok_or_else(|| "system not started".to_owned())
    }

    /// Records an answer and returns it.
    pub fn saw(&mut self, a: Answer) -> Answer {
        self.responses.push(a.clone());
        self.last = Some(a.clone());
        a
    }

    /// A form POST with the merchant's secret key.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)], idem: Option<&str>) -> Result<Answer, String> {
        let a = self
            .system()
            .await?
            .client
            .post(path, form, idem)
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.saw(a))
    }

    /// A GET with the merchant's secret key.
    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        let a = self.system().await?.client.get(path).await.map_err(|e| e.to_string())?;
        Ok(self.saw(a))
    }

    /// The last card tokenized.
    pub fn card(&self) -> Result<&PlantedCard, String> {
        self.cards
            .last()
            .ok_or_else(|| "no card was tokenized in this scenario".to_owned())
    }

    /// Every planted PAN and CVC.
    pub fn secrets(&self) -> (Vec<String>, Vec<String>) {
        let mut pans: Vec<String> = self.cards.iter().map(|c| c.pan.clone()).collect();
        let mut cvcs: Vec<String> = self
            .cards
            .iter()
            .map(|c| c.cvc.clone())
            .filter(|c| !c.is_empty())
            .collect();
        pans.sort();
        pans.dedup();
        cvcs.sort();
        cvcs.dedup();
        (pans, cvcs)
    }

    /// Every stored record as (location, JSON text), and a description of what was read.
    pub async fn stored_records(&mut self) -> Result<(Vec<(String, String)>, String), String> {
        let sys = self.system().await?;
        match &sys.records {
            Records::Memory(m) => {
                let mut out = vec![];
                let mut tables = std::collections::BTreeSet::new();
                for (table, rec) in m.dump() {
                    tables.insert(table.name());
                    let text = serde_json::to_string(&rec).map_err(|e| e.to_string())?;
                    out.push((format!("{}/{}", table.name(), rec.id), text));
                }
                for ev in m.all_events() {
                    let text = serde_json::to_string(&ev).map_err(|e| e.to_string())?;
                    out.push((format!("events/{}", ev.seq), text));
                }
                let what = format!(
                    "in-memory store: {} records in {} tables ({}) and the event outbox",
                    out.len(),
                    tables.len(),
                    tables.into_iter().collect::<Vec<_>>().join(", ")
                );
                Ok((out, what))
            }
            Records::Postgres(pg) => {
                let tables = sqlx::query(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
                )
                .fetch_all(pg.pool())
                .await
                .map_err(|e| format!("listing tables: {e}"))?;
                let mut out = vec![];
                let mut names = vec![];
                for t in tables {
                    let name: String = t.get(0);
                    let sql = format!(
                        "SELECT row_to_json(pcicheck_row)::text FROM \"{}\" pcicheck_row",
                        name.replace('"', "")
                    );
                    let rows = sqlx::query(&sql)
                        .fetch_all(pg.pool())
                        .await
                        .map_err(|e| format!("reading {name}: {e}"))?;
                    for (i, r) in rows.iter().enumerate() {
                        out.push((format!("{name} row {}", i + 1), r.get::<String, _>(0)));
                    }
                    names.push(format!("{name} ({})", rows.len()));
                }
                let what = format!(
                    "PostgreSQL: every row of every table as JSON (`SELECT row_to_json(t)::text FROM <table> t`): {} rows in {} tables: {}",
                    out.len(),
                    names.len(),
                    names.join(", ")
                );
                Ok((out, what))
            }
            Records::None => Err(
                "this check reads the database: run against a deployment with --database-url (or embedded)".to_owned(),
            ),
        }
    }

    /// The captured or deployed log text.
    pub async fn log_text(&mut self) -> Result<(String, String), String> {
        let ctx = self.ctx()?;
        if ctx.spec.is_embedded() {
            // Give in-flight request logs a moment to be flushed.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            return Ok((
                ctx.logs.text_since(ctx.log_start),
                "the embedded node's log stream (JSON, as paymentd writes it)".into(),
            ));
        }
        let path = self
            .system()
            .await?
            .log_file
            .clone()
            .ok_or("this check reads the logs: pass --log-file with the deployment's log file")?;
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok((text, format!("log file {}", path.display())))
    }

    /// Fails with the findings, naming the requirement.
    pub fn no_findings(&mut self, req: &str, what: &str, findings: Vec<Finding>) -> Result<(), String> {
        if findings.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = findings
            .iter()
            .take(10)
            .map(|f| format!("{}: {}", f.location, f.what))
            .collect();
        for l in &list {
            self.note(format!("FINDING {l}"));
        }
        Err(format!(
            "PCI DSS {req} violated: {what} ({} finding(s)): {}",
            findings.len(),
            list.join("; ")
        ))
    }

    /// Scans stored records for planted PANs and PAN-like numbers.
    pub fn scan_records_for_pans(records: &[(String, String)], pans: &[String]) -> Vec<Finding> {
        let mut f = vec![];
        for (loc, text) in records {
            for pan in pans {
                f.extend(scan::find_pan(loc, text, pan));
            }
            f.extend(scan::find_pan_like(loc, text));
        }
        f
    }
}
