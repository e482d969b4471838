//! Conditions that people and tools read: reasons and messages for each kind of failure, and
//! `kubectl wait`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;

use crate::support::*;

/// Waits for Stalled=True with `reason` and checks Ready=False with the same reason and a
/// message containing `needle`.
async fn expect_stalled(env: &TestEnv, name: &str, reason: &str, needle: &str) {
    let conn = env
        .wait_stalled(name, reason, Duration::from_secs(30))
        .await;
    let ready = TestEnv::condition(&conn, "Ready");
    assert_eq!(ready.status, "False", "{name}");
    assert_eq!(ready.reason, reason, "{name}");
    assert!(
        ready.message.contains(needle),
        "{name}: {:?} lacks {needle:?}",
        ready.message
    );
    let stalled = TestEnv::condition(&conn, "Stalled");
    assert!(
        stalled.message.contains(needle),
        "{name}: {:?}",
        stalled.message
    );
    assert_eq!(TestEnv::condition(&conn, "Reconciling").status, "False");
    let text = serde_json::to_string(&conn.status).unwrap();
    assert!(
        !text.contains(CLIENT_SECRET),
        "status leaks the client secret"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_credentials_secret_is_named_and_its_creation_is_picked_up() {
    let mut env = TestEnv::new("nosecret").await;
    env.start_operator();
    env.create_connection("c", json!({"credentialsSecretRef": {"name": "later"}}))
        .await;
    expect_stalled(&env, "c", "CredentialsNotFound", "later").await;
    env.put_credentials("later", CLIENT_ID, CLIENT_SECRET).await;
    env.wait_ready("c").await;
    let conn = env.connections().get("c").await.unwrap();
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_is_named() {
    let mut env = TestEnv::new("nokey").await;
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "half"},
        "stringData": {"clientId": CLIENT_ID},
    }))
    .unwrap();
    env.secrets()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env.start_operator();
    env.create_connection("c", json!({"credentialsSecretRef": {"name": "half"}}))
        .await;
    expect_stalled(&env, "c", "CredentialsKeyMissing", "clientSecret").await;
    assert_eq!(env.standin.token_request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_client_secret_stalls_without_a_retry_storm() {
    let mut env = TestEnv::new("wrongsecret").await;
    env.put_credentials("bad", CLIENT_ID, "not-the-secret")
        .await;
    env.start_operator();
    env.create_connection("c", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    expect_stalled(&env, "c", "InvalidClient", "401").await;
    // No retry until spec or credentials change (the slow re-check is an hour away).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.standin.token_request_count(), 1);
    let conn = env.connections().get("c").await.unwrap();
    let status = conn.status.unwrap();
    assert_eq!(status.failed_attempts, 1);
    assert!(status.last_failure_time.is_some());
    // Fixing the credentials fixes the connection at once.
    env.put_credentials("bad", CLIENT_ID, CLIENT_SECRET).await;
    env.wait_ready("c").await;
    let conn = env.connections().get("c").await.unwrap();
    let status = conn.status.unwrap();
    assert_eq!(status.failed_attempts, 0);
    assert!(status.last_failure_time.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scope_pingone_refuses_is_reported() {
    let mut env = TestEnv::new("badscope").await;
    env.start_operator();
    env.create_connection("c", json!({"scopes": ["payroll:admin"]}))
        .await;
    expect_stalled(&env, "c", "InvalidScope", "invalid_scope").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_domain_outside_the_allow_list_gets_no_request() {
    let mut env = TestEnv::new("notallowed").await;
    env.start_operator();
    env.create_connection("c", json!({"authDomain": "login.attacker.example"}))
        .await;
    expect_stalled(&env, "c", "AuthDomainNotAllowed", "login.attacker.example").await;
    assert_eq!(env.standin.connection_count(), 0, "no connection attempted");
    assert_eq!(env.standin.token_request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_wait_succeeds_for_a_good_connection_and_times_out_for_a_bad_one() {
    let mut env = TestEnv::new("kwait").await;
    env.put_credentials("bad", CLIENT_ID, "wrong").await;
    env.start_operator();
    env.create_connection("good", json!({})).await;
    env.create_connection("bad", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    let ns = env.ns.clone();
    let kubectl = |name: &str, timeout: &str| {
        let mut cmd = env.cp.kubectl();
        cmd.args([
            "wait",
            "--for=condition=Ready",
            &format!("pingoneconnection/{name}"),
            "-n",
            &ns,
            &format!("--timeout={timeout}"),
        ]);
        cmd
    };
    let good = kubectl("good", "30s");
    assert!(run_ok(good, "").await.contains("condition met"));

    env.wait_stalled("bad", "InvalidClient", Duration::from_secs(30))
        .await;
    let mut bad = kubectl("bad", "3s");
    let out = tokio::task::spawn_blocking(move || bad.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_credentials_keep_ready_until_the_token_expires_then_not() {
    let mut env = TestEnv::new("revoked").await;
    // The renewal that meets the revoked secret comes 1.7-6.7 s after issue, 3.3 s or more
    // before expiry.
    env.standin.set_token_lifetime(Duration::from_secs(10));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let ready = env.wait_ready("c").await;
    let expires = ready.status.unwrap().expires_at.unwrap().0;
    // The secret is rotated in PingOne but not yet in the cluster.
    env.standin
        .add_client(pingone_testbed::standin::ClientRegistration::new(
            ENV_ID,
            CLIENT_ID,
            "rotated-elsewhere",
        ));
    let conn = env
        .wait_stalled("c", "InvalidClient", Duration::from_secs(30))
        .await;
    // The renewal failed, but the token in the Secret is still good.
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert!(jiff::Timestamp::now() < expires);
    // When it expires, Ready turns False on its own, saying so; the cause stays in Stalled.
    let conn = env
        .wait_condition(
            "c",
            "Ready",
            "False",
            Some("TokenExpired"),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(TestEnv::condition(&conn, "Stalled").reason, "InvalidClient");
    let flipped = TestEnv::condition(&conn, "Ready").last_transition_time.0;
    let late = flipped.duration_since(expires).as_secs_f64();
    assert!(
        (0.0..=2.0).contains(&late),
        "Ready turned False {late} s after expiry"
    );
}
