//! Running the features: selection (tags, `@pending`, what the target allows), the cucumber
//! run with its JSON and JUnit writers, and the evidence report.

use crate::catalog::{requirement_ids, Catalog};
use crate::report::{rfc3339, Report, ScenarioResult, Status};
use crate::target::{FaultInjection, RunContext, TargetSpec};
use crate::world::{set_context, PciWorld};
use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::tag::Ext as _;
use cucumber::{event, gherkin, writer, World as _, WriterExt as _};
use futures::FutureExt as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What to run and where to write.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Directory of `.feature` files.
    pub features: PathBuf,
    /// The control catalog.
    pub catalog: PathBuf,
    /// The target.
    pub target: TargetSpec,
    /// A cucumber tag expression (`@pci-3.4.1 and not @slow`).
    pub tags: Option<String>,
    /// Where the reports go.
    pub out: PathBuf,
    /// Also run `@pending` scenarios (they are still reported as PENDING unless they pass and
    /// the tag is removed).
    pub include_pending: bool,
    /// Scenarios at once (embedded: each has its own node).
    pub concurrency: usize,
    /// Deliberate defect (negative tests).
    pub fault: FaultInjection,
}

/// Errors that stop a run before verdicts exist.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input (features, catalog, tag expression).
    #[error("{0}")]
    Input(String),
    /// Report files could not be written.
    #[error("cannot write reports to {0}: {1}")]
    Output(String, String),
}

/// A scenario found in the feature files.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Feature name.
    pub feature: String,
    /// Feature file (relative when possible).
    pub file: String,
    /// Scenario name.
    pub name: String,
    /// Line.
    pub line: usize,
    /// Feature and scenario tags, without `@`.
    pub tags: Vec<String>,
}

/// Every scenario in `dir`'s feature files, in file order.
pub fn list_scenarios(dir: &Path) -> Result<Vec<Listed>, RunError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RunError::Input(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        let feature = gherkin::Feature::parse_path(&f, gherkin::GherkinEnv::default())
            .map_err(|e| RunError::Input(format!("{}: {e}", f.display())))?;
        let file = display_path(&f);
        let scenarios = feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()));
        for sc in scenarios {
            let mut tags = feature.tags.clone();
            tags.extend(sc.tags.iter().cloned());
            out.push(Listed {
                feature: feature.name.clone(),
                file: file.clone(),
                name: sc.name.clone(),
                line: sc.position.line,
                tags,
            });
        }
    }
    Ok(out)
}

fn display_path(p: &Path) -> String {
    let s = p.display().to_string();
    match s.rfind("features/") {
        Some(i) => s[i..].to_owned(),
        None => s,
    }
}

/// Why a scenario will not run on this target, if so.
fn not_applicable(tags: &[String], spec: &TargetSpec) -> Option<String> {
    let has = |t: &str| tags.iter().any(|x| x == t);
    match spec {
        TargetSpec::Embedded { store } => {
            if has("needs-postgres") && matches!(store, crate::target::EmbeddedStore::Memory) {
                return Some("needs PostgreSQL: run with --store postgres".into());
            }
            if has("needs-own-database") && matches!(store, crate::target::EmbeddedStore::Postgres(Some(_))) {
                return Some(
                    "re-wraps every data key in the database, but a --database-url database is shared by the run's embedded nodes, each with its own HSM: run in memory or with --store postgres alone (a throwaway database per scenario)"
                        .into(),
                );
            }
            None
        }
        TargetSpec::Deployed(d) => {
            if has("embedded-only") {
                return Some("acts as an internal service: runs on the embedded target only".into());
            }
            if (has("needs-db") || has("needs-postgres")) && d.database_url.is_none() {
                return Some("reads the database: pass --database-url".into());
            }
            if has("needs-logs") && d.log_file.is_none() {
                return Some("reads the logs: pass --log-file".into());
            }
            if has("needs-audit-log") && d.audit_log.is_none() {
                return Some("reads the audit log: pass --audit-log with the node's audit.file".into());
            }
            if has("needs-admin") && !d.has_admin() {
                return Some("manages keys through the admin endpoint: pass --admin-url and --admin-token-file".into());
            }
            if has("needs-unseal-shares") && (d.admin_url.is_none() || d.unseal_share_files.len() < 2) {
                return Some(
                    "unseals a node started sealed: pass --admin-url and an --unseal-share-file per custodian (at least 2)"
                        .into(),
                );
            }
            None
        }
    }
}

/// What the after-hook saw of one scenario (several runs for an outline's example rows).
#[derive(Default)]
struct Runs {
    runs: u32,
    passed: u32,
    failure: Option<String>,
    evidence: Vec<String>,
    finished: Option<String>,
}

#[derive(Default)]
struct Collected {
    by_scenario: BTreeMap<(String, String), Runs>,
}

/// The source revision: `PCICHECK_GIT_COMMIT` when a pipeline sets it, else `git rev-parse`.
pub fn git_commit() -> String {
    if let Ok(c) = std::env::var("PCICHECK_GIT_COMMIT") {
        if !c.is_empty() {
            return c;
        }
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the selected scenarios and writes every report; returns the report.
pub async fn run(opts: RunOptions) -> Result<Report, RunError> {
    let catalog = Catalog::load(&opts.catalog).map_err(|e| RunError::Input(e.to_string()))?;
    let filter: Option<TagOperation> = match &opts.tags {
        Some(t) => Some(
            t.parse()
                .map_err(|e| RunError::Input(format!("bad tag expression `{t}`: {e}")))?,
        ),
        None => None,
    };
    let listed = list_scenarios(&opts.features)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| RunError::Output(opts.out.display().to_string(), e.to_string()))?;
    let started = rfc3339(std::time::SystemTime::now());

    // Decide, per scenario, whether it runs and if not why.
    let mut decided: BTreeMap<(String, String), (Status, String)> = BTreeMap::new();
    for l in &listed {
        let key = (l.file.clone(), l.name.clone());
        if let Some(f) = &filter {
            if !f.eval(l.tags.iter()) {
                decided.insert(key, (Status::NotRun, "not selected by the tag filter".into()));
                continue;
            }
        }
        if l.tags.iter().any(|t| t == "pending") && !opts.include_pending {
            decided.insert(
                key,
                (
                    Status::Pending,
                    "waits for a part of the system not built yet (tagged @pending)".into(),
                ),
            );
            continue;
        }
        if let Some(why) = not_applicable(&l.tags, &opts.target) {
            let pending = l.tags.iter().any(|t| t == "pending");
            // A pending scenario stays PENDING, whatever the target.
            let st = if pending { Status::Pending } else { Status::NotRun };
            let why = if pending {
                format!("pending; not run here: {why}")
            } else {
                why
            };
            decided.insert(key, (st, why));
        }
    }
    let selected = decided
        .values()
        .filter(|(_, why)| why != "not selected by the tag filter")
        .count();
    if listed.len() == decided.len() && selected == 0 {
        return Err(RunError::Input(format!(
            "the tag filter `{}` selects no scenario (see `pcicheck list`)",
            opts.tags.as_deref().unwrap_or("")
        )));
    }
    let skip: Arc<BTreeMap<(String, String), (Status, String)>> = Arc::new(decided);

    let ctx = Arc::new(RunContext::new(opts.target.clone(), opts.fault));
    set_context(ctx.clone());
    let collected = Arc::new(Mutex::new(Collected::default()));
    let json_path = opts.out.join("cucumber.json");
    let junit_path = opts.out.join("junit.xml");
    let json = std::fs::File::create(&json_path)
        .map_err(|e| RunError::Output(json_path.display().to_string(), e.to_string()))?;
    let junit = std::fs::File::create(&junit_path)
        .map_err(|e| RunError::Output(junit_path.display().to_string(), e.to_string()))?;

    let writer = writer::Basic::raw(std::io::stdout(), writer::Coloring::Never, 0)
        .discard_stats_writes()
        .tee::<PciWorld, _>(writer::Json::for_tee(json))
        .tee::<PciWorld, _>(writer::JUnit::for_tee(junit, 0))
        .normalized();
    let hook_store = collected.clone();
    let filter_skip = skip.clone();
    PciWorld::cucumber()
        .with_writer(writer)
        .max_concurrent_scenarios(opts.concurrency.max(1))
        .with_default_cli()
        .after(move |feature, _rule, scenario, finished, world| {
            let store = hook_store.clone();
            let file = feature.path.as_deref().map(display_path).unwrap_or_default();
            let name = scenario.name.clone();
            let outcome: Result<(), String> = match finished {
                event::ScenarioFinished::StepPassed => Ok(()),
                event::ScenarioFinished::StepSkipped => {
                    Err("a step matches no step definition (not implemented)".to_owned())
                }
                event::ScenarioFinished::StepFailed(_, _, err) => Err(error_text(err)),
                event::ScenarioFinished::BeforeHookFailed(_) => Err("the before hook failed".to_owned()),
            };
            async move {
                let evidence = match world {
                    Some(w) => {
                        if let Some(sys) = w.sys.take() {
                            sys.stop().await;
                        }
                        w.tls.take();
                        std::mem::take(&mut w.evidence)
                    }
                    None => vec![],
                };
                let mut g = match store.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let e = g.by_scenario.entry((file, name)).or_default();
                e.runs += 1;
                match outcome {
                    Ok(()) => e.passed += 1,
                    Err(m) => {
                        if e.failure.is_none() {
                            e.failure = Some(m);
                        }
                    }
                }
                if e.evidence.is_empty() {
                    e.evidence = evidence;
                } else if !evidence.is_empty() {
                    e.evidence.push("— next example row —".into());
                    e.evidence.extend(evidence);
                }
                e.finished = Some(rfc3339(std::time::SystemTime::now()));
            }
            .boxed_local()
        })
        .filter_run(opts.features.clone(), move |feature, _rule, scenario| {
            let file = feature.path.as_deref().map(display_path).unwrap_or_default();
            !filter_skip.contains_key(&(file, scenario.name.clone()))
        })
        .await;

    let finished = rfc3339(std::time::SystemTime::now());
    if opts.target.is_embedded() {
        // The log lines the log checks scanned, for the assessor to inspect.
        let path = opts.out.join("embedded-node.log");
        std::fs::write(&path, ctx.logs.text_since(ctx.log_start))
            .map_err(|e| RunError::Output(path.display().to_string(), e.to_string()))?;
    }
    let collected = match collected.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    let mut results = vec![];
    for l in listed {
        let key = (l.file.clone(), l.name.clone());
        let requirements = requirement_ids(&l.tags);
        let pending_tag = l.tags.iter().any(|t| t == "pending");
        let (status, message, evidence, finished_at, runs, passed_runs) = if let Some((st, why)) = skip.get(&key) {
            (*st, Some(why.clone()), vec![], None, 0, 0)
        } else if let Some(Runs {
            runs,
            passed,
            failure: fail,
            evidence: ev,
            finished: at,
        }) = collected.by_scenario.get(&key)
        {
            let st = if pending_tag {
                // Run with --include-pending: still pending until the tag is removed.
                Status::Pending
            } else if fail.is_some() || passed < runs {
                Status::Failed
            } else {
                Status::Passed
            };
            let msg = match (pending_tag, fail) {
                (true, Some(f)) => Some(format!("pending; when run: {f}")),
                (true, None) => Some("pending; passed when run: remove the @pending tag".into()),
                (false, f) => f.clone(),
            };
            (st, msg, ev.clone(), at.clone(), *runs, *passed)
        } else {
            (
                Status::Failed,
                Some("selected but did not run (parse error or runner failure)".into()),
                vec![],
                None,
                0,
                0,
            )
        };
        results.push(ScenarioResult {
            feature: l.feature,
            file: l.file,
            name: l.name,
            line: l.line,
            tags: l.tags,
            requirements,
            status,
            message,
            evidence,
            finished_at,
            runs,
            passed_runs,
        });
    }
    let report = Report::build(
        &catalog,
        results,
        opts.target.describe(),
        git_commit(),
        opts.tags.clone(),
        started,
        finished,
    );
    report
        .write(&opts.out)
        .map_err(|e| RunError::Output(opts.out.display().to_string(), e.to_string()))?;
    Ok(report)
}

fn error_text(e: &event::StepError) -> String {
    match e {
        event::StepError::Panic(info) => {
            if let Some(s) = info.downcast_ref::<String>() {
                s.clone()
            } else if let Some(s) = info.downcast_ref::<&str>() {
                (*s).to_owned()
            } else {
                e.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Coverage of the catalog by scenarios (static, or from a run's `results.json`).
pub fn coverage(catalog: &Catalog, listed: &[Listed], results: Option<&serde_json::Value>) -> (String, usize, usize) {
    let mut lines = String::new();
    let mut evidenced = 0;
    for r in &catalog.requirements {
        let mine: Vec<&Listed> = listed
            .iter()
            .filter(|l| requirement_ids(&l.tags).contains(&r.id))
            .collect();
        let active = mine.iter().filter(|l| !l.tags.iter().any(|t| t == "pending")).count();
        let pending = mine.len() - active;
        let verdict = match results {
            Some(v) => v["requirements"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"] == r.id.as_str()))
                .and_then(|x| x["status"].as_str())
                .unwrap_or("NOT_RUN")
                .to_owned(),
            None => {
                if active > 0 {
                    "HAS_SCENARIOS".into()
                } else if pending > 0 {
                    "PENDING".into()
                } else {
                    "NO_SCENARIO".into()
                }
            }
        };
        if verdict == "PASSED" || (results.is_none() && verdict == "HAS_SCENARIOS") {
            evidenced += 1;
        }
        lines.push_str(&format!(
            "{:<10} {:<14} {} active, {} pending  {}\n",
            r.id, verdict, active, pending, r.title
        ));
    }
    (lines, evidenced, catalog.requirements.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Deployed, EmbeddedStore};

    fn deployed() -> Deployed {
        Deployed {
            base_url: "https://pay.example.com".into(),
            api_key: "sk_test_pcicheckUnitTest000000000000".into(),
            publishable_key: None,
            database_url: Some("postgres://db".into()),
            log_file: None,
            ca_file: None,
            admin_url: None,
            admin_token_file: None,
            audit_log: None,
            unseal_share_files: vec![],
        }
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn audit_key_and_unseal_scenarios_are_not_run_on_a_deployment_that_lacks_what_they_need() {
        let bare = TargetSpec::Deployed(deployed());
        let why = not_applicable(&tags(&["pci-10.3.2", "needs-audit-log"]), &bare).unwrap();
        assert!(why.contains("--audit-log"), "{why}");
        let why = not_applicable(&tags(&["pci-3.7.4", "needs-db", "needs-admin"]), &bare).unwrap();
        assert!(
            why.contains("--admin-url") && why.contains("--admin-token-file"),
            "{why}"
        );
        let why = not_applicable(&tags(&["pci-3.7.6", "needs-unseal-shares"]), &bare).unwrap();
        assert!(why.contains("--unseal-share-file"), "{why}");

        // A URL without a token allows unsealing but not key management.
        let mut d = deployed();
        d.admin_url = Some("http://127.0.0.1:7190".into());
        d.unseal_share_files = vec!["a".into()];
        let half = TargetSpec::Deployed(d.clone());
        assert!(not_applicable(&tags(&["needs-admin"]), &half).is_some());
        assert!(
            not_applicable(&tags(&["needs-unseal-shares"]), &half).is_some(),
            "one share is below any threshold the scenario uses"
        );
        d.admin_token_file = Some("admin.token".into());
        d.audit_log = Some("audit.log".into());
        d.unseal_share_files.push("b".into());
        let full = TargetSpec::Deployed(d);
        for t in ["needs-admin", "needs-audit-log", "needs-unseal-shares"] {
            assert_eq!(not_applicable(&tags(&[t]), &full), None, "{t}");
        }
        // The embedded target offers all of it, in memory.
        let embedded = TargetSpec::Embedded {
            store: EmbeddedStore::Memory,
        };
        for t in [
            "needs-admin",
            "needs-audit-log",
            "needs-unseal-shares",
            "needs-db",
            "needs-own-database",
        ] {
            assert_eq!(not_applicable(&tags(&[t]), &embedded), None, "{t}");
        }
        let throwaway = TargetSpec::Embedded {
            store: EmbeddedStore::Postgres(None),
        };
        assert_eq!(not_applicable(&tags(&["needs-own-database"]), &throwaway), None);
        let shared = TargetSpec::Embedded {
            store: EmbeddedStore::Postgres(Some("postgres://shared".into())),
        };
        assert!(not_applicable(&tags(&["needs-own-database"]), &shared).is_some());
    }
}
