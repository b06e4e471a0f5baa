//! The `loadgen` command line. See the crate documentation and `docs/performance.md`.

use anyhow::{Context, Result};
use clap::Parser;
use loadgen::client::StripeClient;
use loadgen::run::{run, Mode, RunConfig, Workload};
use loadgen::schedule::{Mix, Phases};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Drives full payment flows against the public API and reports throughput and latency per step."
)]
struct Cli {
    /// Base URL of the public API, e.g. http://127.0.0.1:4242 or https://127.0.0.1:8443.
    #[arg(long)]
    base_url: String,
    /// Secret API key (sk_test_…).
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    api_key: String,
    /// CA certificate (PEM) that signed the server's certificate (for https://).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Open loop: start this many flows per second on a fixed schedule.
    #[arg(long, conflicts_with = "connections")]
    rate: Option<f64>,
    /// Closed loop: this many concurrent connections, each running flows back to back.
    /// With --rate: ignored (use --max-in-flight).
    #[arg(long)]
    connections: Option<usize>,
    /// Open loop: cap on concurrent flows (and pooled connections).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warmup before the window, seconds (flows run but are not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Share of flows confirmed with capture_method=manual and then captured.
    #[arg(long, default_value_t = 0.0)]
    capture_manual_share: f64,
    /// Share of flows refunded after the payment succeeded.
    #[arg(long, default_value_t = 0.0)]
    refund_share: f64,
    /// Share of flows that use a declining test card (declines then count as expected).
    #[arg(long, default_value_t = 0.0)]
    decline_share: f64,
    /// Card number of approved flows.
    #[arg(long, default_value = "4242424242424242")]
    card: String,
    /// Give every approved flow its own card number (Luhn-valid, derived from the run and the
    /// flow) instead of --card.
    #[arg(long)]
    unique_cards: bool,
    /// How often a request refused with 429 is sent again (after its Retry-After, at most
    /// 5 s) before the 429 counts as an error.
    #[arg(long, default_value_t = 0)]
    max_429_retries: u32,
    /// Card number of declined flows.
    #[arg(long, default_value = "4000000000000002")]
    decline_card: String,
    /// Amount per payment, in the currency's minor unit.
    #[arg(long, default_value_t = 2000)]
    amount: i64,
    /// Currency.
    #[arg(long, default_value = "usd")]
    currency: String,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also print confirm latency by the second its request was sent in (text report; the
    /// JSON report always has it).
    #[arg(long)]
    timeline: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mode = match (cli.rate, cli.connections) {
        (Some(rate), _) => Mode::Open {
            rate,
            max_in_flight: cli.max_in_flight,
        },
        (None, Some(connections)) => Mode::Closed { connections },
        (None, None) => anyhow::bail!("give --rate R (open loop) or --connections N (closed loop)"),
    };
    let pool = match mode {
        Mode::Open { max_in_flight, .. } => max_in_flight,
        Mode::Closed { connections } => connections,
    };
    let client = StripeClient::new(
        &cli.base_url,
        &cli.api_key,
        cli.ca_file.as_deref(),
        pool,
        secs("timeout", cli.timeout)?,
    )?
    .with_429_retries(cli.max_429_retries);
    let mix = Mix::new(cli.capture_manual_share, cli.refund_share, cli.decline_share)?;
    let duration = secs("duration", cli.duration)?;
    let cfg = RunConfig {
        client,
        mode,
        phases: Phases {
            warmup: secs("warmup", cli.warmup)?,
            duration,
        },
        workload: Workload {
            mix,
            shares: (cli.capture_manual_share, cli.refund_share, cli.decline_share),
            card: cli.card,
            unique_cards: cli.unique_cards,
            decline_card: cli.decline_card,
            amount: cli.amount,
            currency: cli.currency,
        },
        drain: secs("timeout", cli.timeout)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(run(cfg))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
        if cli.timeline {
            print!("\nconfirm by second sent:\n{}", report.timeline_text());
        }
    }
    Ok(())
}
