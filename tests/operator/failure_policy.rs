//! The failure policy: retries bounded by the token's remaining validity, failures remembered
//! across restarts, `TokenExpired` once the token is gone, and requests that were never sent.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use pingone_operator::controller::schedule::Timing;
use pingone_testbed::standin::{ClientRegistration, Fault, RecordedRequest};
use serde_json::json;

use crate::support::*;

/// How a failure class waits between attempts (the contract's policy, not the code's).
#[derive(Clone, Copy, Debug)]
enum Class {
    /// 5xx, timeouts, any 4xx without an RFC 6749 error body: equal-jitter exponential backoff.
    Transient,
    /// An RFC 6749 error while the Secret still holds a valid token: the slow backoff
    /// (60 s doubling), equal jitter.
    RejectedWithToken,
}

/// The shortest wait the contract allows after failure number `n` (1, 2, ...) when `remaining`
/// seconds of the token's validity are left (`lifetime` seconds in all):
/// class wait ≥ raw/2 (equal jitter), bound = max(remaining/3, min(floor, remaining)) with
/// floor = max(base, lifetime/100), wait = min(class wait, bound).
fn shortest_wait(class: Class, n: u32, remaining: f64, lifetime: f64, timing: &Timing) -> f64 {
    let base = timing.backoff_base.as_secs_f64();
    let doubling = 2f64.powi(n as i32 - 1);
    let raw = match class {
        Class::Transient => (base * doubling).min(timing.backoff_cap.as_secs_f64()),
        Class::RejectedWithToken => (60.0 * doubling).min(timing.stalled_recheck.as_secs_f64()),
    };
    let floor = base.max(lifetime / 100.0);
    let bound = (remaining / 3.0).max(floor.min(remaining));
    (raw / 2.0).min(bound)
}

/// The most attempts the contract allows within `window` seconds of a first failed attempt made
/// with `remaining` seconds of validity left: every wait at its shortest, and 20 % shorter still
/// for the whole-second timestamps the operator computes with and for timer slack.
fn most_attempts(
    class: Class,
    window: f64,
    remaining: f64,
    lifetime: f64,
    timing: &Timing,
) -> usize {
    let (mut t, mut n, mut attempts) = (0.0, 1, 1);
    while attempts < 1000 {
        let left = remaining - t;
        if left <= 0.0 {
            break;
        }
        t += 0.8 * shortest_wait(class, n, left, lifetime, timing);
        if t > window {
            break;
        }
        attempts += 1;
        n += 1;
    }
    attempts
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn faulted(env: &TestEnv, fault: &str) -> Vec<RecordedRequest> {
    env.standin
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some(fault))
        .collect()
}

/// A connection `c` whose tokens live `lifetime` and renew when 90 % of it is left: the first
/// renewal falls 2-3 s after issue, which leaves the failure policy most of the lifetime and
/// makes the remaining validity at the first failed attempt the same in every run.
async fn early_renewing_connection(prefix: &str, lifetime: Duration) -> TestEnv {
    let mut env = TestEnv::new(prefix).await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET).with_token_lifetime(lifetime),
    );
    env.start_operator();
    env.create_connection("c", json!({"renewal": {"renewBeforePercentage": 90}}))
        .await;
    env.wait_ready("c").await;
    env
}

/// The first request that met `fault`, and the token in the Secret then (its access token and
/// `expires_at`).
async fn first_faulted(env: &TestEnv, fault: &str) -> (RecordedRequest, String, Timestamp) {
    let first = eventually(
        Duration::from_secs(20),
        "the renewal meets the fault",
        || {
            let found = faulted(env, fault).into_iter().next();
            async move { found }
        },
    )
    .await;
    // Nothing can replace the token while every request fails.
    let secret = env.token_secret("c-token").await.expect("token Secret");
    let token = data(&secret, "access_token").expect("access_token");
    let expires: Timestamp = data(&secret, "expires_at").unwrap().parse().unwrap();
    (first, token, expires)
}

/// Waits for a token other than `old` in the Secret, no later than `expires` (the old one's
/// expiry).
async fn renewed_before(env: &TestEnv, old: &str, expires: Timestamp) {
    let left = Duration::try_from(expires.duration_since(Timestamp::now())).unwrap_or_default();
    let secrets = env.secrets();
    eventually(left, "a new token before the old one expires", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("c-token").await.ok()?;
            (data(&s, "access_token")? != old).then_some(())
        }
    })
    .await;
    assert!(Timestamp::now() < expires, "renewed only after expiry");
}

async fn finish_sampling(sampler: ExpirySampler) {
    let (samples, problems, sampled) = sampler.finish().await;
    assert!(problems.is_empty(), "{problems:#?}");
    // The Secret was read throughout: over the fault and the renewal (more than 4 s), at least
    // once per 750 ms on average (every 150 ms plus the time a read takes on a busy machine:
    // 350 ms measured with the whole suite running).
    assert!(sampled > Duration::from_secs(4), "sampled only {sampled:?}");
    assert!(
        samples as f64 >= sampled.as_secs_f64() / 0.75,
        "only {samples} samples of the token Secret in {sampled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_html_403_at_renewal_is_retried_within_the_tokens_validity() {
    let lifetime = Duration::from_secs(30);
    let env = early_renewing_connection("html403", lifetime).await;
    let sampler = ExpirySampler::start(env.secrets(), "c-token", Duration::from_millis(150));
    // A WAF in front of PingOne: a 403 without an RFC 6749 body says nothing about the client.
    env.standin.set_persistent_fault(Some(Fault::Status {
        status: 403,
        retry_after: None,
        body: Some(
            "<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1>\
             <p>Request blocked.</p></body></html>"
                .into(),
        ),
    }));
    let (first, old, expires) = first_faulted(&env, "status 403").await;
    let remaining = seconds_between(first.time, SystemTime::from(expires));
    println!("first failed renewal with {remaining:.1} s of validity left");

    // Transient: Reconciling, and Ready stays True while the token is valid.
    let conn = env
        .wait_reconciling("c", "TokenEndpointError", Duration::from_secs(3))
        .await;
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");

    // The fault lasts 6 s: several backoff steps (0.5, 1, 2 s nominal in tests), with room for
    // a slow machine.
    let end = first.time + Duration::from_secs(6);
    tokio::time::sleep(end.duration_since(SystemTime::now()).unwrap_or_default()).await;
    env.standin.set_persistent_fault(None);
    let window = seconds_between(first.time, SystemTime::now());

    renewed_before(&env, &old, expires).await;
    let attempts = faulted(&env, "status 403");
    let gaps: Vec<String> = attempts
        .windows(2)
        .map(|w| format!("{:.2}", seconds_between(w[0].time, w[1].time)))
        .collect();
    println!("seconds between attempts: {gaps:?}");
    let sent = attempts.len();
    let allowed = most_attempts(
        Class::Transient,
        window,
        remaining,
        lifetime.as_secs_f64(),
        &test_timing(),
    );
    println!("{sent} attempts in the {window:.1} s of the fault (the policy allows {allowed})");
    assert!(
        sent >= 3,
        "only {sent} attempts in {window:.1} s of a transient fault"
    );
    assert!(
        sent <= allowed,
        "{sent} attempts in {window:.1} s, allowed {allowed}"
    );
    finish_sampling(sampler).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_client_at_renewal_is_retried_within_the_tokens_validity() {
    let lifetime = Duration::from_secs(20);
    let env = early_renewing_connection("invalidclient", lifetime).await;
    let sampler = ExpirySampler::start(env.secrets(), "c-token", Duration::from_millis(150));
    // E.g. the secret rotated in PingOne a little before the cluster got the new one.
    env.standin.set_persistent_fault(Some(Fault::Status {
        status: 401,
        retry_after: None,
        body: Some(
            r#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#.into(),
        ),
    }));
    let (first, old, expires) = first_faulted(&env, "status 401").await;
    let remaining = seconds_between(first.time, SystemTime::from(expires));
    println!("first failed renewal with {remaining:.1} s of validity left");

    let conn = env
        .wait_stalled("c", "InvalidClient", Duration::from_secs(5))
        .await;
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");

    // With a valid token the slow backoff (30 s and more) is cut to a third of what is left:
    // the second attempt comes at most remaining/3 after the first, the third at most
    // (2/3 · remaining)/3 after that, 5/9 of the remaining validity after the first in all
    // (plus 3 s for whole-second timestamps and timers).
    let third_by = first.time + Duration::from_secs_f64(remaining * 5.0 / 9.0 + 3.0);
    eventually(
        third_by
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
        "third rejected attempt within the validity",
        || {
            let n = faulted(&env, "status 401").len();
            async move { (n >= 3).then_some(()) }
        },
    )
    .await;
    let conn = env.connections().get("c").await.unwrap();
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert_eq!(TestEnv::condition(&conn, "Stalled").reason, "InvalidClient");
    // The next attempt is in status, and never after the expiry.
    let status = env.status_json("c").await;
    let next: Timestamp = status["nextAttemptTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.nextAttemptTime: {status}"))
        .parse()
        .unwrap();
    assert!(
        next <= expires,
        "next attempt {next} after expiry {expires}"
    );

    env.standin.set_persistent_fault(None);
    let window = seconds_between(first.time, SystemTime::now());
    renewed_before(&env, &old, expires).await;
    let attempts = faulted(&env, "status 401");
    let gaps: Vec<String> = attempts
        .windows(2)
        .map(|w| format!("{:.2}", seconds_between(w[0].time, w[1].time)))
        .collect();
    println!("seconds between attempts: {gaps:?}");
    let sent = attempts.len();
    let allowed = most_attempts(
        Class::RejectedWithToken,
        window,
        remaining,
        lifetime.as_secs_f64(),
        &test_timing(),
    );
    println!("{sent} attempts in the {window:.1} s of the fault (the policy allows {allowed})");
    assert!(
        sent <= allowed,
        "{sent} attempts in {window:.1} s, allowed {allowed}"
    );
    env.wait_condition("c", "Stalled", "False", None, Duration::from_secs(5))
        .await;
    finish_sampling(sampler).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_do_not_resend_a_rejected_request() {
    let mut env = TestEnv::new("noresend").await;
    env.put_credentials("bad", CLIENT_ID, "not-the-secret")
        .await;
    env.start_operator();
    env.create_connection("c", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    env.wait_stalled("c", "InvalidClient", Duration::from_secs(30))
        .await;
    assert_eq!(env.standin.token_request_count(), 1);

    for restart in 1..=5 {
        env.stop_operator().await;
        env.start_operator();
        // The new operator has reconciled `c` once it set the connection's readiness gauge,
        // which comes after any token request a reconcile makes.
        let ns = env.ns.clone();
        let metrics = env.metrics.clone();
        eventually(
            Duration::from_secs(20),
            &format!("restart {restart}: the connection reconciled"),
            || {
                let text = metrics.encode();
                let seen = metric_value(
                    &text,
                    "pingone_operator_ready_status",
                    &[("namespace", ns.as_str()), ("name", "c")],
                );
                async move { seen.map(|_| ()) }
            },
        )
        .await;
        let sent = env.standin.token_request_count();
        assert!(
            sent <= 1,
            "restart {restart}: {sent} token requests for a connection stalled an hour ago"
        );
        env.wait_stalled("c", "InvalidClient", Duration::from_secs(5))
            .await;
    }
    // Remembered in status: the next attempt is the stalled re-check, an hour away.
    let status = env.status_json("c").await;
    let next: Timestamp = status["nextAttemptTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.nextAttemptTime: {status}"))
        .parse()
        .unwrap();
    let ahead = next.duration_since(Timestamp::now()).as_secs_f64();
    assert!(ahead > 3000.0, "next attempt only {ahead:.0} s ahead");

    // New credentials are new inputs: tried at once.
    env.put_credentials("bad", CLIENT_ID, CLIENT_SECRET).await;
    env.wait_condition("c", "Ready", "True", None, Duration::from_secs(10))
        .await;
    assert_eq!(env.standin.token_request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_during_an_outage_is_reported_as_expired() {
    let mut env = TestEnv::new("expired").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(10)),
    );
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let ready = env.wait_ready("c").await;
    let expires = ready.status.unwrap().expires_at.unwrap().0;
    env.standin.set_persistent_fault(Some(Fault::status(503)));
    let conn = env
        .wait_condition(
            "c",
            "Ready",
            "False",
            Some("TokenExpired"),
            Duration::from_secs(20),
        )
        .await;
    assert!(Timestamp::now() >= expires);
    // The failure itself stays visible where it belongs.
    let reconciling = TestEnv::condition(&conn, "Reconciling");
    assert_eq!(reconciling.status, "True");
    assert_eq!(reconciling.reason, "TokenEndpointUnavailable");
    assert!(
        reconciling.message.contains("503"),
        "{}",
        reconciling.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_auth_domain_says_the_request_was_not_sent() {
    let mut env = TestEnv::new("notsent").await;
    env.start_operator();
    env.create_connection("c", json!({"authDomain": "login.attacker.example"}))
        .await;
    let conn = env
        .wait_stalled("c", "AuthDomainNotAllowed", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.contains("not sent") && message.contains("login.attacker.example"),
        "{message}"
    );
    assert_eq!(env.standin.token_request_count(), 0);
}
