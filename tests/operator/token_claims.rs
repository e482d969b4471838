//! The token's claims in status: JWTs verified against the environment's JWKS (cached per
//! environment, refetched for an unknown kid at most once per interval), what the token grants
//! shown, and what is wrong with it reported, with the token still delivered.

use std::time::{Duration, Instant};

use pingone_operator::pingone::TokenClientConfig;
use pingone_testbed::standin::{ClientRegistration, Fault};
use serde_json::json;

use crate::support::*;

const SCOPES: [&str; 2] = ["p1:read:user", "p1:update:user"];

async fn setup(prefix: &str, jwks_min_refetch: Duration) -> TestEnv {
    let mut env = TestEnv::new(prefix).await;
    env.standin
        .add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET).with_scopes(SCOPES));
    let addr = env.standin.addr();
    let tokens = pingone_client(TokenClientConfig {
        extra_ca_pem: Some(env.standin.ca_pem().as_bytes().to_vec()),
        host_overrides: regional_overrides(addr),
        jwks_min_refetch,
        ..TokenClientConfig::default()
    });
    env.start_operator_custom(tokens, test_timing());
    env
}

fn verified(status: &serde_json::Value) -> Option<&serde_json::Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "TokenVerified")
}

async fn wait_verified(env: &TestEnv, name: &str, want: &str) -> serde_json::Value {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let status = env.status_json(name).await;
            if verified(&status).is_some_and(|c| c["reason"] == want) {
                return status;
            }
            *last.lock().unwrap() = status;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "{name}: TokenVerified {want} not within 30 s; last status: {}",
            last.lock().unwrap()
        )
    })
}

async fn skew_metric(env: &TestEnv, name: &str) -> Option<f64> {
    let text = env.metrics.encode();
    metric_value(
        &text,
        "pingone_operator_token_expiry_skew_seconds",
        &[("namespace", env.ns.as_str()), ("name", name)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_is_verified_with_the_cached_jwks_and_its_claims_shown() {
    let env = setup("claims", Duration::from_secs(1)).await;
    env.create_connection("c", json!({"scopes": SCOPES})).await;
    let status = wait_verified(&env, "c", "TokenVerified").await;
    let fetched = Instant::now();
    assert_eq!(verified(&status).unwrap()["status"], "True");
    let claims = &status["tokenClaims"];
    assert_eq!(claims["clientId"], CLIENT_ID);
    assert_eq!(claims["environmentId"], ENV_ID);
    assert_eq!(
        claims["issuer"],
        format!("https://auth.pingone.eu/{ENV_ID}/as")
    );
    assert_eq!(claims["scopes"], json!(SCOPES));
    assert!(
        !claims["audience"].as_array().unwrap().is_empty(),
        "{claims}"
    );
    assert!(
        skew_metric(&env, "c").await.unwrap().abs() <= 2.0,
        "exp agrees with expires_in"
    );
    assert_eq!(env.standin.jwks_requests(), 1);

    // A second connection of the environment uses the cached JWKS.
    env.create_connection("d", json!({"scopes": SCOPES})).await;
    wait_verified(&env, "d", "TokenVerified").await;
    assert_eq!(env.standin.jwks_requests(), 1, "one JWKS per environment");

    // PingOne rotates its signing key: a token with the new kid makes the operator fetch the
    // JWKS again (once the refetch interval, 1 s here, has passed since the last fetch).
    env.standin.rotate_signing_key().await;
    let since = fetched.elapsed();
    if since < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_secs(1) - since).await;
    }
    env.request_renewal("c", "2026-12-01T10:00:00Z").await;
    env.wait_served("c", "2026-12-01T10:00:00Z").await;
    let status = wait_verified(&env, "c", "TokenVerified").await;
    assert!(
        verified(&status).unwrap()["message"]
            .as_str()
            .unwrap()
            .contains(&env.standin.kid()),
        "{status}"
    );
    assert_eq!(env.standin.jwks_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_does_not_verify_is_reported_and_still_delivered() {
    // The default refetch interval (a minute): an unknown kid right after the first fetch
    // does not fetch again.
    let env = setup("claims-bad", pingone_operator::pingone::JWKS_MIN_REFETCH).await;
    env.create_connection("c", json!({})).await;
    wait_verified(&env, "c", "TokenVerified").await;
    assert_eq!(env.standin.jwks_requests(), 1);

    env.standin.push_fault(Fault::BadSignature, 1);
    env.request_renewal("c", "1").await;
    env.wait_served("c", "1").await;
    let status = wait_verified(&env, "c", "TokenSignatureInvalid").await;
    assert_eq!(verified(&status).unwrap()["status"], "False");
    assert!(
        status["tokenClaims"].is_null(),
        "no claims from an unverified token"
    );
    assert_eq!(status["conditions"][0]["status"], "True", "still Ready");
    let secret = env.token_secret("c-token").await.unwrap();
    let delivered = data(&secret, "access_token").unwrap();
    assert_eq!(
        env.standin.issued_tokens().last(),
        Some(&delivered),
        "the token is delivered"
    );
    let events = events_for(&env, "c", "TokenSignatureInvalid").await;
    assert_eq!(events.len(), 1, "one Warning Event");
    assert!(
        !format!("{events:?}").contains(&delivered),
        "no token in the Event"
    );

    env.standin.push_fault(Fault::UnknownKid, 1);
    env.request_renewal("c", "2").await;
    env.wait_served("c", "2").await;
    let status = wait_verified(&env, "c", "TokenKeyUnknown").await;
    assert!(
        verified(&status).unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("no-such-key")
    );
    assert_eq!(
        env.standin.jwks_requests(),
        1,
        "no refetch within the interval"
    );

    // The next good token verifies again.
    env.request_renewal("c", "3").await;
    env.wait_served("c", "3").await;
    wait_verified(&env, "c", "TokenVerified").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skew_missing_scopes_and_opaque_tokens() {
    let env = setup("claims-skew", Duration::from_secs(60)).await;
    env.standin.push_fault(Fault::ExpSkew(300), 1);
    env.create_connection("c", json!({"scopes": SCOPES})).await;
    let status = wait_verified(&env, "c", "TokenExpirySkew").await;
    // The skew is counted from when the operator sent the request, so a second boundary
    // between that and the stand-in's clock reading can move it by one either way.
    let message = verified(&status).unwrap()["message"].as_str().unwrap();
    let said = message
        .strip_prefix("The token's exp is ")
        .and_then(|rest| rest.split_once(" s after"))
        .and_then(|(seconds, _)| seconds.parse::<i64>().ok());
    assert!(said.is_some_and(|s| (299..=301).contains(&s)), "{message}");
    let skew = skew_metric(&env, "c").await.unwrap();
    assert!((298.0..=302.0).contains(&skew), "{skew}");
    assert_eq!(status["conditions"][0]["status"], "True", "still Ready");

    env.standin
        .push_fault(Fault::GrantOnly(vec![SCOPES[0].to_string()]), 1);
    env.request_renewal("c", "1").await;
    env.wait_served("c", "1").await;
    let status = wait_verified(&env, "c", "ScopesNotGranted").await;
    let message = verified(&status).unwrap()["message"].as_str().unwrap();
    assert!(message.contains(SCOPES[1]), "{message}");
    assert_eq!(status["tokenClaims"]["scopes"], json!([SCOPES[0]]));

    // An opaque token: accepted as it is, no claims, no condition.
    env.standin.push_fault(Fault::OpaqueToken, 1);
    env.request_renewal("c", "2").await;
    env.wait_served("c", "2").await;
    let status = env.status_json("c").await;
    assert!(verified(&status).is_none(), "{status}");
    assert!(status["tokenClaims"].is_null());
    assert_eq!(status["conditions"][0]["status"], "True");
}

/// An unreachable JWKS: the tokens are delivered and Ready, `TokenVerified` says the check
/// could not be made, and the environment's JWKS is rechecked with backoff (1, 2, 4 s … here,
/// from a 1 s minimum; a minute in production) by one task for all its connections, which are
/// not reconciled meanwhile (no Secret read, no status write); the Warning is published once.
/// Reachable again, every waiting token is verified.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_jwks_is_rechecked_with_backoff_and_warned_once() {
    let env = setup("jwks-down", Duration::from_secs(1)).await;
    env.standin.set_jwks_unavailable(true);
    let names = ["c", "d", "e"];
    for name in names {
        env.create_connection(name, json!({})).await;
    }
    for name in names {
        env.wait_ready(name).await;
        wait_verified(&env, name, "JwksUnavailable").await;
    }
    let start = env.standin.jwks_requests();
    let reconciles = env.metrics.reconciles.get();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let rechecks = env.standin.jwks_requests() - start;
    let reconciled = env.metrics.reconciles.get() - reconciles;
    println!(
        "{rechecks} JWKS requests and {reconciled} reconciles in {window:?} with the JWKS down"
    );
    // Every second would be about 10 per connection; one environment backing off 1, 2, 4, 8 s
    // leaves at most 4 for all three.
    assert!(
        (1..=4).contains(&rechecks),
        "{rechecks} JWKS requests in {window:?}"
    );
    assert_eq!(reconciled, 0, "connections reconciled while waiting");
    for name in names {
        let warnings = events_for(&env, name, "JwksUnavailable").await;
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].series.is_none(),
            "the Warning was repeated: {:?}",
            warnings[0].series
        );
    }

    env.standin.set_jwks_unavailable(false);
    for name in names {
        wait_verified(&env, name, "TokenVerified").await;
    }
}

/// A slow JWKS fetch for one token (an unknown `kid`) does not hold up the verification of
/// another token of the environment whose key is cached: it is verified while that fetch is
/// still running.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_jwks_fetch_does_not_hold_up_tokens_whose_key_is_cached() {
    let env = setup("jwks-slow", Duration::from_secs(1)).await;
    env.create_connection("a", json!({})).await;
    wait_verified(&env, "a", "TokenVerified").await;
    let fetched = env.standin.jwks_requests();
    // The cached keys must be older than the 1 s minimum refetch interval for an unknown kid
    // to fetch them again: that is a time, not an event to wait for.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The next token names a key the JWKS lacks: verifying it fetches the JWKS, slowly.
    env.standin.set_jwks_delay(Duration::from_secs(8));
    env.standin.push_fault(Fault::UnknownKid, 1);
    env.create_connection("b", json!({})).await;
    eventually(
        Duration::from_secs(10),
        "the slow fetch started",
        || async { (env.standin.jwks_requests() > fetched).then_some(()) },
    )
    .await;
    let started = Instant::now();
    env.create_connection("c", json!({})).await;
    wait_verified(&env, "c", "TokenVerified").await;
    // The slow fetch has not answered yet: b's check is still waiting for it.
    let b = env.status_json("b").await;
    assert!(
        verified(&b).is_none(),
        "c was verified only after b's fetch ({:?}): {b}",
        started.elapsed()
    );
    wait_verified(&env, "b", "TokenKeyUnknown").await;
    env.standin.set_jwks_delay(Duration::ZERO);
}
