//! The scale benchmark in small (`make bench` is the full one; docs/performance.md): the
//! operator binary as a process, 50 connections each with its own credentials Secret. It asserts
//! what the benchmark counts, never how long anything took, so it runs in `make test` and
//! cannot rot:
//!
//! - one token request, one Secret write, one status write and one reconcile per new
//!   connection;
//! - over an idle window: no token request, no write, no reconcile (no reconcile loop);
//! - one rotation round of short-lived tokens: one token request, one reconcile and exactly two
//!   writes (Secret and status) per rotation, none between.
//!
//! Tokens live 60 s and `--min-renewal-interval=45s` holds every renewal to 45 s after issue,
//! so the idle window (right after all are Ready) ends long before the first renewal and the
//! round is complete long before the second.

use std::time::{Duration, Instant};

use pingone_testbed::bench::prom;
use pingone_testbed::standin::ClientRegistration;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

const CONNECTIONS: usize = 50;
const LIFETIME: Duration = Duration::from_secs(60);
/// Renewals come this long after issue (the floor wins over 67 % of 60 s).
const RENEW_AFTER: Duration = Duration::from_secs(45);
const IDLE: Duration = Duration::from_secs(10);

/// The operator's counters that the benchmark reads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    token_requests: f64,
    token_successes: f64,
    secret_writes: f64,
    status_writes: f64,
    reconciles: f64,
    /// Reconciles that only took a slot of the request budget and were requeued at it.
    throttled: f64,
}

async fn counts(op: &OperatorProcess) -> Counts {
    let s = prom::parse(&op.metrics().await);
    let writes = |kind| {
        prom::sum(
            &s,
            "pingone_operator_kubernetes_writes_total",
            &[("kind", kind)],
        )
    };
    Counts {
        token_requests: prom::sum(&s, "pingone_operator_token_requests_total", &[]),
        token_successes: prom::sum(
            &s,
            "pingone_operator_token_requests_total",
            &[("result", "success")],
        ),
        secret_writes: writes("secret"),
        status_writes: writes("status"),
        reconciles: prom::sum(&s, "pingone_operator_reconciles_total", &[]),
        throttled: prom::sum(&s, "pingone_operator_throttled_reconciles_total", &[]),
    }
}

/// The counters and the stand-in's request count at a moment when no reconcile is between its
/// token request and its writes (every successful request matched by both writes), or the
/// last reading after 10 s (the assertions then show what is off).
async fn settled(env: &TestEnv, op: &OperatorProcess) -> (Counts, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counts(op).await;
        let n = env.standin.token_request_count();
        let consistent = c.token_successes == c.secret_writes
            && c.token_successes == c.status_writes
            && c.token_requests == n as f64;
        if consistent || Instant::now() > deadline {
            return (c, n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counters once a second has passed without any change (at most 10 s).
async fn quiet(op: &OperatorProcess) -> Counts {
    let mut last = counts(op).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counts(op).await;
        if now == last {
            break;
        }
        last = now;
    }
    last
}

async fn ready_count(env: &TestEnv) -> usize {
    let list = env.connections().list(&Default::default()).await.unwrap();
    list.items
        .iter()
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_connections_one_token_and_two_writes_each_nothing_while_idle_two_writes_per_rotation()
 {
    let env = TestEnv::new("bench-small").await;
    let names: Vec<String> = (0..CONNECTIONS).map(|i| format!("c{i:02}")).collect();
    for name in &names {
        let id = format!("bench-small-{name}");
        let secret = format!("secret-{name}-{}", env.ns);
        env.standin.add_client(
            ClientRegistration::new(ENV_ID, &id, &secret).with_token_lifetime(LIFETIME),
        );
        env.put_credentials(&format!("{name}-creds"), &id, &secret)
            .await;
    }
    let op = OperatorProcess::start(
        &env,
        &["--leader-election=false", "--min-renewal-interval=45s"],
    );
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "/metrics answers", || {
        let req = http.get(op.url("/metrics"));
        async move { req.send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;

    // Cold start: all 50 in one go.
    let first_issue = Instant::now();
    futures::future::join_all(names.iter().map(|name| {
        env.create_connection(
            name,
            json!({"credentialsSecretRef": {"name": format!("{name}-creds")}}),
        )
    }))
    .await;
    eventually(Duration::from_secs(60), "all connections Ready", || {
        let env = &env;
        async move { (ready_count(env).await == CONNECTIONS).then_some(()) }
    })
    .await;
    let (created, requests) = settled(&env, &op).await;
    let n = CONNECTIONS as f64;
    assert_eq!(requests, CONNECTIONS, "token requests at the stand-in");
    assert_eq!(
        (
            created.token_requests,
            created.token_successes,
            created.secret_writes,
        ),
        (n, n, n),
        "one token request and one Secret write per connection: {created:?}"
    );
    // One status write per connection; on a machine loaded far beyond the suite (a benchmark
    // running next to it) one connection has been seen writing a second, as with the reconcile
    // count below. More than one extra is a loop.
    assert!(
        (n..=n + 1.0).contains(&created.status_writes),
        "one status write per connection: {created:?}"
    );

    // One reconcile per new connection: the watch events of the operator's own writes (the
    // token Secret, the status) trigger none. A reconcile that only took a slot of the request
    // budget (100/s: a burst of 50 queues for up to half a second) and was requeued at it is
    // counted apart.
    // Under full-suite load one extra reconcile has been seen now and then (51 for 50, cause
    // not found yet); more than that is a loop or an echo taken for a change.
    let created = quiet(&op).await;
    let working = created.reconciles - created.throttled;
    assert!(
        (n..=n + 1.0).contains(&working),
        "one reconcile per new connection: {created:?}"
    );

    // Idle: the next renewal is 45 s after issue; nothing may happen before.
    tokio::time::sleep(IDLE).await;
    let (idle, idle_requests) = settled(&env, &op).await;
    assert!(
        first_issue.elapsed() < RENEW_AFTER,
        "the idle window reached the renewals (the machine is too slow for this test)"
    );
    assert_eq!(idle_requests, requests, "token requests while idle");
    assert_eq!(
        idle, created,
        "writes or reconciles while idle (a reconcile loop?)"
    );

    // One rotation round: every connection renews once, 45 s after issue.
    eventually(
        Duration::from_secs(90),
        "one renewal per connection",
        || {
            let n = env.standin.token_request_count();
            async move { (n >= 2 * CONNECTIONS).then_some(()) }
        },
    )
    .await;
    let (rotated, rotated_requests) = settled(&env, &op).await;
    assert!(
        first_issue.elapsed() < RENEW_AFTER * 2,
        "the round overlapped the next one (the machine is too slow for this test)"
    );
    assert_eq!(
        rotated_requests,
        2 * CONNECTIONS,
        "token requests after one round"
    );
    let rotations = rotated.token_successes - created.token_successes;
    assert_eq!(rotations, n, "one rotation per connection: {rotated:?}");
    assert_eq!(
        (
            rotated.secret_writes - created.secret_writes,
            rotated.status_writes - created.status_writes
        ),
        (rotations, rotations),
        "exactly one Secret write and one status write per rotation: {rotated:?}"
    );
    assert_eq!(
        (rotated.reconciles - rotated.throttled) - (created.reconciles - created.throttled),
        rotations,
        "one reconcile per rotation (the echo of the Secret write triggers none): {rotated:?}"
    );
    let mut per_client = std::collections::BTreeMap::<String, usize>::new();
    for r in env.standin.requests() {
        *per_client
            .entry(r.client_id.unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        per_client.values().all(|c| *c == 2) && per_client.len() == CONNECTIONS,
        "two token requests per connection: {per_client:?}"
    );
    let status = op.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}
