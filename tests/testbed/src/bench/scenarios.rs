//! The scenarios of issue 6 and the result table.
//!
//! Every scenario works in namespaces of its own and deletes them when done, so that one
//! scenario's objects do not load the next. The operator process is started fresh for each
//! scenario (and each run), watching every namespace, with `--leader-election=false`; the
//! cluster holds the unrelated Secrets throughout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;

use super::ENV_ID;
use super::floor::{Floor, floor_digest};
use super::objects::{self, ApiCounters, Created, Spec};
use super::observe::Observer;
use super::operator::{Operator, OperatorConfig, OperatorCounters, proc_cpu_seconds};
use super::stats::{self, median, percentile};
use crate::controlplane::ControlPlane;
use crate::standin::{ClientRegistration, RecordedRequest, StandIn, StandInConfig};

/// Which scenarios to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// 1: a burst of connections; with 4 and 5 on the same objects.
    ColdStart,
    /// 1b: connections created one after another.
    Sequential,
    /// 2: resident memory at growing connection counts.
    Memory,
    /// 3: rotations of short-lived tokens.
    SteadyState,
    /// 4: operator restarted with fresh tokens (runs inside the cold-start scenario).
    Restart,
    /// 5: credentials Secret changes (runs inside the cold-start scenario).
    CredentialRotation,
    /// 6: a rate-limited stand-in and a burst.
    RateLimit,
    /// Issue 12, 5: 10,000 connections under a request cap, then their steady state.
    Scale,
    /// Issue 12, 6: the foreign Secrets churn.
    Churn,
}

/// Sizes and switches of a bench run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub scenarios: BTreeSet<Scenario>,
    /// Runs of the timed scenarios (1, 1b, 4, 5); medians are reported.
    pub runs: usize,
    /// Connections of the cold-start burst.
    pub cold_start: usize,
    /// Connections created one after another.
    pub sequential: usize,
    /// Connection counts at which memory is read.
    pub memory_levels: Vec<usize>,
    /// Unrelated Secrets in the cluster, and their size.
    pub unrelated: usize,
    pub unrelated_bytes: usize,
    /// Connections and token lifetime of the steady state; lifetimes observed.
    pub steady: usize,
    pub steady_lifetime: Duration,
    pub steady_lifetimes: u32,
    /// Credentials changes per run.
    pub rotations: usize,
    /// Quiet window after the cold start in which nothing may be written or requested.
    pub idle_window: Duration,
    /// Rate of the rate-limit scenario (stand-in limit and operator cap) and its burst.
    pub rate: u32,
    pub rate_burst: usize,
    pub rate_runs: usize,
    /// The operator's `--concurrency`, also the floor's.
    pub concurrency: u16,
    /// Creates in flight during a burst.
    pub create_concurrency: usize,
    /// `--max-requests-per-second` of the operator and the floor's cap in the cold-start and
    /// one-by-one scenarios (0: none, so that the API server, not the cap, is the bottleneck).
    pub cold_start_rate: u32,
    /// Connections, request cap, token lifetime and rotation window of the scale scenario, and
    /// its runs (the side that goes first alternates; the window is observed in the first).
    pub scale: usize,
    pub scale_runs: usize,
    pub scale_rate: u32,
    pub scale_lifetime: Duration,
    pub scale_window: Duration,
    /// Connections, updates per second and window of the churn scenario.
    pub churn_connections: usize,
    pub churn_rate: u32,
    pub churn_window: Duration,
    /// Also run the cold start with the operator's default flags.
    pub cold_start_default_flags: bool,
    pub operator_bin: PathBuf,
    pub crd: PathBuf,
    /// Where operator logs go.
    pub work_dir: PathBuf,
}

/// How a row compares with its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    Info,
}

/// One line of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub measure: String,
    pub operator: String,
    pub floor: String,
    pub ratio: String,
    pub goal: String,
    pub verdict: Verdict,
    pub runs: String,
}

/// The result table.
#[derive(Default, Debug)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Free-form findings (API calls per connection, connection reuse, ...).
    pub notes: Vec<String>,
}

impl Table {
    pub(super) fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(super) fn note(&mut self, text: String) {
        eprintln!("    note: {text}");
        self.notes.push(text);
    }

    fn cells(r: &Row) -> [String; 8] {
        [
            r.scenario.clone(),
            r.measure.clone(),
            r.operator.clone(),
            r.floor.clone(),
            r.ratio.clone(),
            r.goal.clone(),
            match r.verdict {
                Verdict::Met => "met".into(),
                Verdict::Missed => "MISSED".into(),
                Verdict::Info => "-".into(),
            },
            r.runs.clone(),
        ]
    }

    const HEADER: [&'static str; 8] = [
        "scenario", "measure", "operator", "floor", "ratio", "goal", "result", "runs",
    ];

    /// A plain-text table with aligned columns.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 8]> = self.rows.iter().map(Self::cells).collect();
        let mut widths = Self::HEADER.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let header: Vec<String> = Self::HEADER.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(out, "{}", line(&header));
        let _ = writeln!(
            out,
            "{}",
            widths.map(|w| "-".repeat(w)).join("  ").trim_end()
        );
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }

    /// A Markdown table, then the notes as a list.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", Self::HEADER.join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(Self::HEADER.len()));
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", Self::cells(r).join(" | "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(super) fn fmt_runs(v: &[f64], unit: &str, digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}{unit}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A reported row (no goal) of two sides' medians and their ratio.
pub(super) fn compared(
    scenario: &str,
    measure: impl Into<String>,
    (operator, floor): (&[f64], &[f64]),
    unit: &str,
    runs: String,
) -> Row {
    let (op, fl) = (median(operator), median(floor));
    Row {
        scenario: scenario.into(),
        measure: measure.into(),
        operator: format!("{op:.1}{unit}"),
        floor: format!("{fl:.1}{unit}"),
        ratio: format!("{:.2}", op / fl),
        goal: "".into(),
        verdict: Verdict::Info,
        runs,
    }
}

pub(super) fn verdict(ok: bool) -> Verdict {
    if ok { Verdict::Met } else { Verdict::Missed }
}

/// The running bench: control plane, stand-in, floor, table.
pub struct Bench {
    pub cfg: BenchConfig,
    pub cp: ControlPlane,
    pub client: Client,
    pub standin: StandIn,
    pub table: Table,
    namespaces: usize,
    operators: usize,
    started: Instant,
}

/// Progress on standard error.
pub(super) fn say(text: impl AsRef<str>) {
    eprintln!("{}", text.as_ref());
}

impl Bench {
    /// Starts the control plane and the stand-in, installs the CRD and creates the unrelated
    /// Secrets.
    pub async fn setup(cfg: BenchConfig) -> Result<Bench> {
        let started = Instant::now();
        crate::controlplane::install_crypto_provider();
        say("==> starting the control plane");
        let cp = tokio::task::spawn_blocking(ControlPlane::start_blocking).await??;
        let crd = std::fs::read_to_string(&cfg.crd)
            .with_context(|| format!("reading {}", cfg.crd.display()))?;
        cp.install_crds(&crd).await?;
        let client = cp.client().await?;
        let standin = StandIn::start(StandInConfig::default()).await?;
        standin.add_environment(ENV_ID);
        let bench = Bench {
            cfg,
            cp,
            client,
            standin,
            table: Table::default(),
            namespaces: 0,
            operators: 0,
            started,
        };
        if bench.cfg.unrelated > 0 {
            let t = Instant::now();
            say(format!(
                "==> creating {} unrelated Secrets of {} bytes",
                bench.cfg.unrelated, bench.cfg.unrelated_bytes
            ));
            objects::create_namespace(&bench.client, "bench-unrelated").await?;
            objects::unrelated_secrets(
                &bench.client,
                "bench-unrelated",
                bench.cfg.unrelated,
                bench.cfg.unrelated_bytes,
                bench.cfg.create_concurrency,
            )
            .await?;
            say(format!("    done in {:.1}s", secs(t.elapsed())));
        }
        Ok(bench)
    }

    /// Seconds since the bench started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A new floor (runtime, Kubernetes client, HTTP client): its connection pools start as cold
    /// as a freshly started operator's.
    pub(super) async fn new_floor(&self, max_requests_per_second: u32) -> Result<Floor> {
        Floor::new(
            self.cp.kubeconfig(),
            &self.standin,
            usize::from(self.cfg.concurrency),
            max_requests_per_second,
        )
        .await
    }

    /// Starts a floor under `max_requests_per_second`, tells it about every connection of
    /// `created`, and returns it with the instant `observer` saw the last of them Ready.
    pub(super) async fn floor_until_ready(
        &self,
        max_requests_per_second: u32,
        created: &[Created],
        observer: &Observer,
        timeout: Duration,
    ) -> Result<(Floor, Instant)> {
        let n = created.len();
        let floor = self.new_floor(max_requests_per_second).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let served = floor.serve(rx);
        for c in created {
            tx.send(c.clone())?;
        }
        drop(tx);
        let last = observer
            .wait_ready(n, timeout)
            .await
            .context("floor: all Ready")?;
        let served = served.await??;
        ensure!(served == n, "the floor served {served} of {n}");
        Ok((floor, last))
    }

    pub(super) async fn namespace(&mut self, prefix: &str) -> Result<String> {
        self.namespaces += 1;
        let ns = format!("bench-{prefix}-{}", self.namespaces);
        objects::create_namespace(&self.client, &ns).await?;
        Ok(ns)
    }

    pub(super) async fn delete_namespace(&self, ns: &str) -> Result<()> {
        let t = Instant::now();
        objects::delete_namespace(&self.client, ns, Duration::from_secs(900)).await?;
        let deleted = secs(t.elapsed());
        let (settled, rate) = self.settle().await?;
        say(format!(
            "    namespace {ns} deleted in {deleted:.1}s; control plane settled {settled:.1}s later ({:.0} % of a core)",
            rate * 100.0
        ));
        Ok(())
    }

    /// Waits until the control plane (API server, etcd, controller manager) has settled: its
    /// CPU use over the last `SETTLE_WINDOW` below `SETTLE_CPU` of a core, so that the work left
    /// behind by one side (deletions, the garbage collector) does not run in the next side's
    /// timed window. Returns the seconds waited and the last rate.
    pub(super) async fn settle(&self) -> Result<(f64, f64)> {
        const SETTLE_WINDOW: Duration = Duration::from_secs(3);
        const SETTLE_CPU: f64 = 0.15;
        const SETTLE_LIMIT: Duration = Duration::from_secs(600);
        let t = Instant::now();
        let mut samples = std::collections::VecDeque::new();
        loop {
            samples.push_back((Instant::now(), self.control_plane_cpu()?));
            while samples.len() > 1
                && samples[0].0.elapsed() > SETTLE_WINDOW + Duration::from_millis(500)
            {
                samples.pop_front();
            }
            let (first, last) = (samples[0], samples[samples.len() - 1]);
            let span = secs(last.0 - first.0);
            if span >= SETTLE_WINDOW.as_secs_f64() {
                let rate = (last.1 - first.1) / span;
                if rate < SETTLE_CPU {
                    return Ok((secs(t.elapsed()), rate));
                }
                ensure!(
                    t.elapsed() < SETTLE_LIMIT,
                    "the control plane did not settle within {SETTLE_LIMIT:?} (still {:.0} % of a core)",
                    rate * 100.0
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// CPU seconds used so far by the control plane's API server, etcd and controller manager.
    pub(super) fn control_plane_cpu(&self) -> Result<f64> {
        let mut total = 0.0;
        for component in ["kube-apiserver", "etcd", "kube-controller-manager"] {
            let pid = self
                .cp
                .pid(component)
                .with_context(|| format!("{component} is not running"))?;
            total += proc_cpu_seconds(&format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading the CPU time of {component}"))?;
        }
        Ok(total)
    }

    pub(super) fn register(&self, specs: &[Spec], lifetime: Option<Duration>) {
        for s in specs {
            let mut c = ClientRegistration::new(ENV_ID, &s.client_id, &s.client_secret);
            if let Some(l) = lifetime {
                c = c.with_token_lifetime(l);
            }
            self.standin.add_client(c);
        }
    }

    pub(super) fn operator_config(&mut self, max_rps: Option<u32>) -> OperatorConfig {
        self.operators += 1;
        OperatorConfig {
            bin: self.cfg.operator_bin.clone(),
            kubeconfig: self.cp.kubeconfig().to_path_buf(),
            extra_ca: self.standin.ca_path().to_path_buf(),
            standin: self.standin.addr(),
            concurrency: self.cfg.concurrency,
            max_requests_per_second: max_rps,
            extra_args: Vec::new(),
            log: self
                .cfg
                .work_dir
                .join(format!("operator-{}.log", self.operators)),
        }
    }

    /// Starts an operator and waits until it serves and has listed what is there.
    async fn start_operator(&mut self, max_rps: Option<u32>) -> Result<Operator> {
        let config = self.operator_config(max_rps);
        let mut op = Operator::start(&config)?;
        op.wait_serving(Duration::from_secs(30)).await?;
        // The initial lists (connections, Secret metadata) complete within this.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(op)
    }

    pub(super) fn token_requests_of(&self, ns: &str, since: SystemTime) -> Vec<RecordedRequest> {
        let prefix = format!("{ns}-");
        self.standin
            .requests()
            .into_iter()
            .filter(|r| r.time >= since)
            .filter(|r| {
                r.client_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(&prefix))
            })
            .collect()
    }

    /// Changes `c`'s client secret (first in the stand-in, then in its Secret). Returns the new
    /// secret.
    async fn rotate_credentials(&self, c: &Created) -> Result<String> {
        let new = objects::random_secret();
        self.standin
            .add_client(ClientRegistration::new(ENV_ID, &c.client_id, &new));
        let patch = serde_json::json!({"stringData": {"clientSecret": new}});
        Api::<Secret>::namespaced(self.client.clone(), &c.namespace)
            .patch(
                &c.credentials_secret(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(new)
    }

    // ---------------------------------------------------------------- 1, 4, 5

    /// Scenario 1 (cold start), with 5 (credentials changes) and 4 (restart) on the same
    /// objects. Every object exists before the timed work starts; the operator process is then
    /// started (the floor made), and the time runs from that moment to the last connection
    /// Ready. The side that goes first alternates between runs. First with the request cap off
    /// on both sides (the goal), then, without 4 and 5, with the operator's default flags
    /// against a floor under the default cap (what a user runs).
    pub async fn cold_start(&mut self) -> Result<()> {
        let n = self.cfg.cold_start;
        let mut variants = vec![ColdVariant::CapOff];
        if self.cfg.cold_start_default_flags {
            variants.push(ColdVariant::DefaultFlags);
        }
        for variant in variants {
            let extras = variant == ColdVariant::CapOff;
            let with_rotation =
                extras && self.cfg.scenarios.contains(&Scenario::CredentialRotation);
            let with_restart = extras && self.cfg.scenarios.contains(&Scenario::Restart);
            let mut runs: Vec<ColdRun> = Vec::new();
            for run in 1..=self.cfg.runs {
                let floor_first = run % 2 == 1;
                say(format!(
                    "==> cold start ({}) run {run}/{}: {n} connections, {} first",
                    variant.label(),
                    self.cfg.runs,
                    if floor_first { "floor" } else { "operator" }
                ));
                let (floor, op) = if floor_first {
                    let floor = self
                        .cold_floor(n, variant, with_rotation, with_restart)
                        .await?;
                    let op = self
                        .cold_operator(n, variant, with_rotation, with_restart)
                        .await?;
                    (floor, op)
                } else {
                    let op = self
                        .cold_operator(n, variant, with_rotation, with_restart)
                        .await?;
                    let floor = self
                        .cold_floor(n, variant, with_rotation, with_restart)
                        .await?;
                    (floor, op)
                };
                say(format!(
                    "    floor {:.2}s, operator {:.2}s (ratio {:.2})",
                    floor.all_ready,
                    op.all_ready,
                    op.all_ready / floor.all_ready
                ));
                runs.push(ColdRun {
                    floor,
                    op,
                    floor_first,
                });
            }
            self.cold_rows(n, variant, &runs);
        }
        Ok(())
    }

    /// Creates the credentials Secrets and connections of a cold start, and lets the API server
    /// settle from the burst: no timed work overlaps the creates.
    async fn cold_objects(&mut self, prefix: &str, n: usize) -> Result<(String, Vec<Created>)> {
        let ns = self.namespace(prefix).await?;
        let specs = objects::specs(&ns, "c", 0, n);
        self.register(&specs, None);
        let created =
            objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok((ns, created))
    }

    async fn cold_floor(
        &mut self,
        n: usize,
        variant: ColdVariant,
        rotation: bool,
        restart: bool,
    ) -> Result<Side> {
        let (ns, created) = self.cold_objects("cold-floor", n).await?;
        let observer = Observer::connections(&self.client, &ns).await?;
        let conn0 = self.standin.connection_count();
        // From the floor's start: its runtime, clients and pools are made inside the window, as
        // the operator's are.
        let t0 = Instant::now();
        let (floor, last) = self
            .floor_until_ready(
                variant.floor_rate(),
                &created,
                &observer,
                Duration::from_secs(900),
            )
            .await?;
        let mut side = Side {
            all_ready: secs(last - t0),
            cpu: floor.cpu_seconds()?,
            tls_connections: (self.standin.connection_count() - conn0) as f64,
            ..Side::default()
        };
        if rotation {
            side.rotation = self.floor_rotations(&floor, &ns, &created).await?;
        }
        if restart {
            side.restart = Some(secs(floor.restart_reads(&ns).await?));
        }
        drop(floor);
        drop(observer);
        self.delete_namespace(&ns).await?;
        Ok(side)
    }

    async fn floor_rotations(
        &self,
        floor: &Floor,
        ns: &str,
        created: &[Created],
    ) -> Result<Vec<f64>> {
        let tokens = Observer::token_secrets(&self.client, ns).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let served = floor.serve(rx);
        let mut latencies = Vec::new();
        for c in pick(created, self.cfg.rotations) {
            let old = tokens.state(&c.token_secret()).map(|(d, _)| d);
            let t = Instant::now();
            let new = self.rotate_credentials(c).await?;
            let mut c = c.clone();
            c.client_secret = new;
            let expect = floor_digest(&c.client_id, &c.client_secret);
            tx.send(c.clone())?;
            let at = tokens
                .wait(Duration::from_secs(60), |o| {
                    o.state(&c.token_secret())
                        .filter(|(d, _)| *d == expect)
                        .map(|(_, t)| t)
                })
                .await
                .with_context(|| format!("floor: new token for {} (was {old:?})", c.name))?;
            latencies.push(secs(at - t));
        }
        drop(tx);
        served.await??;
        Ok(latencies)
    }

    async fn cold_operator(
        &mut self,
        n: usize,
        variant: ColdVariant,
        rotation: bool,
        restart: bool,
    ) -> Result<Side> {
        let (ns, created) = self.cold_objects("cold-op", n).await?;
        let observer = Observer::connections(&self.client, &ns).await?;
        let api0 = ApiCounters::read(&self.client).await?;
        let conn0 = self.standin.connection_count();
        let since = SystemTime::now();
        let config = self.operator_config(variant.operator_rate());
        let mut op = Operator::start(&config)?;
        let t0 = op.started;
        let last = observer
            .wait_ready(n, Duration::from_secs(900))
            .await
            .context("operator: all Ready")?;
        op.wait_serving(Duration::from_secs(30)).await?;
        // A new process: its counters start at zero.
        let c0 = OperatorCounters::default();
        let mut side = Side {
            all_ready: secs(last - t0),
            cpu: op.cpu_seconds()?,
            tls_connections: (self.standin.connection_count() - conn0) as f64,
            memory_hwm_kib: op.memory()?.hwm_kib as f64,
            ..Side::default()
        };
        // Let trailing reconciles (the operator's own Secret writes trigger one each) finish.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c1 = op.counters().await?;
        let api1 = ApiCounters::read(&self.client).await?;
        let d = c1.since(&c0);
        side.token_requests = self.token_requests_of(&ns, since).len() as f64;
        side.secret_writes = d.secret_writes;
        side.status_writes = d.status_writes;
        side.reconciles = d.reconciles;
        side.api = api1.since(&api0);

        // Idle: nothing to do for an hour; nothing may happen.
        let idle_since = SystemTime::now();
        tokio::time::sleep(self.cfg.idle_window).await;
        let c2 = op.counters().await?;
        let api2 = ApiCounters::read(&self.client).await?;
        let di = c2.since(&c1);
        let dapi = api2.since(&api1);
        side.idle = Some(Idle {
            token_requests: self.token_requests_of(&ns, idle_since).len() as f64,
            writes: di.secret_writes + di.status_writes,
            api_writes: dapi.writes("secrets")
                + dapi.writes("pingoneconnections")
                + dapi.writes("events"),
            reconciles: di.reconciles,
        });

        if rotation {
            let tokens = Observer::token_secrets(&self.client, &ns).await?;
            let before = op.counters().await?;
            let mut latencies = Vec::new();
            let picked = pick(&created, self.cfg.rotations);
            for c in &picked {
                let old = tokens
                    .state(&c.token_secret())
                    .map(|(d, _)| d)
                    .context("token Secret not seen")?;
                let t = Instant::now();
                self.rotate_credentials(c).await?;
                let at = tokens
                    .wait_changed(&c.token_secret(), &old, Duration::from_secs(60))
                    .await
                    .with_context(|| format!("operator: new token for {}", c.name))?;
                latencies.push(secs(at - t));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = op.counters().await?.since(&before);
            side.rotation = latencies;
            side.rotation_writes =
                Some((after.secret_writes + after.status_writes) / picked.len() as f64);
        }
        drop(observer);

        if restart {
            op.terminate(Duration::from_secs(30)).await?;
            let since = SystemTime::now();
            let api0 = ApiCounters::read(&self.client).await?;
            let config = self.operator_config(variant.operator_rate());
            let mut op2 = Operator::start(&config)?;
            let t0 = op2.started;
            op2.wait_serving(Duration::from_secs(30)).await?;
            let reconciled = loop {
                let c = op2.counters().await?;
                if c.reconciles >= n as f64 {
                    break t0.elapsed();
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    bail!("restart: {} of {n} reconciled after 600 s", c.reconciles);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            tokio::time::sleep(Duration::from_secs(3)).await;
            let c = op2.counters().await?;
            let api = ApiCounters::read(&self.client).await?.since(&api0);
            side.restart = Some(secs(reconciled));
            side.restart_counts = Some(RestartCounts {
                token_requests: self.token_requests_of(&ns, since).len() as f64,
                writes: c.secret_writes + c.status_writes,
                api_secret_status_writes: api.writes("secrets") + api.writes("pingoneconnections"),
                api_gets: api.get("GET", "secrets", ""),
            });
            op2.terminate(Duration::from_secs(30)).await?;
        } else {
            op.terminate(Duration::from_secs(30)).await?;
        }
        self.delete_namespace(&ns).await?;
        Ok(side)
    }

    fn cold_rows(&mut self, n: usize, variant: ColdVariant, runs: &[ColdRun]) {
        let col = |f: &dyn Fn(&ColdRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let op = col(&|r| r.op.all_ready);
        let fl = col(&|r| r.floor.all_ready);
        let ratios = col(&|r| r.op.all_ready / r.floor.all_ready);
        let ratio = median(&ratios);
        let scenario = format!("1 cold start, {}", variant.label());
        let order = runs
            .iter()
            .map(|r| if r.floor_first { "F" } else { "O" })
            .collect::<Vec<_>>()
            .join("");
        let (goal, v) = match variant {
            ColdVariant::CapOff => ("≤ 1.15 × floor", verdict(ratio <= 1.15)),
            ColdVariant::DefaultFlags => ("(reported)", Verdict::Info),
        };
        let t = &mut self.table;
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!("{n} existing connections: start → all Ready"),
            operator: format!("{:.2} s", median(&op)),
            floor: format!("{:.2} s", median(&fl)),
            ratio: format!("{ratio:.2}"),
            goal: goal.into(),
            verdict: v,
            runs: format!(
                "ratios {} (first: {order}); operator {}; floor {}",
                fmt_runs(&ratios, "", 2),
                fmt_runs(&op, " s", 2),
                fmt_runs(&fl, " s", 2)
            ),
        });
        let tput = |v: &[f64]| v.iter().map(|t| n as f64 / t).collect::<Vec<f64>>();
        t.row(Row {
            scenario: scenario.clone(),
            measure: "throughput (connections/s)".into(),
            operator: format!("{:.0}/s", n as f64 / median(&op)),
            floor: format!("{:.0}/s", n as f64 / median(&fl)),
            ratio: format!("{:.2}", median(&fl) / median(&op)),
            goal: "".into(),
            verdict: Verdict::Info,
            runs: fmt_runs(&tput(&op), "/s", 0),
        });
        if variant == ColdVariant::DefaultFlags {
            return;
        }
        let cpu = col(&|r| r.op.cpu);
        let fcpu = col(&|r| r.floor.cpu);
        t.row(compared(
            &scenario,
            "CPU seconds (operator process / floor threads)",
            (&cpu, &fcpu),
            " s",
            fmt_runs(&cpu, " s", 1),
        ));
        let hwm = col(&|r| r.op.memory_hwm_kib / 1024.0);
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!("operator peak RSS (VmHWM) after {n}"),
            operator: format!("{:.1} MiB", median(&hwm)),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "(reported; goal in 2 memory)".into(),
            verdict: Verdict::Info,
            runs: fmt_runs(&hwm, "", 1),
        });
        let reqs = col(&|r| r.op.token_requests);
        let sw = col(&|r| r.op.secret_writes);
        let stw = col(&|r| r.op.status_writes);
        let exact = reqs.iter().all(|x| *x == n as f64)
            && sw.iter().all(|x| *x == n as f64)
            && stw.iter().all(|x| *x == n as f64);
        t.row(Row {
            scenario: scenario.clone(),
            measure: "token requests / Secret writes / status writes".into(),
            operator: format!("{} / {} / {}", median(&reqs), median(&sw), median(&stw)),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "one each per connection".into(),
            verdict: verdict(exact),
            runs: format!(
                "reqs {}; writes {} + {}",
                fmt_runs(&reqs, "", 0),
                fmt_runs(&sw, "", 0),
                fmt_runs(&stw, "", 0)
            ),
        });
        let tls = col(&|r| r.op.tls_connections);
        let ftls = col(&|r| r.floor.tls_connections);
        t.row(Row {
            scenario: scenario.clone(),
            measure: "TLS connections to the stand-in".into(),
            operator: format!("{}", median(&tls)),
            floor: format!("{}", median(&ftls)),
            ratio: "-".into(),
            goal: "reused (≈ concurrency)".into(),
            verdict: Verdict::Info,
            runs: fmt_runs(&tls, "", 0),
        });
        if let Some(last) = runs.last() {
            let per = |verb: &str, res: &str, sub: &str| last.op.api.get(verb, res, sub) / n as f64;
            self.table.note(format!(
                "cold start, API requests per connection seen by the API server from the operator's start (last run; the creates come before it, other clients count too): GET secrets {:.2}, PATCH secrets {:.2}, PATCH status {:.2}, POST events {:.2}, PATCH events {:.2}; reconciles per connection {:.2}",
                per("GET", "secrets", ""),
                per("PATCH", "secrets", ""),
                per("PATCH", "pingoneconnections", "status"),
                per("POST", "events", ""),
                per("PATCH", "events", ""),
                last.op.reconciles / n as f64,
            ));
        }
        let idles: Vec<&Idle> = runs.iter().filter_map(|r| r.op.idle.as_ref()).collect();
        if !idles.is_empty() {
            let quiet = idles
                .iter()
                .all(|i| i.token_requests == 0.0 && i.writes == 0.0 && i.api_writes == 0.0);
            self.table.row(Row {
                scenario: scenario.clone(),
                measure: format!(
                    "idle {:.0} s after: token requests / writes / API writes",
                    secs(self.cfg.idle_window)
                ),
                operator: format!(
                    "{} / {} / {}",
                    idles.iter().map(|i| i.token_requests).sum::<f64>(),
                    idles.iter().map(|i| i.writes).sum::<f64>(),
                    idles.iter().map(|i| i.api_writes).sum::<f64>()
                ),
                floor: "-".into(),
                ratio: "-".into(),
                goal: "none (no reconcile loop)".into(),
                verdict: verdict(quiet),
                runs: format!(
                    "reconciles {}",
                    fmt_runs(
                        &idles.iter().map(|i| i.reconciles).collect::<Vec<_>>(),
                        "",
                        0
                    )
                ),
            });
        }
        let op_restart: Vec<f64> = runs.iter().filter_map(|r| r.op.restart).collect();
        let fl_restart: Vec<f64> = runs.iter().filter_map(|r| r.floor.restart).collect();
        if !op_restart.is_empty() {
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|r| Some(r.op.restart? / r.floor.restart?))
                .collect();
            let counts: Vec<&RestartCounts> = runs
                .iter()
                .filter_map(|r| r.op.restart_counts.as_ref())
                .collect();
            let zero = counts.iter().all(|c| {
                c.token_requests == 0.0 && c.writes == 0.0 && c.api_secret_status_writes == 0.0
            });
            let t = &mut self.table;
            t.row(Row {
                scenario: "4 restart".into(),
                measure: format!("{n} fresh tokens: start → reconciles ≥ {n}"),
                operator: format!("{:.1} s", median(&op_restart)),
                floor: format!("{:.1} s", median(&fl_restart)),
                ratio: format!("{:.2}", median(&ratios)),
                goal: "(floor: list + 2 GETs each)".into(),
                verdict: Verdict::Info,
                runs: fmt_runs(&op_restart, " s", 1),
            });
            t.row(Row {
                scenario: "4 restart".into(),
                measure: "token requests / operator writes / API writes".into(),
                operator: format!(
                    "{} / {} / {}",
                    counts.iter().map(|c| c.token_requests).sum::<f64>(),
                    counts.iter().map(|c| c.writes).sum::<f64>(),
                    counts
                        .iter()
                        .map(|c| c.api_secret_status_writes)
                        .sum::<f64>()
                ),
                floor: "-".into(),
                ratio: "-".into(),
                goal: "zero".into(),
                verdict: verdict(zero),
                runs: format!(
                    "GET secrets per connection {}",
                    fmt_runs(
                        &counts
                            .iter()
                            .map(|c| c.api_gets / n as f64)
                            .collect::<Vec<_>>(),
                        "",
                        2
                    )
                ),
            });
        }
        let op_rot: Vec<&Vec<f64>> = runs
            .iter()
            .map(|r| &r.op.rotation)
            .filter(|v| !v.is_empty())
            .collect();
        if !op_rot.is_empty() {
            let p = |sides: &dyn Fn(&ColdRun) -> &Vec<f64>, q: f64| {
                runs.iter()
                    .map(|r| percentile(sides(r), q) * 1000.0)
                    .collect::<Vec<_>>()
            };
            let op50 = p(&|r| &r.op.rotation, 50.0);
            let op99 = p(&|r| &r.op.rotation, 99.0);
            let fl50 = p(&|r| &r.floor.rotation, 50.0);
            let fl99 = p(&|r| &r.floor.rotation, 99.0);
            let writes: Vec<f64> = runs.iter().filter_map(|r| r.op.rotation_writes).collect();
            let t = &mut self.table;
            t.row(Row {
                scenario: "5 credentials change".into(),
                measure: format!(
                    "Secret change → new token, p50 ({} changes)",
                    self.cfg.rotations
                ),
                operator: format!("{:.0} ms", median(&op50)),
                floor: format!("{:.0} ms", median(&fl50)),
                ratio: format!("{:.2}", median(&op50) / median(&fl50)),
                goal: "seconds".into(),
                verdict: verdict(median(&op50) < 5000.0),
                runs: fmt_runs(&op50, "", 0),
            });
            t.row(Row {
                scenario: "5 credentials change".into(),
                measure: "Secret change → new token, p99".into(),
                operator: format!("{:.0} ms", median(&op99)),
                floor: format!("{:.0} ms", median(&fl99)),
                ratio: format!("{:.2}", median(&op99) / median(&fl99)),
                goal: "seconds".into(),
                verdict: verdict(median(&op99) < 5000.0),
                runs: fmt_runs(&op99, "", 0),
            });
            t.row(Row {
                scenario: "5 credentials change".into(),
                measure: "operator writes per change".into(),
                operator: format!("{:.2}", median(&writes)),
                floor: "-".into(),
                ratio: "-".into(),
                goal: "2 (Secret + status)".into(),
                verdict: verdict(writes.iter().all(|w| (*w - 2.0).abs() < 1e-9)),
                runs: fmt_runs(&writes, "", 2),
            });
        }
    }

    // ---------------------------------------------------------------- 1b

    /// Apply → Ready of connections created one after another.
    pub async fn sequential(&mut self) -> Result<()> {
        let m = self.cfg.sequential;
        let mut op_runs = Vec::new();
        let mut fl_runs = Vec::new();
        for run in 1..=self.cfg.runs {
            say(format!(
                "==> sequential run {run}/{}: floor, {m} connections",
                self.cfg.runs
            ));
            let ns = self.namespace("seq-floor").await?;
            let specs = objects::specs(&ns, "s", 0, m);
            self.register(&specs, None);
            let floor = self.new_floor(self.cfg.cold_start_rate).await?;
            let observer = Observer::connections(&self.client, &ns).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let served = floor.serve(rx);
            let mut lat = Vec::new();
            for s in &specs {
                let t = Instant::now();
                let c = objects::create_one(&self.client, &ns, s).await?;
                tx.send(c)?;
                let at = observer
                    .wait_name_ready(&s.name, Duration::from_secs(60))
                    .await?;
                lat.push(secs(at - t) * 1000.0);
            }
            drop(tx);
            served.await??;
            drop(floor);
            drop(observer);
            self.delete_namespace(&ns).await?;
            fl_runs.push(lat);

            say(format!(
                "==> sequential run {run}/{}: operator, {m} connections",
                self.cfg.runs
            ));
            let ns = self.namespace("seq-op").await?;
            let specs = objects::specs(&ns, "s", 0, m);
            self.register(&specs, None);
            let op = self.start_operator(Some(self.cfg.cold_start_rate)).await?;
            let observer = Observer::connections(&self.client, &ns).await?;
            let mut lat = Vec::new();
            for s in &specs {
                let t = Instant::now();
                objects::create_one(&self.client, &ns, s).await?;
                let at = observer
                    .wait_name_ready(&s.name, Duration::from_secs(60))
                    .await?;
                lat.push(secs(at - t) * 1000.0);
            }
            drop(observer);
            op.terminate(Duration::from_secs(30)).await?;
            self.delete_namespace(&ns).await?;
            say(format!(
                "    p50 floor {:.0} ms, operator {:.0} ms",
                percentile(fl_runs.last().map_or(&[][..], |v| &v[..]), 50.0),
                percentile(&lat, 50.0)
            ));
            op_runs.push(lat);
        }
        for (q, label) in [(50.0, "p50"), (99.0, "p99")] {
            let op: Vec<f64> = op_runs.iter().map(|v| percentile(v, q)).collect();
            let fl: Vec<f64> = fl_runs.iter().map(|v| percentile(v, q)).collect();
            self.table.row(Row {
                scenario: "1 one by one".into(),
                measure: format!("apply → Ready {label} ({m} in sequence)"),
                operator: format!("{:.0} ms", median(&op)),
                floor: format!("{:.0} ms", median(&fl)),
                ratio: format!("{:.2}", median(&op) / median(&fl)),
                goal: "".into(),
                verdict: Verdict::Info,
                runs: fmt_runs(&op, "", 0),
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 2

    /// Resident memory at each level of connections, with the unrelated Secrets present.
    pub async fn memory(&mut self) -> Result<()> {
        let levels = self.cfg.memory_levels.clone();
        say(format!("==> memory at {levels:?} connections"));
        let ns = self.namespace("mem").await?;
        let op = self.start_operator(None).await?;
        let pid = op.pid();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                let mut max = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = super::operator::proc_memory(pid) {
                        max = max.max(m.rss_kib);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                max
            })
        };
        let observer = Observer::connections(&self.client, &ns).await?;
        let mut have = 0;
        let mut points = Vec::new();
        for &level in &levels {
            if level > have {
                let specs = objects::specs(&ns, "m", have, level - have);
                self.register(&specs, None);
                let t = Instant::now();
                objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None)
                    .await?;
                observer
                    .wait_ready(level, Duration::from_secs(900))
                    .await
                    .with_context(|| format!("memory: {level} Ready"))?;
                have = level;
                say(format!("    {level} Ready after {:.1}s", secs(t.elapsed())));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let m = op.memory()?;
            say(format!(
                "    {level} connections: VmHWM {:.1} MiB, VmRSS {:.1} MiB",
                m.hwm_kib as f64 / 1024.0,
                m.rss_kib as f64 / 1024.0
            ));
            points.push((level, m));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sampled_max = sampler.await?;
        drop(observer);
        op.terminate(Duration::from_secs(60)).await?;
        self.delete_namespace(&ns).await?;
        // The floor of every level: the same process with no connection of its own (the
        // unrelated Secrets listed), measured in this run.
        let base = points.iter().find(|(l, _)| *l == 0).map(|(_, m)| *m);
        let mut prev = 0usize;
        for (level, m) in &points {
            let mib = m.hwm_kib as f64 / 1024.0;
            // The goal holds for a true burst: 1,000 created at once on a process holding none.
            let (goal, v) = if *level == 1000 && prev == 0 {
                ("≤ 32 MiB (a true burst)", verdict(mib <= 32.0))
            } else {
                ("", Verdict::Info)
            };
            prev = *level;
            self.table.row(Row {
                scenario: "2 memory".into(),
                measure: format!(
                    "peak RSS (VmHWM) at {level} ({} unrelated {} KiB Secrets)",
                    self.cfg.unrelated,
                    self.cfg.unrelated_bytes / 1024
                ),
                operator: format!("{mib:.1} MiB"),
                floor: base.map_or("-".into(), |b| {
                    format!("{:.1} MiB", b.hwm_kib as f64 / 1024.0)
                }),
                ratio: "-".into(),
                goal: goal.to_string(),
                verdict: v,
                runs: format!("VmRSS {:.1} MiB", m.rss_kib as f64 / 1024.0),
            });
        }
        // Growth per connection from 1,000 to the largest level (or between the two largest),
        // from the settled RSS.
        let from = points
            .iter()
            .position(|(l, _)| *l == 1000)
            .unwrap_or(points.len().saturating_sub(2));
        if points.len() >= 2 && from + 1 < points.len() {
            let (l1, m1) = points[from];
            let (l2, m2) = points[points.len() - 1];
            if l2 > l1 {
                let per = (m2.rss_kib as f64 - m1.rss_kib as f64) / (l2 - l1) as f64;
                let per_hwm = (m2.hwm_kib as f64 - m1.hwm_kib as f64) / (l2 - l1) as f64;
                let (goal, v) = if l1 == 1000 && l2 >= 10_000 {
                    ("≤ 6 KiB", verdict(per <= 6.0))
                } else {
                    ("(reported)", Verdict::Info)
                };
                self.table.row(Row {
                    scenario: "2 memory".into(),
                    measure: format!("growth per connection ({l1} → {l2}, VmRSS)"),
                    operator: format!("{per:.1} KiB"),
                    floor: "-".into(),
                    ratio: "-".into(),
                    goal: goal.into(),
                    verdict: v,
                    runs: format!(
                        "VmHWM {per_hwm:.1} KiB; max sampled RSS {:.1} MiB",
                        sampled_max as f64 / 1024.0
                    ),
                });
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 3

    /// Rotations of short-lived tokens over a few lifetimes.
    pub async fn steady_state(&mut self) -> Result<()> {
        let n = self.cfg.steady;
        let life = self.cfg.steady_lifetime;
        let window = life * self.cfg.steady_lifetimes;
        say(format!(
            "==> steady state: {n} connections, {}s tokens, {}s window",
            life.as_secs(),
            window.as_secs()
        ));
        let ns = self.namespace("steady").await?;
        let specs = objects::specs(&ns, "r", 0, n);
        self.register(&specs, Some(life));
        let op = self.start_operator(None).await?;
        let observer = Observer::connections(&self.client, &ns).await?;
        objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        observer.wait_ready(n, Duration::from_secs(600)).await?;
        drop(observer);
        let c0 = op.settled_counters(None).await?;
        let since = SystemTime::now();
        let api0 = ApiCounters::read(&self.client).await?;
        let cpu0 = op.cpu_seconds()?;
        tokio::time::sleep(window).await;
        let c1 = op.settled_after(&c0).await?;
        let until = SystemTime::now();
        let api1 = ApiCounters::read(&self.client).await?;
        let cpu = op.cpu_seconds()? - cpu0;
        let d: OperatorCounters = c1.since(&c0);
        let api = api1.since(&api0);
        let all = self.token_requests_of(&ns, UNIX_EPOCH);
        op.terminate(Duration::from_secs(30)).await?;
        self.delete_namespace(&ns).await?;

        let requests: Vec<&RecordedRequest> = all
            .iter()
            .filter(|r| r.time >= since && r.time <= until)
            .collect();
        let w = until
            .duration_since(since)
            .map(secs)
            .unwrap_or(secs(window));
        let rotations = requests.len() as f64;
        let ok = requests.iter().filter(|r| r.status == 200).count() as f64;
        // The schedule: renew at 67 % of the lifetime (renewBeforePercentage 33) brought forward
        // by a jitter of 0-10 %, both instants truncated to whole seconds.
        let l = secs(life);
        let (lo, hi) = (0.57 * l - 1.5, 0.67 * l + 1.5);
        let mut by_client: HashMap<&str, Vec<SystemTime>> = HashMap::new();
        for r in &all {
            by_client
                .entry(r.client_id.as_deref().unwrap_or(""))
                .or_default()
                .push(r.time);
        }
        // A connection's first token may be renewed earlier, to spread a burst of new
        // connections over the cycle: anywhere from 17 % of the lifetime (never before the 10 s
        // floor) to the normal point.
        let lo_first = (0.17 * l).max(10.0) - 1.5;
        let mut intervals = Vec::new();
        let mut on_schedule = 0;
        let mut expected = 0.0;
        for times in by_client.values_mut() {
            times.sort();
            for (i, pair) in times.windows(2).enumerate() {
                if pair[1] >= since && pair[1] <= until {
                    let d = pair[1].duration_since(pair[0]).map(secs).unwrap_or(0.0);
                    let low = if i == 0 { lo_first } else { lo };
                    if (low..=hi).contains(&d) {
                        on_schedule += 1;
                    }
                    intervals.push(d);
                }
            }
            // Expected renewals in the window from the token held at its start, at the
            // schedule's mean interval.
            if let Some(held) = times.iter().rev().find(|t| **t < since) {
                let span = until.duration_since(*held).map(secs).unwrap_or(0.0);
                expected += (span / (0.62 * l)).floor();
            }
        }
        let mean_interval = stats::median(&intervals);
        let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
        for r in &requests {
            let s = r.time.duration_since(since).unwrap_or_default().as_secs();
            *buckets.entry(s).or_default() += 1;
        }
        let busiest = buckets.values().copied().max().unwrap_or(0) as f64;
        let average = rotations / w;
        let herd = busiest / average;
        let secret_per = d.secret_writes / d.token_successes;
        let status_per = d.status_writes / d.token_successes;
        let t = &mut self.table;
        t.row(Row { scenario: "3 steady state".into(), measure: format!(
                "token requests over {}×{}s ({n} connections)",
                self.cfg.steady_lifetimes,
                life.as_secs()
            ), operator: format!(
                "{rotations:.0} ({:.2}/conn), interval median {mean_interval:.1} s",
                rotations / n as f64
            ), floor: "-".into(), ratio: format!("{on_schedule}/{} on schedule", intervals.len()), goal: format!(
                "every renewal on schedule: ≈{expected:.0}, interval {:.1}-{:.1} s (the schedule rules, worked out by the bench)",
                0.57 * l,
                0.67 * l
            ), verdict: verdict(on_schedule == intervals.len() && ok == rotations && !intervals.is_empty()), runs: format!(
                "[{lo:.1}, {hi:.1}] s after the previous token, first renewal from {lo_first:.1} s (truncation ±1.5 s); {} failed",
                rotations - ok
            ) });
        t.row(Row {
            scenario: "3 steady state".into(),
            measure: "writes per rotation: Secret + status (operator metrics)".into(),
            operator: format!("{secret_per:.3} + {status_per:.3}"),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "exactly 1 + 1, none between".into(),
            verdict: verdict(
                d.secret_writes == d.token_successes && d.status_writes == d.token_successes,
            ),
            runs: format!(
                "{} + {} writes for {} rotations; {} reconciles",
                d.secret_writes, d.status_writes, d.token_successes, d.reconciles
            ),
        });
        t.row(Row {
            scenario: "3 steady state".into(),
            measure: "API server requests per rotation".into(),
            operator: format!(
                "PATCH secret {:.2}, PATCH status {:.2}, events {:.2}, GET secret {:.2}",
                api.get("PATCH", "secrets", "") / rotations,
                api.get("PATCH", "pingoneconnections", "status") / rotations,
                api.writes("events") / rotations,
                api.get("GET", "secrets", "") / rotations,
            ),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "(reported; by design 1, 1, 1, 0)".into(),
            verdict: Verdict::Info,
            runs: String::new(),
        });
        t.row(Row {
            scenario: "3 steady state".into(),
            measure: "operator CPU seconds per 1000 rotations".into(),
            operator: format!("{:.2} s", cpu / rotations * 1000.0),
            floor: "-".into(),
            ratio: "-".into(),
            goal: "".into(),
            verdict: Verdict::Info,
            runs: format!("{cpu:.1} s over {w:.0} s"),
        });
        t.row(Row {
            scenario: "3 steady state".into(),
            measure: "busiest second / average rate".into(),
            operator: format!("{busiest:.0}/s vs {average:.1}/s"),
            floor: "-".into(),
            ratio: format!("{herd:.2}"),
            goal: "≤ 2".into(),
            verdict: verdict(herd <= 2.0),
            runs: String::new(),
        });
        Ok(())
    }

    // ---------------------------------------------------------------- 6

    /// A burst against a rate-limited stand-in, with the operator capped at the same rate.
    pub async fn rate_limit(&mut self) -> Result<()> {
        let rate = self.cfg.rate;
        let n = self.cfg.rate_burst;
        let mut results = Vec::new();
        let mut floors = Vec::new();
        for run in 1..=self.cfg.rate_runs {
            say(format!(
                "==> rate limit run {run}/{}: {n} connections, stand-in, operator and floor at {rate}/s",
                self.cfg.rate_runs
            ));
            // Alternate which side goes first.
            for floor_side in [run % 2 == 1, run % 2 == 0] {
                let side = self.rate_side(n, rate, floor_side).await?;
                if floor_side {
                    floors.push(side);
                } else {
                    results.push(side);
                }
            }
        }
        let col = |f: &dyn Fn(&RateRun) -> f64| results.iter().map(f).collect::<Vec<f64>>();
        let fcol = |f: &dyn Fn(&RateRun) -> f64| floors.iter().map(f).collect::<Vec<f64>>();
        let rejected = col(&|r| r.rejected);
        let cap_time = n as f64 / f64::from(rate);
        let t = &mut self.table;
        t.row(Row {
            scenario: "6 protecting PingOne".into(),
            measure: format!("{n} in a burst, stand-in limited to {rate}/s: 429s"),
            operator: format!("{}", rejected.iter().sum::<f64>()),
            floor: format!("{}", fcol(&|r| r.rejected).iter().sum::<f64>()),
            ratio: "-".into(),
            goal: "0".into(),
            verdict: verdict(rejected.iter().all(|r| *r == 0.0)),
            runs: fmt_runs(&rejected, "", 0),
        });
        let total = col(&|r| r.total);
        let ftotal = fcol(&|r| r.total);
        let ratios: Vec<f64> = total.iter().zip(&ftotal).map(|(o, f)| o / f).collect();
        t.row(Row {
            scenario: "6 protecting PingOne".into(),
            measure: "burst → all Ready".into(),
            operator: format!("{:.1} s", median(&total)),
            floor: format!("{:.1} s", median(&ftotal)),
            ratio: format!("{:.2}", median(&ratios)),
            goal: "(reported)".into(),
            verdict: Verdict::Info,
            runs: format!(
                "the cap's own time n / rate: {cap_time:.1} s; achieved {}/s (floor {}/s); busiest 1 s window {} (floor {})",
                fmt_runs(&col(&|r| r.achieved), "", 1),
                fmt_runs(&fcol(&|r| r.achieved), "", 1),
                fmt_runs(&col(&|r| r.max_window), "", 0),
                fmt_runs(&fcol(&|r| r.max_window), "", 0)
            ),
        });
        let max_wait = median(&col(&|r| r.max_wait));
        let fmax_wait = median(&fcol(&|r| r.max_wait));
        t.row(Row {
            scenario: "6 protecting PingOne".into(),
            measure: "queueing: wait p50 / max; order kept (Spearman)".into(),
            operator: format!(
                "{:.1} s / {max_wait:.1} s; {:.3}",
                median(&col(&|r| r.p50_wait)),
                median(&col(&|r| r.rank))
            ),
            floor: format!(
                "{:.1} s / {fmax_wait:.1} s; {:.3}",
                median(&fcol(&|r| r.p50_wait)),
                median(&fcol(&|r| r.rank))
            ),
            ratio: format!("{:.2}", max_wait / median(&ftotal)),
            goal: "max wait ≤ 1.1 × the floor's burst → all Ready (none starves)".into(),
            verdict: verdict(max_wait <= 1.1 * median(&ftotal)),
            runs: format!(
                "max waits {} (floor {})",
                fmt_runs(&col(&|r| r.max_wait), " s", 1),
                fmt_runs(&fcol(&|r| r.max_wait), " s", 1)
            ),
        });
        Ok(())
    }

    /// One burst of `n` connections against the stand-in limited to `rate`/s: the operator
    /// (`--max-requests-per-second=rate`) or the floor under the same cap, served as they are
    /// created.
    async fn rate_side(&mut self, n: usize, rate: u32, floor_side: bool) -> Result<RateRun> {
        let ns = self
            .namespace(if floor_side { "rate-floor" } else { "rate" })
            .await?;
        let specs = objects::specs(&ns, "q", 0, n);
        self.register(&specs, None);
        self.standin
            .set_rate_limit(Some((rate, Duration::from_secs(1))));
        let (op, floor) = if floor_side {
            (None, Some(self.new_floor(rate).await?))
        } else {
            (Some(self.start_operator(Some(rate)).await?), None)
        };
        let observer = Observer::connections(&self.client, &ns).await?;
        let since = SystemTime::now();
        let base = (Instant::now(), SystemTime::now());
        let t0 = Instant::now();
        let (notify, served) = match &floor {
            Some(floor) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(floor.serve(rx)))
            }
            None => (None, None),
        };
        let created = objects::burst(
            &self.client,
            &ns,
            &specs,
            self.cfg.create_concurrency,
            notify,
        )
        .await?;
        let timeout = Duration::from_secs(n as u64 / u64::from(rate.max(1)) * 2 + 300);
        let last = observer.wait_ready(n, timeout).await?;
        let total = secs(last - t0);
        drop(observer);
        if let Some(served) = served {
            let served = served.await??;
            ensure!(served == n, "the floor served {served} of {n}");
        }
        let requests = self.token_requests_of(&ns, since);
        self.standin.set_rate_limit(None);
        if let Some(op) = op {
            op.terminate(Duration::from_secs(60)).await?;
        }
        drop(floor);
        self.delete_namespace(&ns).await?;

        let rejected = requests.iter().filter(|r| r.status == 429).count();
        let mut first: HashMap<&str, SystemTime> = HashMap::new();
        for r in requests.iter().filter(|r| r.status == 200) {
            first
                .entry(r.client_id.as_deref().unwrap_or(""))
                .or_insert(r.time);
        }
        let mut waits = Vec::new();
        let mut created_at = Vec::new();
        let mut served_at = Vec::new();
        for c in &created {
            let Some(t) = first.get(c.client_id.as_str()) else {
                continue;
            };
            let created_sys = base.1 + (c.created_at - base.0);
            let wait = t.duration_since(created_sys).map(secs).unwrap_or(0.0);
            waits.push(wait);
            created_at.push(secs(c.created_at - base.0));
            served_at.push(t.duration_since(since).map(secs).unwrap_or(0.0));
        }
        ensure!(
            waits.len() == n,
            "{} of {n} connections of the {} side have no token request on record",
            n - waits.len(),
            if floor_side { "floor" } else { "operator" }
        );
        let rank = stats::spearman(&created_at, &served_at);
        let mut times: Vec<SystemTime> = requests.iter().map(|r| r.time).collect();
        times.sort();
        let mut max_window = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i].duration_since(times[j]).unwrap_or_default() >= Duration::from_secs(1) {
                j += 1;
            }
            max_window = max_window.max(i - j + 1);
        }
        let span = match (times.first(), times.last()) {
            (Some(a), Some(b)) => b.duration_since(*a).map(secs).unwrap_or(0.0),
            _ => 0.0,
        };
        say(format!(
            "    {}: {total:.1}s, {rejected} rejected, max wait {:.1}s, Spearman {rank:.3}",
            if floor_side { "floor" } else { "operator" },
            stats::max(&waits)
        ));
        Ok(RateRun {
            total,
            rejected: rejected as f64,
            achieved: requests.len() as f64 / span.max(1e-9),
            max_window: max_window as f64,
            max_wait: stats::max(&waits),
            p50_wait: percentile(&waits, 50.0),
            rank,
        })
    }
}

/// Up to `k` connections spread evenly over `created`.
fn pick(created: &[Created], k: usize) -> Vec<&Created> {
    if created.is_empty() || k == 0 {
        return Vec::new();
    }
    let k = k.min(created.len());
    (0..k).map(|i| &created[i * created.len() / k]).collect()
}

#[derive(Default, Debug)]
struct Side {
    all_ready: f64,
    cpu: f64,
    tls_connections: f64,
    memory_hwm_kib: f64,
    token_requests: f64,
    secret_writes: f64,
    status_writes: f64,
    reconciles: f64,
    api: ApiCounters,
    idle: Option<Idle>,
    rotation: Vec<f64>,
    rotation_writes: Option<f64>,
    restart: Option<f64>,
    restart_counts: Option<RestartCounts>,
}

#[derive(Debug)]
struct Idle {
    token_requests: f64,
    writes: f64,
    api_writes: f64,
    reconciles: f64,
}

#[derive(Debug)]
struct RestartCounts {
    token_requests: f64,
    writes: f64,
    api_secret_status_writes: f64,
    api_gets: f64,
}

struct ColdRun {
    floor: Side,
    op: Side,
    floor_first: bool,
}

/// The two cold starts: the request cap off on both sides (the goal: the API server, not the
/// cap, decides), and the operator's default flags against a floor under the default cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColdVariant {
    CapOff,
    DefaultFlags,
}

/// The operator's default `--max-requests-per-second`.
const DEFAULT_CAP: u32 = 100;

impl ColdVariant {
    fn label(self) -> &'static str {
        match self {
            ColdVariant::CapOff => "cap off",
            ColdVariant::DefaultFlags => "default flags",
        }
    }

    /// `--max-requests-per-second` of the operator (`None`: its default).
    fn operator_rate(self) -> Option<u32> {
        match self {
            ColdVariant::CapOff => Some(0),
            ColdVariant::DefaultFlags => None,
        }
    }

    fn floor_rate(self) -> u32 {
        match self {
            ColdVariant::CapOff => 0,
            ColdVariant::DefaultFlags => DEFAULT_CAP,
        }
    }
}

struct RateRun {
    total: f64,
    rejected: f64,
    achieved: f64,
    max_window: f64,
    max_wait: f64,
    p50_wait: f64,
    rank: f64,
}

/// Machine facts for the report: CPU model, cores, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem:.1} GiB memory")
}
