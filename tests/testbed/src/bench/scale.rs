//! Issue 12's scenarios at scale: 10,000 connections under a request cap (start to all Ready,
//! then the steady state at 10-minute tokens), and the cost of Secret churn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;

use super::floor::MetadataWatch;
use super::objects::{self, CREDENTIALS_LABEL};
use super::observe::Observer;
use super::operator::Operator;
use super::scenarios::{Bench, Row, Verdict, say, secs, verdict};

impl Bench {
    /// 10,000 existing connections, the operator started with `--max-requests-per-second` at
    /// the scale rate: start → all Ready against the floor under the same cap (and the cap's own
    /// n / rate); then, with tokens of `scale_lifetime`, a window of rotations: token requests,
    /// Secret writes, status writes and reconciles per rotation, CPU seconds per rotation next to
    /// the floor's per connection (the same three calls).
    pub async fn scale(&mut self) -> Result<()> {
        let n = self.cfg.scale;
        let rate = self.cfg.scale_rate;
        let life = self.cfg.scale_lifetime;
        let cap_time = n as f64 / f64::from(rate);

        say(format!("==> scale: floor, {n} connections at {rate}/s"));
        let ns = self.namespace("scale-floor").await?;
        let specs = objects::specs(&ns, "z", 0, n);
        self.register(&specs, Some(life));
        let created =
            objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let observer = Observer::connections(&self.client, &ns).await?;
        let t0 = Instant::now();
        let floor = self.new_floor(rate).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let served = floor.serve(rx);
        for c in &created {
            tx.send(c.clone())?;
        }
        drop(tx);
        let last = observer
            .wait_ready(n, Duration::from_secs(1800))
            .await
            .context("scale floor: all Ready")?;
        let floor_time = secs(last - t0);
        let served = served.await??;
        ensure!(served == n, "the floor served {served} of {n}");
        let floor_cpu_per = floor.cpu_seconds()? / n as f64;
        drop(floor);
        drop(observer);
        say(format!("    floor {floor_time:.1}s"));
        self.delete_namespace(&ns).await?;

        say(format!("==> scale: operator, {n} connections at {rate}/s"));
        let ns = self.namespace("scale-op").await?;
        let specs = objects::specs(&ns, "z", 0, n);
        self.register(&specs, Some(life));
        objects::burst(&self.client, &ns, &specs, self.cfg.create_concurrency, None).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let observer = Observer::connections(&self.client, &ns).await?;
        let config = self.operator_config(Some(rate));
        let mut op = Operator::start(&config)?;
        let t0 = op.started;
        let last = observer
            .wait_ready(n, Duration::from_secs(1800))
            .await
            .context("scale operator: all Ready")?;
        let op_time = secs(last - t0);
        drop(observer);
        op.wait_serving(Duration::from_secs(30)).await?;
        let start_counts = op.settled_counters(None).await?;
        say(format!(
            "    operator {op_time:.1}s; {} reconciles for {n} connections",
            start_counts.reconciles
        ));

        // Steady state: a window of rotations.
        let window = self.cfg.scale_window;
        let c0 = start_counts;
        let cpu0 = op.cpu_seconds()?;
        let since = SystemTime::now();
        say(format!(
            "    steady state: {}s window, {}s tokens",
            window.as_secs(),
            life.as_secs()
        ));
        tokio::time::sleep(window).await;
        let c1 = op
            .settled_counters(Some((
                c0.token_successes - c0.secret_writes,
                c0.token_successes - c0.status_writes,
            )))
            .await?;
        let until = SystemTime::now();
        let cpu = op.cpu_seconds()? - cpu0;
        let hwm = op.memory()?.hwm_kib as f64 / 1024.0;
        let d = c1.since(&c0);
        let requests = self
            .token_requests_of(&ns, since)
            .into_iter()
            .filter(|r| r.time <= until)
            .count() as f64;
        op.terminate(Duration::from_secs(60)).await?;
        self.delete_namespace(&ns).await?;

        let t = &mut self.table;
        let scenario = format!("5 scale, {n} at {rate}/s");
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!("{n} existing connections: start → all Ready"),
            operator: format!("{op_time:.1} s"),
            floor: format!("{floor_time:.1} s"),
            ratio: format!("{:.2}", op_time / floor_time),
            goal: "≤ 1.1 × floor (the cap's time + the floor's overhead)".into(),
            verdict: verdict(op_time <= 1.1 * floor_time),
            runs: format!(
                "the cap itself: {cap_time:.1} s (operator {:.2}×, floor {:.2}×); start reconciles per connection {:.2}; peak RSS {hwm:.1} MiB",
                op_time / cap_time,
                floor_time / cap_time,
                start_counts.reconciles / n as f64
            ),
        });
        let rotations = d.token_successes;
        let exact = rotations > 0.0
            && d.token_requests == rotations
            && requests == rotations
            && d.secret_writes == rotations
            && d.status_writes == rotations;
        t.row(Row {
            scenario: scenario.clone(),
            measure: format!(
                "steady state, {}-minute tokens, {} s window: token requests / Secret writes / status writes per rotation",
                life.as_secs() / 60,
                window.as_secs()
            ),
            operator: format!(
                "{:.3} / {:.3} / {:.3}",
                requests / rotations.max(1.0),
                d.secret_writes / rotations.max(1.0),
                d.status_writes / rotations.max(1.0)
            ),
            floor: "1 / 1 / 1".into(),
            ratio: "-".into(),
            goal: "exactly 1 / 1 / 1".into(),
            verdict: verdict(exact),
            runs: format!(
                "{rotations} rotations; {} requests at the stand-in; {} reconciles",
                requests, d.reconciles
            ),
        });
        let per = cpu / rotations.max(1.0);
        t.row(Row {
            scenario,
            measure: "steady state: CPU seconds per rotation".into(),
            operator: format!("{:.2} ms", per * 1000.0),
            floor: format!("{:.2} ms", floor_cpu_per * 1000.0),
            ratio: format!("{:.2}", per / floor_cpu_per),
            goal: "(reported)".into(),
            verdict: Verdict::Info,
            runs: format!(
                "operator {cpu:.1} s over {} s (all of its work, idle included); floor: its CPU per connection at the start",
                window.as_secs()
            ),
        });
        Ok(())
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
