//! The operator under operator and Kubernetes faults: leader election, SIGKILL, restarts, an API
//! server restart with a compacted etcd (watches must re-list).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use pingone_testbed::controlplane::ControlPlane;
use pingone_testbed::standin::{ClientRegistration, Fault};
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

/// Sum of every series of metric `name` in an OpenMetrics text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Watches a token Secret in the background and records whether it ever held an expired token.
struct ExpiryGuard {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl ExpiryGuard {
    fn start(secrets: Api<Secret>, name: &str) -> ExpiryGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut problems = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                // Reads fail while the API server is down; only what is read counts.
                if let Ok(s) = secrets.get(&name).await {
                    let expires: jiff::Timestamp = data(&s, "expires_at").unwrap().parse().unwrap();
                    if expires <= jiff::Timestamp::now() {
                        problems.push(format!("expired token seen (expires_at {expires})"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            problems
        });
        ExpiryGuard { stop, task }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let env = TestEnv::new("ha").await;
    let args = ["--lease-duration=6s"];
    let a = OperatorProcess::start(&env, &args);
    a.wait_log("leading; starting the controller", Duration::from_secs(20))
        .await;
    let b = OperatorProcess::start(&env, &args);
    b.wait_log("waiting for leadership", Duration::from_secs(20))
        .await;

    env.create_connection("first", json!({})).await;
    env.wait_ready("first").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        metric_sum(
            &a.metrics().await,
            "pingone_operator_kubernetes_writes_total"
        ) >= 2.0
    );
    let standby = b.metrics().await;
    assert_eq!(
        metric_sum(&standby, "pingone_operator_reconciles_total"),
        0.0,
        "the standby reconciled"
    );
    assert_eq!(
        metric_sum(&standby, "pingone_operator_kubernetes_writes_total"),
        0.0,
        "the standby wrote"
    );
    assert_eq!(b.count_log("leading; starting the controller"), 0);
    // Both ready: the leader with its watches synced, the standby once the Lease showed a live
    // holder (it has nothing to sync).
    for (who, p) in [("leader", &a), ("standby", &b)] {
        eventually(
            Duration::from_secs(20),
            &format!("{who} /readyz 200"),
            || async {
                let r = reqwest::get(p.url("/readyz")).await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    }

    // The leader dies without a word: the standby takes over once the lease expires.
    let killed = Instant::now();
    a.kill();
    b.wait_log("leading; starting the controller", Duration::from_secs(15))
        .await;
    let takeover = killed.elapsed();
    println!("takeover after SIGKILL of the leader: {takeover:?} (lease 6 s)");
    assert!(
        takeover <= Duration::from_secs(6 + 3),
        "takeover took {takeover:?}"
    );
    env.create_connection("second", json!({})).await;
    env.wait_ready("second").await;

    // A graceful shutdown releases the lease, and another replica takes it.
    let c = OperatorProcess::start(&env, &args);
    c.wait_log("waiting for leadership", Duration::from_secs(20))
        .await;
    let stopped = Instant::now();
    let status = b.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), &env.ns);
    let lease = leases.get("pingone-operator").await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty() || c.count_log("leading; starting") > 0,
        "lease still held by {holder:?} after a graceful exit"
    );
    c.wait_log("leading; starting the controller", Duration::from_secs(15))
        .await;
    println!(
        "handover after SIGTERM of the leader: {:?}",
        stopped.elapsed()
    );
    env.create_connection("third", json!({})).await;
    env.wait_ready("third").await;
}

/// Found by the soak: a leader paused (or cut off from the API server) past its Lease, while a
/// standby took over, went on reconciling when it ran again until the Lease library noticed:
/// two leaders renewed the same token milliseconds apart. A leader now acts only while its
/// last confirmed renewal plus the lease duration (less a margin) lies ahead. Here the new
/// leader's renewal is held at the stand-in when the old one resumes with the same renewal
/// due: the old one sends nothing, and exits on seeing the new holder.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_past_its_lease_never_acts_beside_the_new_one() {
    let env = TestEnv::new("ha-pause").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(24)),
    );
    let args = ["--lease-duration=6s"];
    let a = OperatorProcess::start(&env, &args);
    a.wait_log("leading; starting the controller", Duration::from_secs(20))
        .await;
    let b = OperatorProcess::start(&env, &args);
    b.wait_log("waiting for leadership", Duration::from_secs(20))
        .await;
    env.create_connection("p", json!({})).await;
    env.wait_ready("p").await;
    // The next token request (the renewal, due about 14–16 s after the issue) is held.
    env.standin.push_fault(Fault::Hold, 1);
    let before = env.standin.token_request_count();
    a.signal("STOP");
    b.wait_log("leading; starting the controller", Duration::from_secs(15))
        .await;
    eventually(
        Duration::from_secs(30),
        "the new leader's renewal, held",
        || async { (env.standin.held_requests() == 1).then_some(()) },
    )
    .await;
    // The old leader runs again with the same renewal past due.
    a.signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // (The held request is recorded once it is answered.)
    assert_eq!(
        env.standin.token_request_count() - before,
        0,
        "the old leader asked for a token beside the new one"
    );
    eventually(Duration::from_secs(10), "the old leader exits", || async {
        a.output().contains("leadership lost").then_some(())
    })
    .await;
    env.standin.release_held();
    eventually(
        Duration::from_secs(10),
        "the new leader's renewal",
        || async { (env.standin.token_request_count() - before == 1).then_some(()) },
    )
    .await;
    env.wait_ready("p").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_the_middle_of_a_rotation_costs_at_most_one_extra_request() {
    let env = TestEnv::new("sigkill").await;
    env.standin.set_token_lifetime(Duration::from_secs(20));
    let first = OperatorProcess::start(&env, &["--leader-election=false"]);
    env.create_connection("k", json!({})).await;
    env.wait_ready("k").await;
    let guard = ExpiryGuard::start(env.secrets(), "k-token");
    assert_eq!(env.standin.token_request_count(), 1);

    // The renewal request hangs at PingOne for 3 s; the operator dies while it waits.
    env.standin
        .push_fault(Fault::Delay(Duration::from_secs(3)), 1);
    eventually(Duration::from_secs(20), "renewal request in flight", || {
        let pending = env.standin.pending_faults();
        async move { (pending == 0).then_some(()) }
    })
    .await;
    first.kill();
    let before = env.secrets().get("k-token").await.unwrap();

    let second = OperatorProcess::start(&env, &["--leader-election=false"]);
    let secrets = env.secrets();
    eventually(
        Duration::from_secs(15),
        "token renewed after restart",
        || {
            let secrets = secrets.clone();
            let old = data(&before, "access_token");
            async move {
                let s = secrets.get("k-token").await.ok()?;
                (data(&s, "access_token") != old).then_some(())
            }
        },
    )
    .await;
    // First token, maybe the renewal lost with the killed process (the stand-in counts it only
    // if it answered before the connection died), the renewal after restart.
    let count = env.standin.token_request_count();
    assert!((2..=3).contains(&count), "{count} requests");
    // And the schedule goes on normally: one more renewal, not a burst.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let count = env.standin.token_request_count();
    assert!((3..=4).contains(&count), "{count} requests");
    let problems = guard.finish().await;
    assert!(problems.is_empty(), "{problems:?}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_fresh_tokens_requests_and_writes_nothing() {
    let env = TestEnv::new("restart").await;
    let first = OperatorProcess::start(&env, &["--leader-election=false"]);
    for i in 0..5 {
        env.create_connection(&format!("c{i}"), json!({})).await;
    }
    for i in 0..5 {
        env.wait_ready(&format!("c{i}")).await;
    }
    assert!(first.terminate(Duration::from_secs(15)).await.success());
    let requests = env.standin.token_request_count();
    assert_eq!(requests, 5);
    let versions: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(
                env.secrets()
                    .get(&format!("c{i}-token"))
                    .await
                    .unwrap()
                    .resource_version()
                    .unwrap(),
            );
        }
        v
    };

    let second = OperatorProcess::start(&env, &["--leader-election=false"]);
    let started = Instant::now();
    eventually(
        Duration::from_secs(30),
        "every connection reconciled",
        || {
            let url = second.url("/metrics");
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                (metric_sum(&text, "pingone_operator_reconciles_total") >= 5.0).then_some(())
            }
        },
    )
    .await;
    println!(
        "restart: all 5 connections reconciled after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.standin.token_request_count(),
        requests,
        "token requests after restart"
    );
    let text = second.metrics().await;
    assert_eq!(
        metric_sum(&text, "pingone_operator_kubernetes_writes_total"),
        0.0,
        "{text}"
    );
    for (i, rv) in versions.iter().enumerate() {
        let s = env.secrets().get(&format!("c{i}-token")).await.unwrap();
        assert_eq!(s.resource_version().as_ref(), Some(rv));
    }
}

/// etcd's current revision, through its JSON gateway.
pub(crate) async fn etcd_revision(cp: &ControlPlane) -> i64 {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v3/kv/range", cp.etcd_url()))
        .json(&json!({"key": "AA=="}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["header"]["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Compacts etcd's history up to `revision`: watches from before it can only re-list (410 Gone).
pub(crate) async fn compact_etcd(cp: &ControlPlane, revision: i64) {
    let r = reqwest::Client::new()
        .post(format!("{}/v3/kv/compaction", cp.etcd_url()))
        .json(&json!({"revision": revision.to_string(), "physical": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "compaction: {}", r.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_restart_over_a_compacted_etcd_is_survived_without_extra_requests() {
    // A control plane of its own: restarting the shared one would disturb other tests.
    let cp: &'static ControlPlane = Box::leak(Box::new(
        tokio::task::spawn_blocking(ControlPlane::start_blocking)
            .await
            .unwrap()
            .expect("own control plane"),
    ));
    let env = TestEnv::on(cp, "apirestart").await;
    // Long enough that the token outlives the API server's downtime: nothing can be written
    // while it is down.
    env.standin.set_token_lifetime(Duration::from_secs(40));
    // A process, so its watcher logs show the re-list.
    let operator = OperatorProcess::start_logging(
        &env,
        "info,kube_runtime=debug",
        &["--leader-election=false", "--min-renewal-interval=2s"],
    );
    env.create_connection("r", json!({})).await;
    env.wait_ready("r").await;
    let guard = ExpiryGuard::start(env.secrets(), "r-token");
    let started = Instant::now();

    // Writes the operator's watches have not seen, then the history compacted away while the API
    // server is down: resuming a watch from its old resourceVersion must fail (410 Gone) and
    // the watcher re-list.
    for i in 0..20 {
        env.put_credentials(&format!("noise-{i}"), "x", "y").await;
    }
    let revision = etcd_revision(cp).await;
    let cp_ref = cp;
    let down = Instant::now();
    tokio::task::spawn_blocking(move || {
        cp_ref
            .restart_apiserver_with(Duration::from_secs(5), || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(compact_etcd(cp_ref, revision));
            })
            .expect("API server restarts")
    })
    .await
    .unwrap();
    println!("API server down and back in {:?}", down.elapsed());

    // The watches work again: a credentials change is picked up within seconds.
    env.standin
        .add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, "after-restart"));
    env.put_credentials("creds", CLIENT_ID, "after-restart")
        .await;
    let secrets = env.secrets();
    let old = secrets.get("r-token").await.unwrap();
    let old_digest = old.annotations()["pingone.tokenops.dev/inputs-digest"].clone();
    // Within the watcher's backoff: after an outage of this length kube-runtime retries the
    // watch up to ~13 s (exponential from 0.8 s, with jitter, capped at 30 s) after the API
    // server is back.
    eventually(
        Duration::from_secs(45),
        "new credentials used after the restart",
        || {
            let secrets = secrets.clone();
            let old_digest = old_digest.clone();
            async move {
                let s = secrets.get("r-token").await.ok()?;
                (s.annotations()["pingone.tokenops.dev/inputs-digest"] != old_digest).then_some(())
            }
        },
    )
    .await;
    // Let renewals run on schedule for a while.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = env.standin.token_request_count();
    // First token + one for the credentials change + renewals at most every 22.8 s (57% of
    // the lifetime: 33% renew-before plus at most 10% jitter), except that each of those two
    // first tokens may renew once earlier (from 17% of the lifetime, to spread new connections).
    let allowed = 2 + 2 + (elapsed / 22.8).ceil() as usize;
    assert!(
        requests <= allowed,
        "{requests} requests in {elapsed:.0} s (allowed {allowed})"
    );
    let problems = guard.finish().await;
    assert!(problems.is_empty(), "{problems:?}");
    env.wait_ready("r").await;
    // The watches could not resume from their resourceVersion and re-listed.
    let output = operator.output();
    assert!(
        output.contains("code: 410"),
        "no 410 Gone seen by the watchers:\n{output}"
    );
    assert!(
        operator.count_log("controller stopped") == 0,
        "the controller stopped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_conflict_is_retried_without_a_second_token_request() {
    let mut env = TestEnv::new("conflict409").await;
    env.standin.set_token_lifetime(Duration::from_secs(20));
    env.start_operator();
    env.create_connection("w", json!({})).await;
    env.wait_ready("w").await;
    let before = env.secrets().get("w-token").await.unwrap();

    // The renewal request hangs for 3 s; meanwhile someone else writes the Secret, so the
    // operator's write (made against the resourceVersion it read) conflicts.
    env.standin
        .push_fault(Fault::Delay(Duration::from_secs(3)), 1);
    eventually(Duration::from_secs(20), "renewal request in flight", || {
        let pending = env.standin.pending_faults();
        async move { (pending == 0).then_some(()) }
    })
    .await;
    env.secrets()
        .patch(
            "w-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"meddler": "was-here"}}})),
        )
        .await
        .unwrap();
    let secrets = env.secrets();
    let renewed: Secret = eventually(
        Duration::from_secs(20),
        "renewed despite the conflict",
        || {
            let secrets = secrets.clone();
            let old = data(&before, "access_token");
            async move {
                let s = secrets.get("w-token").await.ok()?;
                (data(&s, "access_token") != old).then_some(s)
            }
        },
    )
    .await;
    assert!(
        metric_sum(
            &env.metrics.encode(),
            "pingone_operator_reconcile_errors_total"
        ) >= 1.0,
        "no conflict happened:\n{}",
        env.metrics.encode()
    );
    assert!(
        env.metrics
            .encode()
            .contains("reason=\"KubernetesConflict\"")
    );
    // The token obtained before the conflict was written: no second request.
    assert_eq!(env.standin.token_request_count(), 2);
    env.standin
        .verify_token(&data(&renewed, "access_token").unwrap())
        .unwrap();
    // The other writer's label survives: server-side apply only owns the operator's fields.
    assert_eq!(
        renewed.labels().get("meddler").map(String::as_str),
        Some("was-here")
    );
}

/// Two installations of the operator (two digest keys: say a Helm release beside a kustomize
/// install) reconcile one connection. The second leaves the first's token alone and reports
/// the conflict instead of re-issuing in turn with it; once the first is gone, the second
/// takes the token over before it expires.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_installation_reports_a_conflict_instead_of_reissuing() {
    let mut env = TestEnv::new("two-installs").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(30)),
    );
    // The first installation: in-process, with the test's own digest key.
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    let first_writer = |s: &Secret| {
        s.annotations()
            .get("pingone.tokenops.dev/installation")
            .cloned()
    };
    let secrets = env.secrets();
    let first = first_writer(&secrets.get("c-token").await.unwrap());
    assert!(first.is_some(), "the token Secret names its installation");

    // The second: the binary, with a digest key of its own.
    let second = OperatorProcess::start(&env, &["--leader-election=false"]);
    eventually(
        Duration::from_secs(30),
        "the second installation reports the conflict",
        || async {
            (!events_for(&env, "c", "InstallationConflict")
                .await
                .is_empty())
            .then_some(())
        },
    )
    .await;
    // Over a renewal of the first (30 s tokens renew about 20 s after issue): the first's
    // renewals only, no ping-pong (each installation re-issuing the other's token after its
    // floor, 2 s and 10 s here).
    let before = env.standin.token_request_count();
    let window = Duration::from_secs(25);
    tokio::time::sleep(window).await;
    let sent = env.standin.token_request_count() - before;
    println!("{sent} token requests in {window:?} with two installations");
    // 30 s tokens renew 17-20 s apart: at most 2 in the window.
    assert!(
        sent <= 2,
        "{sent} requests in {window:?}\n{}",
        second.output()
    );
    let token = secrets.get("c-token").await.unwrap();
    assert_eq!(
        first_writer(&token),
        first,
        "the first installation keeps it"
    );

    // The first installation goes: the second takes over before the token expires.
    env.stop_operator().await;
    let expires: jiff::Timestamp = data(&token, "expires_at").unwrap().parse().unwrap();
    let left =
        Duration::try_from(expires.duration_since(jiff::Timestamp::now())).unwrap_or_default();
    eventually(left, "the second installation took over", || async {
        let s = secrets.get("c-token").await.ok()?;
        (first_writer(&s) != first).then_some(())
    })
    .await;
    assert!(
        jiff::Timestamp::now() < expires,
        "taken over after the expiry"
    );
    drop(second);
}
