//! `pingone-soak`: the seeded fault soak (`make soak`). Runs the operator binary, two replicas
//! with leader election, against a control plane of its own and the PingOne stand-in, injects
//! faults of every class on a schedule drawn from the seed, and checks the operator's promises
//! every second (see `pingone_testbed::soak`). Exits 1 on a violation; the seed printed first
//! re-runs the same schedule.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use pingone_testbed::bench::operator::locate_binary;
use pingone_testbed::soak::{self, SoakConfig};

/// The seeded fault soak of pingone-operator.
#[derive(Debug, Parser)]
#[command(name = "pingone-soak", version)]
struct Args {
    /// Seeds to run one after another (comma separated); `random` draws one.
    #[arg(long, value_delimiter = ',', default_value = "random")]
    seed: Vec<String>,

    /// Length of each run's fault phase, e.g. 30m or 90s.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,

    /// Connections.
    #[arg(long, default_value_t = 200)]
    connections: usize,

    /// Mean seconds between two faults.
    #[arg(long, default_value_t = 4.0)]
    mean_gap: f64,

    /// Time allowed, after the last fault's effect ends, for every connection with good inputs
    /// to be Ready with an unexpired token.
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    converge: Duration,

    /// The operator binary; default: pingone-operator next to this binary.
    #[arg(long)]
    operator_bin: Option<PathBuf>,

    /// The CRD to install.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/pingoneconnections.pingone.tokenops.dev.yaml"))]
    crd: PathBuf,

    /// Where the operators' logs go (one directory per seed).
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,

    /// Append a Markdown row per run to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s or 30m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration like 90s or 30m")),
    }
}

fn main() -> ExitCode {
    pingone_testbed::controlplane::install_crypto_provider();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pingone-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let operator_bin = locate_binary(args.operator_bin.as_deref())?;
    let mut clean = true;
    for seed in &args.seed {
        let seed: u64 = match seed.as_str() {
            "random" => rand::random::<u32>() as u64,
            s => s.parse()?,
        };
        let report = soak::run(SoakConfig {
            seed,
            duration: args.duration,
            connections: args.connections,
            mean_gap: args.mean_gap,
            converge: args.converge,
            operator_bin: operator_bin.clone(),
            crds: args.crd.clone(),
            out: args.out.join(format!("seed-{seed}")),
        })
        .await?;
        println!("soak: injected {:?}", report.injected);
        println!(
            "soak: seed {seed}: {} actions, {} checks, {} token requests, {} rotations, converged {}, {} violations",
            report.actions,
            report.checks,
            report.token_requests,
            report.rotations,
            report
                .converged_after
                .map(|d| format!("after {} s", d.as_secs()))
                .unwrap_or_else(|| "never".into()),
            report.violations.len()
        );
        for v in &report.violations {
            println!("soak:   {} {}: {}", v.invariant, v.subject, v.detail);
        }
        if let Some(path) = &args.markdown {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{}", report.markdown_row(args.duration))?;
        }
        clean &= report.violations.is_empty();
    }
    Ok(clean)
}
