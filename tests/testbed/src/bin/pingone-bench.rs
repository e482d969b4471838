//! `pingone-bench`: the scale benchmark of issue 6 (`make bench`).
//!
//! Starts a local control plane and the PingOne stand-in, fills the cluster with unrelated
//! Secrets, then runs the `pingone-operator` binary (release build, a separate process,
//! `--leader-election=false`, admin kubeconfig, the stand-in's CA and a host override for
//! `auth.pingone.eu`) through the scenarios of the issue, each measured against a floor, a plain
//! client in this process doing the same unavoidable work at the same concurrency in the same
//! run. Prints one table (and writes it as Markdown with `--markdown`).
//!
//! The defaults are the full issue; sizes are flags, so that `pingone-bench --quick` or e.g.
//! `--scenarios cold-start --cold-start 200 --runs 1` finishes in a minute or two.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use pingone_testbed::bench::operator::locate_binary;
use pingone_testbed::bench::scenarios::{Bench, BenchConfig, Scenario, Verdict, machine};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    /// 1, with 4 and 5 on the same objects: a burst of connections → all Ready.
    ColdStart,
    /// 1b: apply → Ready of connections created one after another.
    Sequential,
    /// 2: peak RSS at each of --memory-levels connections.
    Memory,
    /// 3: short-lived tokens over a few lifetimes.
    SteadyState,
    /// 4: restart with fresh tokens (part of cold-start).
    Restart,
    /// 5: credentials Secret changes (part of cold-start).
    CredentialRotation,
    /// 6: a rate-limited stand-in and a burst.
    RateLimit,
    /// Issue 12, 5: 10,000 existing connections under --max-requests-per-second, then their
    /// steady state with 10-minute tokens.
    Scale,
    /// Issue 12, 6: the foreign Secrets updated continuously; both Secret watch modes.
    Churn,
    /// Every scenario.
    All,
}

/// Scale benchmark of pingone-operator against a floor, on a local control plane.
#[derive(Debug, Parser)]
#[command(name = "pingone-bench", version)]
struct Args {
    /// Scenarios to run (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenarios: Vec<Which>,

    /// Small sizes everywhere (a few minutes): 200 connections, 1 run, no 5000s.
    #[arg(long)]
    quick: bool,

    /// Runs of the timed scenarios (cold start, one by one, restart, credentials change).
    #[arg(long, default_value_t = 3)]
    runs: usize,

    /// Connections created in the cold-start burst.
    #[arg(long, default_value_t = 1000)]
    cold_start: usize,

    /// Connections created one after another.
    #[arg(long, default_value_t = 200)]
    sequential: usize,

    /// Connection counts at which the operator's memory is read (comma separated).
    /// 1000 right after 0 is a true burst of 1,000 (the goal); growth per connection is read
    /// from 1000 to the last level.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    memory_levels: Vec<usize>,

    /// Unrelated Secrets created in the cluster first.
    #[arg(long, default_value_t = 10_000)]
    unrelated: usize,

    /// Size of each unrelated Secret, bytes.
    #[arg(long, default_value_t = 4096)]
    unrelated_bytes: usize,

    /// Connections of the steady-state scenario.
    #[arg(long, default_value_t = 500)]
    steady: usize,

    /// Token lifetime of the steady-state scenario, seconds. At least six times the operator's
    /// minimum renewal interval (10 s), which would otherwise decide the schedule.
    #[arg(long, default_value_t = 60)]
    steady_lifetime: u64,

    /// Token lifetimes the steady state is observed for.
    #[arg(long, default_value_t = 3)]
    steady_lifetimes: u32,

    /// Credentials Secret changes per run.
    #[arg(long, default_value_t = 100)]
    rotations: usize,

    /// Seconds after the cold start in which nothing may be requested or written.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,

    /// Rate limit of the stand-in and --max-requests-per-second of the operator in scenario 6.
    #[arg(long, default_value_t = 50)]
    rate: u32,

    /// Connections created in a burst in scenario 6.
    #[arg(long, default_value_t = 5000)]
    rate_burst: usize,

    /// Runs of scenario 6.
    #[arg(long, default_value_t = 1)]
    rate_runs: usize,

    /// The operator's --concurrency, and the floor's.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,

    /// Creates in flight while creating a burst.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,

    /// --max-requests-per-second of the operator, and the floor's cap, in the cold-start and
    /// one-by-one scenarios. 0 (no cap) makes the API server the bottleneck, which is what the
    /// comparison with the floor is about; the operator's default (100) binds at 100/s.
    #[arg(long, default_value_t = 0)]
    cold_start_rate: u32,

    /// Connections of the scale scenario, created before the operator starts.
    #[arg(long, default_value_t = 10_000)]
    scale: usize,

    /// --max-requests-per-second of the operator (and the floor's cap) in the scale scenario.
    #[arg(long, default_value_t = 200)]
    scale_rate: u32,

    /// Runs of the scale scenario's start (the side that goes first alternates; the median is
    /// reported).
    #[arg(long, default_value_t = 3)]
    scale_runs: usize,

    /// Token lifetime in the scale scenario, seconds.
    #[arg(long, default_value_t = 600)]
    scale_lifetime: u64,

    /// Seconds of steady state observed after the scale scenario's connections are Ready
    /// (first renewals start at 17 % of the lifetime).
    #[arg(long, default_value_t = 240)]
    scale_window: u64,

    /// Ready connections while the foreign Secrets churn.
    #[arg(long, default_value_t = 1000)]
    churn_connections: usize,

    /// Updates of foreign Secrets per second in the churn scenario.
    #[arg(long, default_value_t = 100)]
    churn_rate: u32,

    /// Seconds the foreign Secrets churn, per Secret watch mode.
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,

    /// Skip the second cold start, with the operator's default flags (the request cap on).
    #[arg(long)]
    no_default_flags_cold_start: bool,

    /// The operator binary; default: pingone-operator next to this binary.
    #[arg(long)]
    operator_bin: Option<PathBuf>,

    /// The CRD to install.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/pingoneconnections.pingone.tokenops.dev.yaml"))]
    crd: PathBuf,

    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,

    /// Keep operator logs here (default: a temporary directory, removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn scenarios(which: &[Which]) -> BTreeSet<Scenario> {
    let mut set = BTreeSet::new();
    for w in which {
        match w {
            Which::ColdStart => {
                set.insert(Scenario::ColdStart);
            }
            Which::Sequential => {
                set.insert(Scenario::Sequential);
            }
            Which::Memory => {
                set.insert(Scenario::Memory);
            }
            Which::SteadyState => {
                set.insert(Scenario::SteadyState);
            }
            Which::Restart => {
                set.extend([Scenario::ColdStart, Scenario::Restart]);
            }
            Which::CredentialRotation => {
                set.extend([Scenario::ColdStart, Scenario::CredentialRotation]);
            }
            Which::RateLimit => {
                set.insert(Scenario::RateLimit);
            }
            Which::Scale => {
                set.insert(Scenario::Scale);
            }
            Which::Churn => {
                set.insert(Scenario::Churn);
            }
            Which::All => set.extend([
                Scenario::ColdStart,
                Scenario::Sequential,
                Scenario::Memory,
                Scenario::SteadyState,
                Scenario::Restart,
                Scenario::CredentialRotation,
                Scenario::RateLimit,
                Scenario::Scale,
                Scenario::Churn,
            ]),
        }
    }
    set
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-main")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("\nbench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench; `Ok(false)` when a goal was missed.
async fn run(mut args: Args) -> Result<bool> {
    if args.quick {
        args.runs = 1;
        args.cold_start = args.cold_start.min(200);
        args.sequential = args.sequential.min(30);
        args.memory_levels = vec![0, 200, 400];
        args.unrelated = args.unrelated.min(1000);
        args.steady = args.steady.min(100);
        args.rotations = args.rotations.min(20);
        args.rate_burst = args.rate_burst.min(200);
        args.idle_seconds = args.idle_seconds.min(5);
        args.scale = args.scale.min(1000);
        args.scale_runs = 1;
        args.scale_window = args.scale_window.min(60);
        args.scale_lifetime = args.scale_lifetime.min(120);
        args.churn_connections = args.churn_connections.min(100);
        args.churn_seconds = args.churn_seconds.min(15);
    }
    let temp = tempfile::Builder::new()
        .prefix("pingone-bench-")
        .tempdir()?;
    let work_dir = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let config = BenchConfig {
        scenarios: scenarios(&args.scenarios),
        runs: args.runs.max(1),
        cold_start: args.cold_start,
        sequential: args.sequential,
        memory_levels: args.memory_levels.clone(),
        unrelated: args.unrelated,
        unrelated_bytes: args.unrelated_bytes,
        steady: args.steady,
        steady_lifetime: Duration::from_secs(args.steady_lifetime),
        steady_lifetimes: args.steady_lifetimes.max(1),
        rotations: args.rotations,
        idle_window: Duration::from_secs(args.idle_seconds),
        rate: args.rate.max(1),
        rate_burst: args.rate_burst,
        rate_runs: args.rate_runs.max(1),
        concurrency: args.concurrency,
        create_concurrency: args.create_concurrency,
        cold_start_rate: args.cold_start_rate,
        cold_start_default_flags: !args.no_default_flags_cold_start,
        scale: args.scale,
        scale_runs: args.scale_runs.max(1),
        scale_rate: args.scale_rate.max(1),
        scale_lifetime: Duration::from_secs(args.scale_lifetime),
        scale_window: Duration::from_secs(args.scale_window),
        churn_connections: args.churn_connections,
        churn_rate: args.churn_rate,
        churn_window: Duration::from_secs(args.churn_seconds),
        operator_bin: locate_binary(args.operator_bin.as_deref())?,
        crd: args.crd.clone(),
        work_dir,
    };
    let started = Instant::now();
    let machine = machine();
    eprintln!("pingone-bench on {machine}");
    let mut bench = Bench::setup(config.clone()).await?;
    let s = &config.scenarios;
    if s.contains(&Scenario::Memory) {
        bench.memory().await.context("memory")?;
    }
    if s.contains(&Scenario::ColdStart) {
        bench.cold_start().await.context("cold start")?;
    }
    if s.contains(&Scenario::Sequential) {
        bench.sequential().await.context("one by one")?;
    }
    if s.contains(&Scenario::SteadyState) {
        bench.steady_state().await.context("steady state")?;
    }
    if s.contains(&Scenario::RateLimit) {
        bench.rate_limit().await.context("rate limit")?;
    }
    if s.contains(&Scenario::Churn) {
        bench.churn().await.context("Secret churn")?;
    }
    if s.contains(&Scenario::Scale) {
        bench.scale().await.context("scale")?;
    }
    let elapsed = started.elapsed();
    println!();
    println!(
        "pingone-bench: {machine}; operator --concurrency={} (floor the same), {} run(s), {:.1} min",
        config.concurrency,
        config.runs,
        elapsed.as_secs_f64() / 60.0
    );
    println!();
    print!("{}", bench.table.text());
    for n in &bench.table.notes {
        println!("* {n}");
    }
    if let Some(path) = &args.markdown {
        let md = format!(
            "Machine: {machine}. Total time {:.1} min.\n\n{}",
            elapsed.as_secs_f64() / 60.0,
            bench.table.markdown()
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    let missed = bench
        .table
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Missed)
        .count();
    if missed > 0 {
        println!("\n{missed} goal(s) missed");
    }
    drop(bench);
    Ok(missed == 0)
}
