//! `pcicheck`: run the PCI DSS scenarios, list them, or show catalog coverage.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pay_compliance::catalog::Catalog;
use pay_compliance::runner::{self, RunOptions};
use pay_compliance::target::{Deployed, EmbeddedStore, FaultInjection, TargetSpec};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pcicheck",
    about = "PCI DSS v4.0 compliance scenarios against an embedded or deployed payment system"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Store {
    Memory,
    Postgres,
}

#[derive(Clone, Copy, ValueEnum)]
enum Fault {
    None,
    RawPanInLogs,
}

// Parsed once per process: the size of `run`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios and write the reports (embedded target unless --base-url is given).
    Run {
        /// Deployed target: the public API base URL (https://…).
        #[arg(long)]
        base_url: Option<String>,
        /// A merchant secret key of the deployed target (test mode).
        #[arg(long, env = "PCICHECK_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The same merchant's publishable key (least-privilege checks).
        #[arg(long)]
        publishable_key: Option<String>,
        /// PostgreSQL URL: the deployed target's records database (read for at-rest checks), or
        /// for an embedded target the server to use instead of a throwaway database.
        #[arg(long, env = "PCICHECK_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The deployed target's log file (log checks).
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// PEM roots to trust for an https:// base URL.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The deployed node's admin endpoint (`admin.listen`), e.g. http://127.0.0.1:7190
        /// (key rotation and retirement, unsealing).
        #[arg(long)]
        admin_url: Option<String>,
        /// File holding the deployed node's admin token (`admin.token_file`).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// The deployed node's audit log file (`audit.file`), for the audit-log checks.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// A custodian share file (repeat once per custodian) for the unseal scenario, against
        /// a node started sealed.
        #[arg(long)]
        unseal_share_file: Vec<PathBuf>,
        /// Embedded target's records store.
        #[arg(long, value_enum, default_value = "memory")]
        store: Store,
        /// Cucumber tag expression, e.g. `@pci-req-3 and not @pci-3.2.1`.
        #[arg(long)]
        tags: Option<String>,
        /// Report directory.
        #[arg(long, visible_alias = "report-dir", default_value = "pcicheck-report")]
        out: PathBuf,
        /// Also execute @pending scenarios (still reported as PENDING).
        #[arg(long)]
        include_pending: bool,
        /// Scenarios run at once (embedded default 4; deployed runs one at a time).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Feature directory.
        #[arg(long)]
        features: Option<PathBuf>,
        /// Control catalog.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Test only: run against a deliberately broken embedded target.
        #[arg(long, value_enum, default_value = "none", hide = true)]
        fault_injection: Fault,
    },
    /// List every scenario with its tags and requirement ids.
    List {
        /// Feature directory.
        #[arg(long)]
        features: Option<PathBuf>,
    },
    /// How many in-scope requirements have scenarios (or, with --from, passing evidence).
    Coverage {
        /// A report directory from `pcicheck run`.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Feature directory.
        #[arg(long)]
        features: Option<PathBuf>,
        /// Control catalog.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
}

fn default_features(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| {
        let local = PathBuf::from("features");
        if local.is_dir() {
            local
        } else {
            pay_compliance::repo_root().join("features")
        }
    })
}

fn default_catalog(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| {
        let local = PathBuf::from("compliance/controls.yaml");
        if local.is_file() {
            local
        } else {
            pay_compliance::repo_root().join("compliance/controls.yaml")
        }
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            base_url,
            api_key,
            publishable_key,
            database_url,
            log_file,
            ca_file,
            admin_url,
            admin_token_file,
            audit_log,
            unseal_share_file,
            store,
            tags,
            out,
            include_pending,
            concurrency,
            features,
            catalog,
            fault_injection,
        } => {
            let target = match base_url {
                Some(base_url) => {
                    let api_key = api_key.context("--api-key is required with --base-url")?;
                    TargetSpec::Deployed(Deployed {
                        base_url,
                        api_key,
                        publishable_key,
                        database_url,
                        log_file,
                        ca_file,
                        admin_url,
                        admin_token_file,
                        audit_log,
                        unseal_share_files: unseal_share_file,
                    })
                }
                None => {
                    if admin_url.is_some()
                        || admin_token_file.is_some()
                        || audit_log.is_some()
                        || !unseal_share_file.is_empty()
                    {
                        bail!("--admin-url, --admin-token-file, --audit-log and --unseal-share-file describe a deployment: give --base-url too");
                    }
                    TargetSpec::Embedded {
                        store: match store {
                            Store::Memory => EmbeddedStore::Memory,
                            Store::Postgres => EmbeddedStore::Postgres(database_url),
                        },
                    }
                }
            };
            let fault = match fault_injection {
                Fault::None => FaultInjection::None,
                Fault::RawPanInLogs => FaultInjection::RawPanInLogs,
            };
            if fault != FaultInjection::None && !target.is_embedded() {
                bail!("fault injection is for the embedded target only");
            }
            let concurrency = concurrency.unwrap_or(if target.is_embedded() { 4 } else { 1 });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            let report = rt.block_on(runner::run(RunOptions {
                features: default_features(features),
                catalog: default_catalog(catalog),
                target,
                tags,
                out: out.clone(),
                include_pending,
                concurrency,
                fault,
            }));
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("pcicheck: {e}");
                    std::process::exit(2);
                }
            };
            println!("\n{}", report.table());
            for s in report
                .scenarios
                .iter()
                .filter(|s| s.status == pay_compliance::report::Status::Failed)
            {
                println!(
                    "FAILED {} ({}:{}) [{}]: {}",
                    s.name,
                    s.file,
                    s.line,
                    s.requirements.join(", "),
                    s.message.as_deref().unwrap_or("")
                );
            }
            println!(
                "reports: {0}/report.html {0}/report.md {0}/junit.xml {0}/cucumber.json {0}/results.json",
                out.display()
            );
            println!("pcicheck: {}", report.summary_line());
            if report.failed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::List { features } => {
            for l in runner::list_scenarios(&default_features(features))? {
                println!(
                    "{}:{}\t{}\t{}",
                    l.file,
                    l.line,
                    l.name,
                    l.tags.iter().map(|t| format!("@{t}")).collect::<Vec<_>>().join(" ")
                );
            }
            Ok(())
        }
        Cmd::Coverage {
            from,
            features,
            catalog,
        } => {
            let catalog = Catalog::load(&default_catalog(catalog))?;
            let listed = runner::list_scenarios(&default_features(features))?;
            let results = match &from {
                Some(dir) => {
                    let p = dir.join("results.json");
                    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                    Some(serde_json::from_str::<serde_json::Value>(&text)?)
                }
                None => None,
            };
            let (table, evidenced, total) = runner::coverage(&catalog, &listed, results.as_ref());
            print!("{table}");
            if from.is_some() {
                println!("{evidenced} of {total} in-scope requirements have passing evidence");
            } else {
                println!("{evidenced} of {total} in-scope requirements have runnable (non-pending) scenarios");
            }
            println!(
                "{} requirements judged organisational (see controls.yaml)",
                catalog.organisational.len()
            );
            Ok(())
        }
    }
}
