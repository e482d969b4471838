//! Renew on demand: the renew-requested-at annotation asks for a new token once per distinct
//! value, through the failure policy, and never again after a restart.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use pingone_testbed::standin::Fault;
use serde_json::json;

use crate::support::*;

async fn access_token(env: &TestEnv) -> String {
    let secret = env.token_secret("c-token").await.expect("token Secret");
    data(&secret, "access_token").expect("access_token")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renew_request_renews_once_per_value_and_never_again_after_a_restart() {
    let mut env = TestEnv::new("renew").await;
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    assert_eq!(env.standin.token_request_count(), 1);
    let first = access_token(&env).await;

    // A request: one new token, and the value is recorded as served.
    env.request_renewal("c", "2026-12-01T10:00:00Z").await;
    let status = env.wait_served("c", "2026-12-01T10:00:00Z").await;
    assert_eq!(env.standin.token_request_count(), 2);
    let second = access_token(&env).await;
    assert_ne!(first, second, "the Secret holds the new token");
    assert_eq!(
        status["conditions"][0]["status"], "True",
        "Ready after the renewal"
    );

    // A restart reconciles the connection again, and the served value asks for nothing.
    env.stop_operator().await;
    env.start_operator();
    eventually(
        Duration::from_secs(30),
        "a completed reconcile after the restart",
        || async { (env.metrics.last_successful_reconcile.get() > 0.0).then_some(()) },
    )
    .await;
    let after_restart = env.metrics.reconciles.get();
    assert_eq!(
        env.standin.token_request_count(),
        2,
        "no renewal after a restart"
    );
    assert_eq!(access_token(&env).await, second);

    // The same value again (re-applied with another annotation) asks for nothing; a new value
    // renews once more.
    env.connections()
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "yes"}}})),
        )
        .await
        .unwrap();
    env.request_renewal("c", "2026-12-01T10:05:00Z").await;
    env.wait_served("c", "2026-12-01T10:05:00Z").await;
    assert_eq!(
        env.standin.token_request_count(),
        3,
        "one request for the new value"
    );
    assert!(env.metrics.reconciles.get() > after_restart);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renew_request_goes_through_the_failure_policy_and_keeps_the_valid_token() {
    let mut env = TestEnv::new("renew-fail").await;
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    let first = access_token(&env).await;

    env.standin.set_persistent_fault(Some(Fault::status(503)));
    env.request_renewal("c", "2026-12-01T11:00:00Z").await;
    let conn = env
        .wait_reconciling("c", "TokenEndpointUnavailable", Duration::from_secs(30))
        .await;
    // The valid token stays, Ready stays True, and the request is not served yet.
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert_eq!(access_token(&env).await, first);
    assert!(conn.status.as_ref().unwrap().renew_request_served.is_none());
    // Retried on the backoff: served once PingOne answers again.
    env.standin.set_persistent_fault(None);
    env.wait_served("c", "2026-12-01T11:00:00Z").await;
    assert_ne!(access_token(&env).await, first);
}

/// A renew request is also "try again now": a connection Stalled on `invalid_client` (rechecked
/// hourly) whose problem was fixed on PingOne's side gets its token when a person asks, not an
/// hour later; the request is tried once, and a second try of the same value waits for the
/// failure policy again.
#[tokio::test(flavor = "multi_thread")]
async fn a_renew_request_retries_a_stalled_connection_now() {
    use pingone_testbed::standin::ClientRegistration;
    let mut env = TestEnv::new("renew-stalled").await;
    env.standin.remove_client(ENV_ID, CLIENT_ID);
    env.standin.add_client(ClientRegistration::new(
        ENV_ID,
        CLIENT_ID,
        "registered later",
    ));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_stalled("c", "InvalidClient", Duration::from_secs(30))
        .await;
    assert_eq!(env.standin.token_request_count(), 1);

    // Asked while still wrong: one try at once (after the 2 s floor of the tests), then the
    // hourly recheck again.
    env.request_renewal("c", "try-1").await;
    eventually(Duration::from_secs(10), "the request tried", || async {
        (env.standin.token_request_count() == 2).then_some(())
    })
    .await;
    let conn = env
        .wait_stalled("c", "InvalidClient", Duration::from_secs(5))
        .await;
    let next = conn.status.unwrap().next_attempt_time.unwrap().0;
    assert!(
        next.duration_since(jiff::Timestamp::now()).as_secs() > 3000,
        "next attempt {next}"
    );

    // A person fixes it in PingOne and asks again: a token now.
    env.standin.remove_client(ENV_ID, CLIENT_ID);
    env.standin
        .add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET));
    env.request_renewal("c", "try-2").await;
    let status = env.wait_served("c", "try-2").await;
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(env.standin.token_request_count(), 3);
}

/// A renew request right after a token was issued waits for the floor, and says so in
/// Reconciling (what `kubectl pingone renew --wait` prints), then is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_renew_request_held_by_the_floor_says_so() {
    let mut env = TestEnv::new("renew-floor").await;
    // The production floor (10 s), so that the request surely comes within it.
    let timing = pingone_operator::controller::schedule::Timing {
        min_interval: Duration::from_secs(10),
        ..test_timing()
    };
    env.start_operator_with(timing, &[]);
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    env.request_renewal("c", "right-away").await;
    let conn = env
        .wait_reconciling("c", "RenewRequestWaiting", Duration::from_secs(5))
        .await;
    let message = &TestEnv::condition(&conn, "Reconciling").message;
    assert!(
        message.contains("\"right-away\"")
            && message.contains("waits for the floor")
            && message.contains("within 10 s"),
        "{message}"
    );
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    env.wait_served("c", "right-away").await;
    assert_eq!(env.standin.token_request_count(), 2);
}
