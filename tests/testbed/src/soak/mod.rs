//! The seeded fault soak (`make soak`, the `pingone-soak` binary): the operator binary, two
//! replicas with leader election, against a control plane of its own and the stand-in, with
//! faults of every class the operator claims to survive injected on a schedule drawn from a
//! seed, alone and overlapping, and an independent checker of the promises ([`check`]) run
//! every second, then once more for convergence and leaks at the end.
//!
//! - [`plan`]: the connections and the fault schedule, from the seed;
//! - [`world`]: the processes, the objects, and the hands that inject the faults;
//! - [`check`]: the invariants, pure functions over what was observed.

pub mod check;
pub mod plan;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};

use check::{Bounds, Violation};
use plan::{Action, NAMESPACES};

/// How long after convergence the idle window starts.
const IDLE_SETTLE: Duration = Duration::from_secs(30);
/// The operator's first recheck of an environment whose JWKS was unreachable comes this long
/// after the first connection found it so (its documented minimum JWKS refetch interval, one
/// minute; the soak runs the operator with its defaults).
const OPERATOR_JWKS_RECHECK: Duration = Duration::from_secs(60);

/// How a soak runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub seed: u64,
    /// Length of the fault phase.
    pub duration: Duration,
    pub connections: usize,
    /// Mean seconds between two actions.
    pub mean_gap: f64,
    /// Time allowed after the last fault's effect ends for every connection to be Ready.
    pub converge: Duration,
    pub operator_bin: PathBuf,
    pub crds: PathBuf,
    /// Where logs go.
    pub out: PathBuf,
}

/// What a soak found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub connections: usize,
    pub injected: BTreeMap<&'static str, usize>,
    pub actions: usize,
    /// Rounds of the per-second check.
    pub checks: u64,
    pub violations: Vec<Violation>,
    /// From the end of the last fault to all Ready, when it came.
    pub converged_after: Option<Duration>,
    pub token_requests: usize,
    pub rotations: usize,
}

impl Report {
    /// One Markdown table row.
    pub fn markdown_row(&self, duration: Duration) -> String {
        let injected: Vec<String> = self
            .injected
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        format!(
            "| {} | {} s | {} | {} | {} | {} | {} | {} | {} |",
            self.seed,
            duration.as_secs(),
            self.connections,
            injected.join(", "),
            self.checks,
            self.token_requests,
            self.rotations,
            self.converged_after
                .map(|d| format!("{} s", d.as_secs()))
                .unwrap_or_else(|| "no".into()),
            self.violations.len()
        )
    }
}

/// Runs one soak.
pub async fn run(config: SoakConfig) -> Result<Report> {
    let conns = plan::connections(config.seed, config.connections);
    let schedule = plan::schedule(config.seed, config.duration, config.mean_gap, &conns);
    println!(
        "soak: seed {} ({} connections, {} actions over {} s)",
        config.seed,
        conns.len(),
        schedule.len(),
        config.duration.as_secs()
    );
    for p in &schedule {
        println!("soak: plan +{:>6.1}s {:?}", p.at.as_secs_f64(), p.action);
    }
    let world = Arc::new(
        world::World::start(
            config.seed,
            conns.clone(),
            config.operator_bin.clone(),
            &config.crds,
            config.out.clone(),
        )
        .await?,
    );
    let supervisor = world.supervise();
    let result = drive(&world, &config, &schedule).await;
    supervisor.abort();
    world.stop_replicas();
    result
}

fn bounds(conns: &[plan::ConnPlan]) -> Bounds {
    Bounds {
        floor: SignedDuration::from_secs(10),
        caps: world::ENVIRONMENT_IDS
            .iter()
            .zip(world::CAPS)
            .map(|(e, c)| (e.to_string(), c.unwrap_or(world::DEFAULT_CAP)))
            .collect(),
        lifetimes: conns
            .iter()
            .map(|c| {
                (
                    world::client_id(c.index),
                    SignedDuration::try_from(c.lifetime).unwrap_or_default(),
                )
            })
            .collect(),
        touched: HashMap::new(),
        grace: SignedDuration::from_secs(5),
        max_pause: SignedDuration::from_secs(300),
        settle: SignedDuration::from_secs(30),
    }
}

async fn drive(
    world: &Arc<world::World>,
    config: &SoakConfig,
    schedule: &[plan::Planned],
) -> Result<Report> {
    let bounds = bounds(&world.conns);
    // Warm-up: every connection Ready.
    let started = Instant::now();
    loop {
        let conns = world.snapshot_conns().await.unwrap_or_default();
        let ready = conns.iter().filter(|c| c.ready).count();
        if ready == world.conns.len() {
            println!(
                "soak: all {ready} connections Ready after {:?}",
                started.elapsed()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "only {ready} of {} connections Ready after 5 min",
                world.conns.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let found: Arc<std::sync::Mutex<BTreeMap<String, Violation>>> = Default::default();
    let checks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (world, found, checks, stop, bounds) = (
            world.clone(),
            found.clone(),
            checks.clone(),
            stop.clone(),
            bounds.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let tick = tokio::time::sleep(Duration::from_secs(1));
                if let Ok(vs) = check_once(&world, &bounds).await {
                    checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
                    for v in vs {
                        if !f.contains_key(&v.key) {
                            report_violation(&world, &v);
                            f.insert(v.key.clone(), v);
                        }
                    }
                }
                tick.await;
            }
        })
    };

    // The fault phase.
    let phase = tokio::time::Instant::now();
    let mut running = Vec::new();
    let mut last_end = Duration::ZERO;
    // Connections whose token could not be checked while the JWKS was down wait for the
    // operator's recheck of their environment, the first one a minimum refetch interval after
    // the outage began (it lasts less): one reconcile each then, which is recovery, not idling.
    let mut jwks_rechecked_by = Duration::ZERO;
    for p in schedule {
        tokio::time::sleep_until(phase + p.at).await;
        last_end = last_end.max(p.at + p.action.length());
        if let Action::JwksDown { .. } = p.action {
            jwks_rechecked_by =
                jwks_rechecked_by.max(p.at + OPERATOR_JWKS_RECHECK + Duration::from_secs(10));
        }
        let (world, action) = (world.clone(), p.action.clone());
        running.push(tokio::spawn(async move { world.act(action).await }));
    }
    for r in running {
        let _ = r.await;
    }
    let quiet_from = tokio::time::Instant::now().max(phase + last_end);
    tokio::time::sleep_until(quiet_from).await;
    println!("soak: the last fault ended; waiting for convergence");

    // Convergence: every connection with good inputs Ready with an unexpired token.
    let deadline = quiet_from + config.converge;
    let mut converged_after = None;
    let mut pending = Vec::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(conns) = world.snapshot_conns().await {
            pending = check::not_converged(Timestamp::now(), &conns, &world.bad_inputs());
            if pending.is_empty() {
                converged_after = Some(quiet_from.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut late = Vec::new();
    match converged_after {
        Some(after) => {
            println!("soak: converged {after:?} after the last fault");
            // The recovery's tail (retries, JWKS waits, watch events of the last writes)
            // settles first; then the operator must be idle.
            tokio::time::sleep(IDLE_SETTLE).await;
            tokio::time::sleep_until(phase + jwks_rechecked_by).await;
            // Idle: over 20 s, no more token requests than renewals due (plus the requests
            // of connections a person broke, which retry).
            // Renewals due are read before the window: a renewal moves its time on.
            let from = Timestamp::now();
            let until = from + SignedDuration::from_secs(20);
            let due = world.renewals_due(from, until).await.unwrap_or(0);
            let reconciles_before = world.reconciles().await;
            tokio::time::sleep(Duration::from_secs(20)).await;
            // No reconcile loop either: a few reconciles per renewal (the renewal, the watch
            // events of its own writes), no more.
            match (reconciles_before, world.reconciles().await) {
                (Some(a), Some(b)) => {
                    let made = (b - a) as usize;
                    println!("soak: idle window: {made} reconciles, {due} renewals due");
                    if made > 3 * due + 10 {
                        late.push(Violation {
                            invariant: "I6",
                            subject: "the operator".into(),
                            detail: format!(
                                "{made} reconciles in 20 s with {due} renewals due: a reconcile loop"
                            ),
                            key: "I6-reconciles".into(),
                        });
                    }
                }
                _ => late.push(Violation {
                    invariant: "I6",
                    subject: "the operator".into(),
                    detail: "the replicas' reconcile counts could not be read".into(),
                    key: "I6-unreadable".into(),
                }),
            }
            let requests = world.requests();
            if let Some(v) = check::not_idle(&requests, from, until, due, 2) {
                late.push(v);
            }
        }
        None => late.extend(pending),
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = checker.await;

    // Leaks, in everything written during the run.
    let mut needles = world
        .journal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .needles
        .clone();
    needles.extend(world.token_needles());
    let haystacks = world.haystacks().await?;
    late.extend(check::never_a_leak(&haystacks, &needles));

    let mut found = found.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for v in late {
        report_violation(world, &v);
        found.insert(v.key.clone(), v);
    }
    let journal = world.journal.lock().unwrap_or_else(|e| e.into_inner());
    let report = Report {
        seed: config.seed,
        connections: world.conns.len(),
        injected: journal.injected.clone(),
        actions: journal.actions.len(),
        checks: checks.load(std::sync::atomic::Ordering::SeqCst),
        violations: found.into_values().collect(),
        converged_after,
        token_requests: world.standin.token_request_count(),
        rotations: world
            .standin
            .management_requests()
            .iter()
            .filter(|r| r.rotated)
            .count(),
    };
    println!(
        "soak: seed {}: {} checks, {} violations; {} secrets and keys, {} tokens searched for in {} haystacks",
        report.seed,
        report.checks,
        report.violations.len(),
        journal.needles.len(),
        world.token_needles().len(),
        haystacks.len()
    );
    Ok(report)
}

/// One round of the per-second checks.
async fn check_once(world: &world::World, bounds: &Bounds) -> Result<Vec<Violation>> {
    let conns = world.snapshot_conns().await?;
    // What the soak wrote, before and after the list: a Secret the soak wrote meanwhile (or
    // is writing) is not judged in this round.
    let owned_before = world
        .journal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .owned
        .clone();
    let versions = world.snapshot_versions().await?;
    let requests = world.requests();
    let accepts = world.accepts();
    // After the reads: a person's edit the list saw has its excuse recorded by now.
    let now = Timestamp::now();
    let (excuses, owned, doomed, touched) = {
        let j = world.journal.lock().unwrap_or_else(|e| e.into_inner());
        (
            j.excuses.clone(),
            j.owned.clone(),
            j.doomed,
            j.touched.clone(),
        )
    };
    let bounds = &Bounds {
        touched,
        ..bounds.clone()
    };
    let doomed_ns = world::namespace(NAMESPACES - 1);
    let conns: Vec<_> = conns
        .into_iter()
        .filter(|c| doomed.is_none() || c.namespace != doomed_ns)
        .collect();
    let mut out = check::never_stale(now, &conns, &requests, &excuses, bounds);
    out.extend(check::never_locked_out(
        now, &conns, &accepts, &excuses, bounds,
    ));
    out.extend(check::never_a_storm(&requests, bounds, &excuses));
    let owned: HashMap<String, String> = owned
        .into_iter()
        .filter(|(k, _)| doomed.is_none() || !k.starts_with(&format!("{doomed_ns}/")))
        .filter_map(|(k, after)| {
            let after = after?;
            (owned_before.get(&k)? == &Some(after.clone())).then_some((k, after))
        })
        .collect();
    out.extend(check::never_a_foreign_write(&owned, &versions));
    Ok(out)
}

/// Prints a violation with the last actions before it and, for a connection, its client's
/// last requests.
fn report_violation(world: &world::World, v: &Violation) {
    println!(
        "soak: VIOLATION {} {}: {}",
        v.invariant, v.subject, v.detail
    );
    let journal = world.journal.lock().unwrap_or_else(|e| e.into_inner());
    for (at, what) in journal.actions.iter().rev().take(8).rev() {
        println!("soak:   before: {} {what}", at.strftime("%H:%M:%S%.3f"));
    }
    drop(journal);
    if let Some(index) = v
        .subject
        .rsplit('/')
        .next()
        .and_then(|n| n.strip_prefix('c'))
        .and_then(|i| i.parse::<usize>().ok())
        && let Some(c) = world.conns.get(index)
    {
        let client = format!("{index:08x}-50a4-4c0e-8d1f-2b3c4d5e6f70");
        let requests: Vec<_> = world
            .requests()
            .into_iter()
            .filter(|r| r.client_id.as_deref() == Some(client.as_str()))
            .collect();
        println!("soak:   connection: {c:?}");
        for r in requests.iter().rev().take(8).rev() {
            println!(
                "soak:   request: {} status {} fault {:?}",
                r.time.strftime("%H:%M:%S%.3f"),
                r.status,
                r.fault
            );
        }
    }
}
