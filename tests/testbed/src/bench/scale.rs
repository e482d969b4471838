//! Issue 12's scenarios at scale: 10,000 connections under a request cap (start to all Ready,
//! then the steady state at 10-minute tokens), and the cost of Secret churn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use super::floor::MetadataWatch;
use super::objects::{self, CREDENTIALS_LABEL};
use super::observe::Observer;
use super::operator::Operator;
use super::scenarios::{Bench, Row, Verdict, compared, fmt_runs, say, secs, verdict};
use super::stats::median;

/// One run of the scale start: both sides' time from start to all Ready, and the floor's CPU
/// seconds per connection.
struct ScaleRun {
    floor_first: bool,
    floor: Start,
    operator: Start,
    floor_cpu_per: f64,
}

/// One side's start: seconds to all Ready, and the control plane's CPU seconds meanwhile.
#[derive(Clone, Copy)]
struct Start {
    time: f64,
    control_plane_cpu: f64,
}

/// What the operator's side of a scale run saw after its start.
struct OperatorStart {
    start: Start,
    reconciles_per: f64,
    /// The steady-state window, measured in one run only.
    steady: Option<Steady>,
}

struct Steady {
    rotations: f64,
    requests: f64,
    token_requests: f64,
    secret_writes: f64,
    status_writes: f64,
    reconciles: f64,
    cpu: f64,
    hwm_mib: f64,
}

impl Bench {
    /// 10,000 existing connections, the operator started with `--max-requests-per-second` at
    /// the scale rate: start → all Ready against the floor under the same cap (and the cap's own
    /// n / rate), `scale_runs` times, the side that goes first alternating (medians reported);
    /// then, in the first run, with tokens of `scale_lifetime`, a window of rotations: token
    /// requests, Secret writes, status writes and reconciles per rotation, CPU seconds per
    /// rotation next to the floor's per connection (the same three calls).
    pub async fn scale(&mut self) -> Result<()> {
        let n = self.cfg.scale;
        let rate = self.cfg.scale_rate;
        let life = self.cfg.scale_lifetime;
        let cap_time = n as f64 / f64::from(rate);
        let total = self.cfg.scale_runs.max(1);

        let mut runs: Vec<ScaleRun> = Vec::new();
        let mut steady = None;
        let mut reconciles_per = Vec::new();
        for run in 1..=total {
            let floor_first = run % 2 == 1;
            say(format!(
                "==> scale run {run}/{total}: {n} connections at {rate}/s, {} first",
                if floor_first { "floor" } else { "operator" }
            ));
            let window = (run == 1).then_some(self.cfg.scale_window);
            let (floor, op) = if floor_first {
                let floor = self.scale_floor(n, rate, life).await?;
                (floor, self.scale_operator(n, rate, life, window).await?)
            } else {
                let op = self.scale_operator(n, rate, life, window).await?;
                (self.scale_floor(n, rate, life).await?, op)
            };
            say(format!(
                "    run {run}: operator {:.1}s, floor {:.1}s ({:.2})",
                op.start.time,
                floor.0.time,
                op.start.time / floor.0.time
            ));
            reconciles_per.push(op.reconciles_per);
            if op.steady.is_some() {
                steady = op.steady;
            }
            runs.push(ScaleRun {
                floor_first,
                floor: floor.0,
                operator: op.start,
                floor_cpu_per: floor.1,
            });
        }
        let steady = steady.context("the steady-state window was not measured")?;

        let col = |f: &dyn Fn(&ScaleRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let op = col(&|r| r.operator.time);
        let fl = col(&|r| r.floor.time);
        let ratios = col(&|r| r.operator.time / r.floor.time);
        let op_cp = col(&|r| r.operator.control_plane_cpu);
        let fl_cp = col(&|r| r.floor.control_plane_cpu);
        let ratio = median(&ratios);
        let order = runs
            .iter()
            .map(|r| if r.floor_first { "F" } else { "O" })
            .collect::<String>();
        let floor_cpu_per = median(&col(&|r| r.floor_cpu_per));

        let t = &mut self.table;
        let scenario = format!("5 scale, {n} at {rate}/s");
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!("{n} existing connections: start → all Ready"),
            operator: format!("{:.1} s", median(&op)),
            floor: format!("{:.1} s", median(&fl)),
            ratio: format!("{ratio:.2}"),
            goal: "≤ 1.1 × floor (the cap's time + the floor's overhead)".into(),
            verdict: verdict(ratio <= 1.1),
            runs: format!(
                "ratios {} (first: {order}); operator {}; floor {}; the cap itself: {cap_time:.1} s (operator {:.2}×, floor {:.2}×); start reconciles per connection {}; peak RSS {:.1} MiB",
                fmt_runs(&ratios, "", 2),
                fmt_runs(&op, " s", 1),
                fmt_runs(&fl, " s", 1),
                median(&op) / cap_time,
                median(&fl) / cap_time,
                fmt_runs(&reconciles_per, "", 2),
                steady.hwm_mib
            ),
        });
        t.row(compared(
            &scenario,
            "control plane CPU seconds (API server, etcd, controller manager) from start to all Ready",
            (&op_cp, &fl_cp),
            " s",
            format!(
                "operator {}; floor {}",
                fmt_runs(&op_cp, " s", 1),
                fmt_runs(&fl_cp, " s", 1)
            ),
        ));
        let s = &steady;
        let rotations = s.rotations;
        let exact = rotations > 0.0
            && s.token_requests == rotations
            && s.requests == rotations
            && s.secret_writes == rotations
            && s.status_writes == rotations;
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!(
                "steady state, {}-minute tokens, {} s window: token requests / Secret writes / status writes per rotation",
                life.as_secs() / 60,
                self.cfg.scale_window.as_secs()
            ),
            operator: format!(
                "{:.3} / {:.3} / {:.3}",
                s.requests / rotations.max(1.0),
                s.secret_writes / rotations.max(1.0),
                s.status_writes / rotations.max(1.0)
            ),
            floor: "1 / 1 / 1".into(),
            ratio: "-".into(),
            goal: "exactly 1 / 1 / 1".into(),
            verdict: verdict(exact),
            runs: format!(
                "{rotations} rotations; {} requests at the stand-in; {} reconciles",
                s.requests, s.reconciles
            ),
        });
        let per = s.cpu / rotations.max(1.0);
        t.row(Row {
            scenario,
            measure: "steady state: CPU seconds per rotation".into(),
            operator: format!("{:.2} ms", per * 1000.0),
            floor: format!("{:.2} ms", floor_cpu_per * 1000.0),
            ratio: format!("{:.2}", per / floor_cpu_per),
            goal: "(reported)".into(),
            verdict: Verdict::Info,
            runs: format!(
                "operator {:.1} s over {} s (all of its work, idle included); floor: its CPU per connection at the start (median of the runs)",
                s.cpu,
                self.cfg.scale_window.as_secs()
            ),
        });
        Ok(())
    }

    /// The floor's side of a scale run: `n` connections created, then the floor made and told
    /// about them; the time from its start to the last Ready, and its CPU seconds per
    /// connection.
    async fn scale_floor(&mut self, n: usize, rate: u32, life: Duration) -> Result<(Start, f64)> {
        let ns = self.namespace("scale-floor").await?;
        let specs = objects::specs(&ns, "z", 0, n);
        self.register(&specs, Some(life));
        let created =
            objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        // The creates' aftermath (watch caches, the garbage collector's graph) stays out of
        // the timed window.
        self.settle().await?;
        let observer = Observer::connections(&self.client, &ns).await?;
        let cp0 = self.control_plane_cpu()?;
        let t0 = Instant::now();
        let (floor, last) = self
            .floor_until_ready(rate, &created, &observer, Duration::from_secs(1800))
            .await
            .context("scale floor")?;
        let time = secs(last - t0);
        let control_plane_cpu = self.control_plane_cpu()? - cp0;
        let cpu_per = floor.cpu_seconds()? / n as f64;
        drop(floor);
        drop(observer);
        say(format!("    floor {time:.1}s"));
        self.delete_namespace(&ns).await?;
        Ok((
            Start {
                time,
                control_plane_cpu,
            },
            cpu_per,
        ))
    }

    /// The operator's side of a scale run: `n` connections created, then the operator started;
    /// the time from its start to the last Ready, its reconciles per connection, and, given a
    /// window, the steady state over that window.
    async fn scale_operator(
        &mut self,
        n: usize,
        rate: u32,
        life: Duration,
        window: Option<Duration>,
    ) -> Result<OperatorStart> {
        let ns = self.namespace("scale-op").await?;
        let specs = objects::specs(&ns, "z", 0, n);
        self.register(&specs, Some(life));
        objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        // The creates' aftermath (watch caches, the garbage collector's graph) stays out of
        // the timed window.
        self.settle().await?;
        let observer = Observer::connections(&self.client, &ns).await?;
        let config = self.operator_config(Some(rate));
        let cp0 = self.control_plane_cpu()?;
        let mut op = Operator::start(&config)?;
        let t0 = op.started;
        let last = observer
            .wait_ready(n, Duration::from_secs(1800))
            .await
            .context("scale operator: all Ready")?;
        let time = secs(last - t0);
        let control_plane_cpu = self.control_plane_cpu()? - cp0;
        drop(observer);
        op.wait_serving(Duration::from_secs(30)).await?;
        let c0 = op.settled_counters(None).await?;
        say(format!(
            "    operator {time:.1}s; {} reconciles for {n} connections",
            c0.reconciles
        ));
        let mut steady = None;
        if let Some(window) = window {
            let cpu0 = op.cpu_seconds()?;
            let since = SystemTime::now();
            say(format!(
                "    steady state: {}s window, {}s tokens",
                window.as_secs(),
                life.as_secs()
            ));
            tokio::time::sleep(window).await;
            let c1 = op.settled_after(&c0).await?;
            let until = SystemTime::now();
            let cpu = op.cpu_seconds()? - cpu0;
            let d = c1.since(&c0);
            let requests = self
                .token_requests_of(&ns, since)
                .into_iter()
                .filter(|r| r.time <= until)
                .count() as f64;
            steady = Some(Steady {
                rotations: d.token_successes,
                requests,
                token_requests: d.token_requests,
                secret_writes: d.secret_writes,
                status_writes: d.status_writes,
                reconciles: d.reconciles,
                cpu,
                hwm_mib: op.memory()?.hwm_kib as f64 / 1024.0,
            });
        }
        op.terminate(Duration::from_secs(60)).await?;
        self.delete_namespace(&ns).await?;
        Ok(OperatorStart {
            start: Start {
                time,
                control_plane_cpu,
            },
            reconciles_per: c0.reconciles / n as f64,
            steady,
        })
    }

    /// The foreign Secrets updated continuously (`churn_rate` per second through the API server
    /// for `churn_window`) while the operator runs with `churn_connections` Ready connections,
    /// next to a bare metadata watch of every Secret running over the same window: the
    /// operator's reconciles in the window (0) and its CPU time against the watch's. Once with
    /// the default cluster-wide Secret watch, once with `--credentials-secret-selector`.
    pub async fn churn(&mut self) -> Result<()> {
        ensure!(
            self.cfg.unrelated > 0,
            "the churn scenario updates the unrelated Secrets; --unrelated is 0"
        );
        let n = self.cfg.churn_connections;
        let ns = self.namespace("churn").await?;
        let specs = objects::specs(&ns, "h", 0, n);
        self.register(&specs, None);
        objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        let selector = format!("{CREDENTIALS_LABEL}=true");
        let modes: [(&str, Vec<String>); 2] = [
            ("cluster-wide Secret watch (default)", Vec::new()),
            (
                "--credentials-secret-selector",
                vec![format!("--credentials-secret-selector={selector}")],
            ),
        ];
        let mut next = 0usize;
        for (label, extra) in modes {
            say(format!("==> churn: {label}"));
            let mut config = self.operator_config(None);
            config.extra_args = extra;
            let mut op = Operator::start(&config)?;
            op.wait_serving(Duration::from_secs(30)).await?;
            let observer = Observer::connections(&self.client, &ns).await?;
            observer
                .wait_ready(n, Duration::from_secs(600))
                .await
                .context("churn: all Ready")?;
            drop(observer);
            let watch = MetadataWatch::start(self.cp.kubeconfig()).await?;
            // Let both finish their start (lists, first reconciles, the echoes of their writes).
            tokio::time::sleep(Duration::from_secs(5)).await;
            let c0 = op.settled_counters(None).await?;
            let op0 = op.cpu_seconds()?;
            let w0 = watch.cpu_seconds()?;
            let e0 = watch.events();
            let t = Instant::now();
            let updates = self.churn_secrets(&mut next).await?;
            let elapsed = secs(t.elapsed());
            // The last events reach both watches.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let op_cpu = op.cpu_seconds()? - op0;
            let w_cpu = watch.cpu_seconds()? - w0;
            let events = watch.events() - e0;
            let c1 = op.counters().await?;
            let d = c1.since(&c0);
            drop(watch);
            op.terminate(Duration::from_secs(30)).await?;
            let ratio = op_cpu / w_cpu;
            say(format!(
                "    {updates} updates in {elapsed:.1}s; operator {op_cpu:.2} s CPU, watch {w_cpu:.2} s ({ratio:.2}); reconciles {}",
                d.reconciles
            ));
            let scenario = format!("6 Secret churn, {label}");
            self.table.row(Row {
                scenario: scenario.clone(),
                measure: format!(
                    "{updates} updates of foreign Secrets in {elapsed:.0} s ({:.0}/s), {n} connections: reconciles",
                    updates as f64 / elapsed
                ),
                operator: format!("{}", d.reconciles),
                floor: "0".into(),
                ratio: "-".into(),
                goal: "0".into(),
                verdict: verdict(d.reconciles == 0.0 && d.token_requests == 0.0),
                runs: format!(
                    "token requests {}; writes {}",
                    d.token_requests,
                    d.secret_writes + d.status_writes
                ),
            });
            self.table.row(Row {
                scenario,
                measure: "CPU seconds over the window (operator process / bare metadata watch of all Secrets)".into(),
                operator: format!("{op_cpu:.2} s"),
                floor: format!("{w_cpu:.2} s"),
                ratio: format!("{ratio:.2}"),
                goal: "≤ 1.5 × floor".into(),
                verdict: verdict(ratio <= 1.5),
                runs: format!("the bare watch saw {events} events"),
            });
        }
        self.delete_namespace(&ns).await?;
        Ok(())
    }

    /// Updates the unrelated Secrets round-robin (from `*next`) at `churn_rate` per second for
    /// `churn_window`, through the API server (a merge patch of an annotation and the data, as
    /// a renewal by another controller would). Returns how many updates were made.
    async fn churn_secrets(&self, next: &mut usize) -> Result<u64> {
        let rate = self.cfg.churn_rate.max(1);
        let total = (self.cfg.churn_window.as_secs_f64() * f64::from(rate)) as usize;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), "bench-unrelated");
        let interval = Duration::from_secs(1) / rate;
        let start = tokio::time::Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let unrelated = self.cfg.unrelated;
        let first = *next;
        *next += total;
        stream::iter(0..total)
            .map(|k| {
                let api = api.clone();
                let done = done.clone();
                async move {
                    tokio::time::sleep_until(start + interval * k as u32).await;
                    let i = (first + k) % unrelated;
                    let patch = serde_json::json!({
                        "metadata": {"annotations": {"bench.pingone.tokenops.dev/churn": (first + k).to_string()}},
                        "stringData": {"rotated": objects::random_secret()},
                    });
                    api.patch(
                        &format!("unrelated-{i:05}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        let done = done.load(Ordering::Relaxed);
        ensure!(
            done == total as u64,
            "churn: {done} of {total} updates made"
        );
        Ok(done)
    }
}
