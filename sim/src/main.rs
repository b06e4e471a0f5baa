//! `paysim`: run simulation seeds of the payment system and check its invariants.

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use sim::run::{run, RunOptions, RunReport};
use sim::scenario::Scenario;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// mimalloc: the simulator allocates heavily (every simulated message is real bytes), and
/// allocation order does not affect behaviour, so a faster allocator is free speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "paysim",
    version,
    about = "Deterministic simulation of the payment system: seeded faults, exactly-once invariants, bit-for-bit replay."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed: verdicts, statistics, trace hash and the command that reproduces it.
    Run {
        #[command(flatten)]
        target: SeedArgs,
        /// Run the seed twice and compare the traces.
        #[arg(long)]
        check_determinism: bool,
        /// JSON report on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Run many seeds with a randomized fault mix each; non-zero exit on any failure.
    Swarm {
        /// Scenario file.
        #[arg(long)]
        scenario: PathBuf,
        /// How many seeds.
        #[arg(long)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Parallel workers.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run the scenario's own fault schedule instead of drawing one per seed.
        #[arg(long)]
        no_draw: bool,
        /// JSON summary on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's timeline of messages, faults and state changes.
    Replay {
        #[command(flatten)]
        target: SeedArgs,
        /// Print the trace (the default and only output).
        #[arg(long, default_value_t = true)]
        trace: bool,
        /// Only events of this host.
        #[arg(long)]
        host: Option<String>,
        /// Only events mentioning this object id or key.
        #[arg(long)]
        object: Option<String>,
    },
    /// Internal: run a stride of seeds and print one JSON report per line (swarm workers).
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        first: u64,
        #[arg(long)]
        end: u64,
        #[arg(long)]
        stride: u64,
        #[arg(long)]
        draw: bool,
    },
    /// Shrink a failing seed to a minimal scenario.
    Shrink {
        #[command(flatten)]
        target: SeedArgs,
        /// Where to write the shrunk scenario.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The run a `run`, `replay` or `shrink` command is about: a scenario and a seed.
#[derive(clap::Args)]
struct SeedArgs {
    /// Scenario file.
    #[arg(long)]
    scenario: PathBuf,
    /// Seed.
    #[arg(long)]
    seed: u64,
    /// Draw the fault mix from the seed, as `paysim swarm` does (give it to reproduce a swarm
    /// seed).
    #[arg(long)]
    swarm: bool,
}

fn load(path: &std::path::Path) -> Result<Scenario> {
    Scenario::load(path).map_err(|e| anyhow!("{e}"))
}

fn opts(path: &std::path::Path, seed: u64, swarm: bool, keep_trace: bool) -> RunOptions {
    RunOptions {
        seed,
        swarm,
        keep_trace,
        scenario_path: path.display().to_string(),
    }
}

/// Asks the kernel not to back this process with transparent huge pages.
///
/// Every simulated host gets its own tokio runtime and allocator arenas; with THP the kernel
/// zeroes a fresh 2 MiB page for each first touch, which was a tenth of a baseline run's time.
/// Small pages cost nothing here, and a failure only loses the speed-up.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    sim::world::logs::install("info,turmoil=warn,hyper=warn,hyper_util=warn");
    match cli.command {
        Command::Run {
            target: SeedArgs { scenario, seed, swarm },
            check_determinism,
            json,
        } => {
            let s = load(&scenario)?;
            let report = run(&s, &opts(&scenario, seed, swarm, check_determinism));
            let mut ok = report.passed();
            if check_determinism {
                let again = run(&s, &opts(&scenario, seed, swarm, true));
                match sim::determinism::first_divergence(&report.trace, &again.trace) {
                    None => eprintln!(
                        "determinism: two runs produced identical traces ({} events, hash {})",
                        report.trace.len(),
                        report.trace_hash
                    ),
                    Some(d) => {
                        ok = false;
                        eprintln!(
                            "determinism: the two runs diverge at event #{}:\n  first:  {}\n  second: {}",
                            d.index, d.first, d.second
                        );
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Swarm {
            scenario,
            seeds,
            start,
            jobs,
            no_draw,
            json,
        } => swarm(&scenario, seeds, start, jobs.max(1), !no_draw, json),
        Command::Worker {
            scenario,
            first,
            end,
            stride,
            draw,
        } => {
            let s = load(&scenario)?;
            let stdout = std::io::stdout();
            let mut seed = first;
            while seed < end {
                let r = run(&s, &opts(&scenario, seed, draw, false));
                let _ = sim::world::logs::take();
                let mut out = stdout.lock();
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
                out.flush()?;
                seed += stride.max(1);
            }
            Ok(())
        }
        Command::Replay {
            target: SeedArgs { scenario, seed, swarm },
            trace: _,
            host,
            object,
        } => {
            let s = load(&scenario)?;
            let report = run(&s, &opts(&scenario, seed, swarm, true));
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for e in &report.trace {
                if host.as_deref().is_some_and(|h| e.host != h) {
                    continue;
                }
                if object.as_deref().is_some_and(|o| !e.detail.contains(o)) {
                    continue;
                }
                writeln!(out, "{}", e.line())?;
            }
            writeln!(
                out,
                "-- {} events, trace hash {}; {}",
                report.trace.len(),
                report.trace_hash,
                if report.passed() {
                    "all invariants held"
                } else {
                    "INVARIANTS VIOLATED"
                }
            )?;
            Ok(())
        }
        Command::Shrink {
            target: SeedArgs { scenario, seed, swarm },
            out,
        } => {
            let s = load(&scenario)?;
            let shrunk = sim::shrink::shrink(&s, &opts(&scenario, seed, swarm, false), |m| eprintln!("shrink: {m}"));
            match shrunk {
                None => {
                    println!("seed {seed} does not fail; nothing to shrink");
                    Ok(())
                }
                Some(sh) => {
                    let path = out.unwrap_or_else(|| PathBuf::from(format!("{}-seed{seed}.yaml", sh.scenario.name)));
                    std::fs::write(&path, sh.scenario.to_yaml())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!(
                        "# minimal failing scenario ({} runs tried), written to {}",
                        sh.tries,
                        path.display()
                    );
                    println!("{}", sh.scenario.to_yaml());
                    println!("# still failing: {}", failing(&sh.report).join(", "));
                    println!(
                        "# reproduce: {}",
                        sim::run::repro_command(&path.display().to_string(), seed, false)
                    );
                    Ok(())
                }
            }
        }
    }
}

fn failing(r: &RunReport) -> Vec<String> {
    let mut v: Vec<String> = r
        .verdicts
        .iter()
        .filter(|(_, x)| !x.is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    if let Some(e) = &r.error {
        v.push(format!("error: {e}"));
    }
    v
}

fn print_report(r: &RunReport) {
    println!(
        "scenario {} seed {}{}",
        r.scenario,
        r.seed,
        if r.swarm { " (swarm)" } else { "" }
    );
    if !r.faults.is_empty() {
        println!("faults:");
        for f in &r.faults {
            println!("  {f}");
        }
    }
    println!("verdicts:");
    for (inv, violations) in &r.verdicts {
        if violations.is_empty() {
            println!("  ok    {inv}");
        } else {
            println!("  FAIL  {inv}: {} violation(s)", violations.len());
            for v in violations.iter().take(10) {
                println!("        - {} [{}]", v.message, v.objects.join(", "));
            }
        }
    }
    if let Some(e) = &r.error {
        println!("  FAIL  run: {e}");
    }
    let s = &r.stats;
    let speed = if s.wall_ms > 0 {
        s.sim_ms as f64 / s.wall_ms as f64
    } else {
        0.0
    };
    println!(
        "stats: {} requests ({} unknown at the time), {} intents {:?}, {} network operations, {} events; {:.1} s simulated in {:.2} s ({speed:.0}x)",
        s.requests,
        s.unknown_outcomes,
        s.intents,
        s.intent_status,
        s.network_operations,
        s.events,
        s.sim_ms as f64 / 1000.0,
        s.wall_ms as f64 / 1000.0
    );
    println!("trace hash: {}", r.trace_hash);
    println!("reproduce: {}", r.repro);
}

/// Runs seeds in `jobs` worker processes (runs sharing a process must not overlap; see
/// `sim::world::align_task_ids`), collecting one JSON report per seed.
fn swarm(path: &PathBuf, seeds: u64, start: u64, jobs: usize, draw: bool, json: bool) -> Result<()> {
    use std::io::BufRead;
    let s = load(path)?;
    let exe = std::env::current_exe().context("cannot find the paysim executable")?;
    let began = std::time::Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let reports: Arc<Mutex<Vec<RunReport>>> = Arc::new(Mutex::new(vec![]));
    let mut children = vec![];
    let mut readers = vec![];
    for i in 0..jobs as u64 {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("__worker")
            .arg("--scenario")
            .arg(path)
            .arg("--first")
            .arg((start + i).to_string())
            .arg("--end")
            .arg((start + seeds).to_string())
            .arg("--stride")
            .arg(jobs.to_string());
        if draw {
            cmd.arg("--draw");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start a swarm worker")?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("worker has no stdout"))?;
        let (done, failed, reports) = (done.clone(), failed.clone(), reports.clone());
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(r) = serde_json::from_str::<RunReport>(&line) {
                    if !r.passed() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    sim::world::lock(&reports).push(r);
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(d, seeds as usize, failed.load(Ordering::SeqCst), began);
                }
            }
        }));
        children.push(child);
    }
    for r in readers {
        let _ = r.join();
    }
    let mut worker_error = None;
    for mut c in children {
        match c.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => worker_error = Some(format!("a swarm worker exited with {st}")),
            Err(e) => worker_error = Some(e.to_string()),
        }
    }
    eprintln!();
    let mut reports = std::mem::take(&mut *sim::world::lock(&reports));
    reports.sort_by_key(|r| r.seed);
    let failures: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    let wall = began.elapsed().as_secs_f64();
    let sim_s: f64 = reports.iter().map(|r| r.stats.sim_ms as f64 / 1000.0).sum();
    if json {
        let summary = serde_json::json!({
            "scenario": s.name,
            "seeds": seeds,
            "completed": reports.len(),
            "passed": reports.len() - failures.len(),
            "failed": failures.len(),
            "wall_seconds": wall,
            "simulated_seconds": sim_s,
            "seeds_per_minute": reports.len() as f64 / wall * 60.0,
            "failures": failures.iter().map(|r| serde_json::json!({"seed": r.seed, "failing": failing(r), "repro": r.repro, "faults": r.faults})).collect::<Vec<_>>(),
            "worker_error": worker_error,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "scenario {}: {} seeds, {} passed, {} failed",
            s.name,
            reports.len(),
            reports.len() - failures.len(),
            failures.len()
        );
        println!(
            "{:<10} {:>8} {:>9} {:>8} {:>10}  verdict",
            "seed", "requests", "unknowns", "intents", "sim-s"
        );
        for r in reports
            .iter()
            .filter(|r| !r.passed())
            .chain(reports.iter().filter(|r| r.passed()).take(5))
        {
            println!(
                "{:<10} {:>8} {:>9} {:>8} {:>10.1}  {}",
                r.seed,
                r.stats.requests,
                r.stats.unknown_outcomes,
                r.stats.intents,
                r.stats.sim_ms as f64 / 1000.0,
                if r.passed() {
                    "ok".to_owned()
                } else {
                    format!("FAIL {}", failing(r).join(", "))
                }
            );
        }
        if reports.len() > 5 + failures.len() {
            println!("… {} more passing seeds", reports.len() - 5 - failures.len());
        }
        println!(
            "{:.1} s wall, {:.0} simulated seconds ({:.0}x), {:.1} seeds/min with {jobs} job(s)",
            wall,
            sim_s,
            sim_s / wall.max(1e-9),
            reports.len() as f64 / wall * 60.0
        );
        for r in &failures {
            println!(
                "failing seed {}: {}\n  reproduce: {}",
                r.seed,
                failing(r).join(", "),
                r.repro
            );
        }
        if let Some(e) = &worker_error {
            println!("error: {e}");
        }
    }
    if !failures.is_empty() || worker_error.is_some() || reports.len() as u64 != seeds {
        std::process::exit(1);
    }
    Ok(())
}

/// The progress bar on a terminal; in a log (CI), a plain line every tenth of the seeds.
fn progress(done: usize, total: usize, failed: usize, began: std::time::Instant) {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        let step = (total / 10).max(1);
        if done % step == 0 || done == total {
            let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-9) * 60.0;
            eprintln!("{done}/{total} seeds, {failed} failing, {rate:.0} seeds/min");
        }
        return;
    }
    let width = 30;
    let filled = done * width / total.max(1);
    let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-9) * 60.0;
    eprint!(
        "\r[{}{}] {done}/{total} seeds, {failed} failing, {rate:.0} seeds/min",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}
