//! Token endpoint faults: the operator keeps the valid token, stays Ready while it can, retries
//! on schedule (backoff, Retry-After) or not at all (what only a person can fix), and recovers.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pingone_operator::pingone::TokenClientConfig;
use pingone_testbed::standin::{Fault, HTML_PAGE_TITLE};
use serde_json::json;

use crate::support::*;

/// Lifetime of the tokens in these tests: renewal falls due after 40 × (1 − 0.33 − ≤0.10) ≈
/// 23–27 s, leaving time to ride out a fault before the token expires.
const LIFETIME: Duration = Duration::from_secs(40);

/// A connection with a valid token meets `fault` at its renewal: the token stays in the Secret,
/// Ready stays True, Reconciling reports `reason`; when the fault ends the next retry renews.
async fn renewal_survives(prefix: &str, fault: Fault, reason: &str) {
    let mut env = TestEnv::new(prefix).await;
    env.standin.set_token_lifetime(LIFETIME);
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    let original = env.token_secret("c-token").await.unwrap();
    let token = data(&original, "access_token").unwrap();

    env.standin.set_persistent_fault(Some(fault.clone()));
    let conn = env
        .wait_reconciling("c", reason, Duration::from_secs(40))
        .await;
    // The failed renewal changed nothing that consumers read.
    assert_eq!(
        TestEnv::condition(&conn, "Ready").status,
        "True",
        "{fault:?}"
    );
    assert_eq!(
        TestEnv::condition(&conn, "Stalled").status,
        "False",
        "{fault:?}"
    );
    let status = conn.status.clone().unwrap();
    assert!(status.failed_attempts >= 1 && status.last_failure_time.is_some());
    let message = &TestEnv::condition(&conn, "Reconciling").message;
    assert!(message.contains("retrying at"), "{message}");
    assert!(!message.contains(CLIENT_SECRET) && !message.contains(&token));
    let during = env.token_secret("c-token").await.unwrap();
    assert_eq!(
        data(&during, "access_token").as_deref(),
        Some(token.as_str()),
        "{fault:?}"
    );

    // The fault ends: the next retry (backoff capped at 10 s in tests) renews.
    env.standin.set_persistent_fault(None);
    let cleared = Instant::now();
    let secrets = env.secrets();
    eventually(Duration::from_secs(12), "renewed after the fault", || {
        let secrets = secrets.clone();
        let token = token.clone();
        async move {
            let s = secrets.get("c-token").await.ok()?;
            (data(&s, "access_token")? != token).then_some(())
        }
    })
    .await;
    println!(
        "{fault:?}: renewed {:?} after the fault ended",
        cleared.elapsed()
    );
    let conn = env
        .wait_condition("c", "Reconciling", "False", None, Duration::from_secs(5))
        .await;
    let status = conn.status.unwrap();
    assert_eq!(status.failed_attempts, 0);
    assert!(status.last_failure_time.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_http_500() {
    renewal_survives("f500", Fault::status(500), "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_http_502() {
    renewal_survives("f502", Fault::status(502), "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_http_503() {
    renewal_survives("f503", Fault::status(503), "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_http_504() {
    renewal_survives("f504", Fault::status(504), "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_a_timeout() {
    // The test client gives up after 5 s.
    renewal_survives(
        "ftimeout",
        Fault::Delay(Duration::from_secs(8)),
        "TokenEndpointUnavailable",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_a_reset_connection() {
    renewal_survives("freset", Fault::DropConnection, "TokenEndpointUnavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_malformed_json() {
    renewal_survives("fjson", Fault::MalformedJson, "TokenEndpointError").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_a_missing_access_token() {
    renewal_survives(
        "fmissing",
        Fault::MissingField("access_token".into()),
        "TokenEndpointError",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_expires_in_zero() {
    renewal_survives("fzero", Fault::ExpiresIn(0), "TokenEndpointError").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_an_absurd_expires_in() {
    renewal_survives(
        "fabsurd",
        Fault::ExpiresIn(10_000_000_000),
        "TokenEndpointError",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rides_out_an_oversized_body() {
    renewal_survives("fbig", Fault::Oversized(1024 * 1024), "TokenEndpointError").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_not_followed() {
    let mut env = TestEnv::new("redirect").await;
    env.standin
        .set_persistent_fault(Some(Fault::Redirect(format!(
            "https://auth.pingone.com/{ENV_ID}/as/token"
        ))));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_reconciling("c", "TokenEndpointError", Duration::from_secs(20))
        .await;
    assert!(
        TestEnv::condition(&conn, "Reconciling")
            .message
            .contains("302")
    );
    let requests = env.standin.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.status == 302 && r.sni.as_deref() == Some("auth.pingone.eu")),
        "a redirect was followed: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limiting_waits_exactly_for_retry_after() {
    let mut env = TestEnv::new("ratelimit").await;
    env.standin
        .push_fault(Fault::status_with_retry_after(429, 4), 1);
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_reconciling("c", "RateLimited", Duration::from_secs(20))
        .await;
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "False");
    env.wait_ready("c").await;
    let requests = env.standin.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].status, 429);
    let waited = requests[1]
        .time
        .duration_since(requests[0].time)
        .unwrap_or_default();
    // Retry-After is in whole seconds and the status times are too; the request times are exact.
    assert!(
        waited >= Duration::from_millis(3900),
        "retried after {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(7),
        "retried only after {waited:?}"
    );
}

/// A WAF's HTML page on a 403 is not PingOne refusing anything: the condition and the Event say
/// the page came from something between the cluster and PingOne, and it is retried.
#[tokio::test(flavor = "multi_thread")]
async fn an_html_403_is_reported_as_coming_from_between_the_cluster_and_pingone() {
    let mut env = TestEnv::new("html403").await;
    env.standin
        .set_persistent_fault(Some(Fault::html_page(403)));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_reconciling("c", "TokenEndpointError", Duration::from_secs(20))
        .await;
    let message = &TestEnv::condition(&conn, "Reconciling").message;
    let expected = format!(
        "the token request to auth.pingone.eu was answered with an HTML page (HTTP 403, titled \
         \"{HTML_PAGE_TITLE}\"), not by PingOne, which answers with JSON: it came from something \
         between the cluster and PingOne (a proxy, WAF or CDN); check the egress proxy, firewall \
         or CDN rules for auth.pingone.eu; retrying at "
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(!message.contains("PingOne rejected"), "{message}");
    assert!(!message.contains(CLIENT_SECRET), "{message}");
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
    // The Warning Event says the same.
    let events = eventually(
        Duration::from_secs(10),
        "a TokenEndpointError Event",
        || async {
            let events = events_for(&env, "c", "TokenEndpointError").await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await;
    let note = events[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("between the cluster and PingOne (a proxy, WAF or CDN)"),
        "{note}"
    );
    // Retried, as a transient failure.
    let api = env.connections();
    eventually(Duration::from_secs(15), "a second attempt", || {
        let api = api.clone();
        async move { (api.get("c").await.ok()?.status?.failed_attempts >= 2).then_some(()) }
    })
    .await;
}

/// PingOne's 404 for an environment that is not there: the message names the environment id
/// and the domain that was tried.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_environment_is_named_with_the_domain_tried() {
    let mut env = TestEnv::new("noenv").await;
    env.start_operator();
    let missing = "0b8d4c1e-6f0a-4e47-9d55-2a7c3e9f1b64";
    env.create_connection(
        "c",
        json!({"authDomain": "auth.pingone.ca", "environmentId": missing}),
    )
    .await;
    let conn = env
        .wait_stalled("c", "EnvironmentNotFound", Duration::from_secs(20))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.starts_with(&format!(
            "PingOne found no environment {missing} at auth.pingone.ca (HTTP 404, NOT_FOUND: "
        )),
        "{message}"
    );
    assert!(
        message.contains("check environmentId, and that authDomain is the environment's region"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_requests_stall_without_retries_until_something_changes() {
    let mut env = TestEnv::new("stall").await;
    env.standin.set_persistent_fault(Some(Fault::Status {
        status: 400,
        retry_after: None,
        body: Some(r#"{"error":"unauthorized_client","error_description":"Client not authorized for grant type"}"#.into()),
    }));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_stalled("c", "UnauthorizedClient", Duration::from_secs(20))
        .await;
    assert!(TestEnv::condition(&conn, "Stalled").message.contains("400"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(env.standin.token_request_count(), 1, "no retry storm");
    // A spec change is something a person did: one new attempt.
    env.standin.set_persistent_fault(None);
    let api = env.connections();
    api.patch(
        "c",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"renewal": {"renewBeforePercentage": 40}}})),
    )
    .await
    .unwrap();
    env.wait_ready("c").await;
    assert_eq!(env.standin.token_request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_retried_with_backoff() {
    let mut env = TestEnv::new("refused").await;
    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tokens = pingone_client(TokenClientConfig {
        extra_ca_pem: Some(env.standin.ca_pem().as_bytes().to_vec()),
        host_overrides: regional_overrides(closed),
        ..TokenClientConfig::default()
    });
    env.start_operator_custom(tokens, test_timing());
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_reconciling("c", "TokenEndpointUnavailable", Duration::from_secs(20))
        .await;
    let message = &TestEnv::condition(&conn, "Reconciling").message;
    assert!(message.contains("auth.pingone.eu"), "{message}");
    // Retried: the attempts count up.
    let api = env.connections();
    eventually(Duration::from_secs(15), "several attempts", || {
        let api = api.clone();
        async move { (api.get("c").await.ok()?.status?.failed_attempts >= 3).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let mut env = TestEnv::new("tls").await;
    // The system roots only: the stand-in's test CA is not trusted.
    let addr = env.standin.addr();
    let tokens = pingone_client(TokenClientConfig {
        host_overrides: regional_overrides(addr),
        ..TokenClientConfig::default()
    });
    env.start_operator_custom(tokens, test_timing());
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_reconciling("c", "TokenEndpointUnavailable", Duration::from_secs(20))
        .await;
    let message = TestEnv::condition(&conn, "Reconciling")
        .message
        .to_lowercase();
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(
        env.standin.token_request_count(),
        0,
        "no request over an unverified connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_never_sent_to_a_host_outside_the_allow_list() {
    let mut env = TestEnv::new("allowlist").await;
    // A listener that counts every connection made to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let tokens = pingone_client(TokenClientConfig {
        extra_ca_pem: Some(env.standin.ca_pem().as_bytes().to_vec()),
        host_overrides: vec![
            ("login.attacker.example".into(), trap),
            ("auth.pingone.eu".into(), trap),
        ],
        ..TokenClientConfig::default()
    });
    env.start_operator_custom(tokens, test_timing());
    env.create_connection("c", json!({"authDomain": "login.attacker.example"}))
        .await;
    let conn = env
        .wait_stalled("c", "AuthDomainNotAllowed", Duration::from_secs(20))
        .await;
    assert!(
        TestEnv::condition(&conn, "Ready")
            .message
            .contains("login.attacker.example")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a connection reached the trap"
    );
}
