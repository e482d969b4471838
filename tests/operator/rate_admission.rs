//! The per-environment rate cap is admission, not a queue inside reconciles: connections of a
//! capped environment wait for their slot without holding a reconcile slot, so other
//! environments go on at full speed; a 429 pauses only its own environment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use pingone_testbed::standin::ClientRegistration;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

const ENV_B: &str = "0b1e2c3d-4f50-4a6b-8c7d-9e0f1a2b3c4d";
const CLIENT_B: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";
const SECRET_B: &str = "b-side secret";

/// Token request times for `environment`, oldest first.
fn request_times(env: &TestEnv, environment: &str) -> Vec<SystemTime> {
    let mut times: Vec<SystemTime> = env
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.environment_id.as_deref() == Some(environment))
        .map(|r| r.time)
        .collect();
    times.sort();
    times
}

async fn ready_names(env: &TestEnv, prefix: &str) -> Vec<String> {
    env.connections()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with(prefix)
                && c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .map(|c| c.metadata.name.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capped_environment_waits_without_blocking_another() {
    let env = TestEnv::new("envcap").await;
    env.standin
        .add_client(ClientRegistration::new(ENV_B, CLIENT_B, SECRET_B));
    env.put_credentials("creds-b", CLIENT_B, SECRET_B).await;
    // Environment A at 1 request per second; B at the default cap (100).
    let cap = format!("--environment-max-requests-per-second={ENV_ID}=1");
    let mut operator = OperatorProcess::start(&env, &["--leader-election=false", &cap]);
    operator.wait_serving(Duration::from_secs(20)).await;

    let started = Instant::now();
    for chunk in (0..200).collect::<Vec<_>>().chunks(25) {
        join_all(chunk.iter().map(|i| {
            let name = format!("a-{i:03}");
            let env = &env;
            async move { env.create_connection(&name, json!({})).await }
        }))
        .await;
    }
    println!("200 connections in A created in {:?}", started.elapsed());

    // 20 in B: each Ready within 10 s of its creation, while A is still mostly waiting.
    let b_spec = json!({"environmentId": ENV_B, "credentialsSecretRef": {"name": "creds-b"}});
    let mut created = BTreeMap::new();
    for i in 0..20 {
        let name = format!("b-{i:02}");
        env.create_connection(&name, b_spec.clone()).await;
        created.insert(name, Instant::now());
    }
    let last_created = Instant::now();
    let mut ready_at: BTreeMap<String, Instant> = BTreeMap::new();
    while ready_at.len() < created.len() {
        for name in ready_names(&env, "b-").await {
            ready_at.entry(name).or_insert_with(Instant::now);
        }
        let missing: Vec<&String> = created
            .keys()
            .filter(|n| !ready_at.contains_key(*n))
            .collect();
        assert!(
            last_created.elapsed() <= Duration::from_secs(10) || missing.is_empty(),
            "B connections not Ready 10 s after the last was created: {missing:?} \
             ({} requests to A so far)",
            request_times(&env, ENV_ID).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slowest = created
        .iter()
        .map(|(name, at)| ready_at[name].duration_since(*at))
        .max()
        .unwrap();
    let a_so_far = request_times(&env, ENV_ID).len();
    println!("slowest B connection Ready {slowest:?} after creation; {a_so_far} requests to A");
    assert!(slowest <= Duration::from_secs(10), "{slowest:?}");
    assert!(
        a_so_far < 100,
        "most of A should still be waiting: {a_so_far} requests"
    );

    // A 429 with Retry-After 3 for the next A request: A pauses for 3 s, B does not.
    env.standin.push_fault(
        pingone_testbed::standin::Fault::status_with_retry_after(429, 3),
        1,
    );
    let limited = eventually(Duration::from_secs(5), "a 429 for an A request", || {
        let found = env
            .standin
            .requests()
            .into_iter()
            .find(|r| r.status == 429)
            .map(|r| (r.time, r.environment_id));
        async move { found }
    })
    .await;
    assert_eq!(limited.1.as_deref(), Some(ENV_ID));
    let t429 = limited.0;
    env.create_connection("b-late", b_spec.clone()).await;
    env.wait_condition("b-late", "Ready", "True", None, Duration::from_secs(5))
        .await;
    let b_late = request_times(&env, ENV_B)
        .into_iter()
        .filter(|t| *t > t429)
        .collect::<Vec<_>>();
    assert_eq!(b_late.len(), 1, "{b_late:?}");
    let b_wait = b_late[0].duration_since(t429).unwrap();
    assert!(
        b_wait < Duration::from_secs(3),
        "B waited {b_wait:?} behind A's 429"
    );
    let next_a = eventually(Duration::from_secs(10), "A resumes after the pause", || {
        let next = request_times(&env, ENV_ID).into_iter().find(|t| *t > t429);
        async move { next }
    })
    .await;
    let paused = next_a.duration_since(t429).unwrap();
    println!("A paused {paused:?} after the 429; B's request {b_wait:?} after it");
    assert!(
        paused >= Duration::from_secs(3),
        "A resumed after {paused:?}"
    );

    // A never had two requests in one second: the cap spaces requests 1.05 s apart (5 % wider
    // than 1/rate), which leaves 50 ms for delivery jitter above a gap of 1 s.
    // Enough of A's requests to judge the spacing: after the pause it goes on at its cap.
    let times = eventually(Duration::from_secs(15), "eight requests to A", || {
        let times = request_times(&env, ENV_ID);
        async move { (times.len() >= 8).then_some(times) }
    })
    .await;
    let timeline: Vec<String> = env
        .standin
        .requests()
        .iter()
        .filter(|r| r.environment_id.as_deref() == Some(ENV_ID))
        .map(|r| {
            let at = r.time.duration_since(times[0]).unwrap_or_default();
            format!("{:.3} s: {}", at.as_secs_f64(), r.status)
        })
        .collect();
    let tightest = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
        .min()
        .unwrap();
    println!("{} requests to A; tightest gap {tightest:?}", times.len());
    assert!(
        tightest >= Duration::from_secs(1),
        "two requests to A within {tightest:?}: {timeline:#?}"
    );
    drop(operator);
}

/// `expires_at` of connection `name`'s token Secret.
async fn token_expiry(env: &TestEnv, name: &str) -> jiff::Timestamp {
    let secret = env
        .token_secret(&format!("{name}-token"))
        .await
        .expect("token Secret");
    data(&secret, "expires_at").unwrap().parse().unwrap()
}

/// A 429 with `Retry-After: 3600` at a renewal pauses the environment for at most five
/// minutes, not an hour: the connection that met it retries within its token's validity, and
/// another connection of the same environment whose renewal falls into the pause probes through
/// it; both renew before their tokens expire. When every answer is such a 429, the token does
/// expire, and Ready turns False at its expiry, not an hour later.
#[tokio::test(flavor = "multi_thread")]
async fn an_hour_long_retry_after_never_lets_a_token_expire_unattempted() {
    let mut env = TestEnv::new("ra3600").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(30)),
    );
    env.start_operator();
    for name in ["a", "b"] {
        env.create_connection(name, json!({"renewal": {"renewBeforePercentage": 50}}))
            .await;
    }
    for name in ["a", "b"] {
        env.wait_ready(name).await;
    }
    let samplers: Vec<ExpirySampler> = ["a-token", "b-token"]
        .into_iter()
        .map(|s| ExpirySampler::start(env.secrets(), s, Duration::from_millis(150)))
        .collect();
    let old = [token_expiry(&env, "a").await, token_expiry(&env, "b").await];
    env.standin.push_fault(
        pingone_testbed::standin::Fault::status_with_retry_after(429, 3600),
        1,
    );
    // Both renew (one of them after the 429), each before its old token expires.
    for (name, expires) in ["a", "b"].into_iter().zip(old) {
        let left =
            Duration::try_from(expires.duration_since(jiff::Timestamp::now())).unwrap_or_default();
        eventually(
            left,
            &format!("{name} renewed before it expired"),
            || async { (token_expiry(&env, name).await > expires).then_some(()) },
        )
        .await;
    }
    let limited = env
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(limited, 1, "the 429 was met");
    for sampler in samplers {
        let (samples, problems, _) = sampler.finish().await;
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(samples > 10, "{samples} samples");
    }

    // Every answer a 429 for an hour: the token of `a` expires, and Ready says so at once.
    env.delete_connection("b").await;
    env.standin.set_persistent_fault(Some(
        pingone_testbed::standin::Fault::status_with_retry_after(429, 3600),
    ));
    let expires = token_expiry(&env, "a").await;
    let by = expires + jiff::SignedDuration::from_secs(4);
    let left = Duration::try_from(by.duration_since(jiff::Timestamp::now())).unwrap_or_default();
    let conn = env
        .wait_condition("a", "Ready", "False", Some("TokenExpired"), left)
        .await;
    let ready = TestEnv::condition(&conn, "Ready");
    assert!(
        ready.last_transition_time.0 >= expires,
        "False before the expiry: {ready:?}"
    );
    // Attempts while the token was valid: bounded by the failure policy, not a storm.
    let attempts = env
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .count();
    println!("{attempts} requests met a 429 in all");
    assert!(
        (2..=40).contains(&attempts),
        "{attempts} requests met a 429"
    );
    env.standin.set_persistent_fault(None);
}
