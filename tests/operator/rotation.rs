//! Rotation end to end with short-lived tokens.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn with_10s_tokens_the_secret_always_holds_an_unexpired_token_for_a_minute() {
    let mut env = TestEnv::new("rotation").await;
    env.standin.set_token_lifetime(Duration::from_secs(10));
    env.start_operator();
    env.create_connection("short", json!({})).await;
    env.wait_ready("short").await;
    let start = Instant::now();
    let secrets = env.secrets();
    let mut tokens = std::collections::BTreeSet::new();
    let mut renewals = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        let s = secrets.get("short-token").await.unwrap();
        let token = data(&s, "access_token").unwrap();
        let claims = env.standin.verify_token(&token).expect("valid JWT");
        let exp = claims["exp"].as_i64().unwrap();
        let now = jiff::Timestamp::now().as_second();
        assert!(
            exp > now,
            "the Secret held an expired token (exp {exp}, now {now})"
        );
        if tokens.insert(token) {
            let a = s.annotations();
            renewals.push((
                a["pingone.tokenops.dev/issued-at"].clone(),
                a["pingone.tokenops.dev/renew-at"].clone(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A renewed token renews 33% (3.3 s) before expiry, brought forward by up to 10% (1 s):
    // 5.7-6.7 s after issue (whole seconds: 5-7). The first token renews anywhere from 17% of
    // its lifetime (1.7 s) to that point. Over 60 s that is 8 to 11 renewals after the first
    // token, as many as 20 s tokens give in two minutes, each with half the time to spare.
    let requests = env.standin.token_request_count();
    assert!((9..=13).contains(&requests), "{requests} token requests");
    for (i, (issued, renew)) in renewals.iter().enumerate() {
        let issued: jiff::Timestamp = issued.parse().unwrap();
        let renew: jiff::Timestamp = renew.parse().unwrap();
        let after = renew.duration_since(issued).as_secs_f64();
        let range = if i == 0 { 1.0..=7.0 } else { 5.0..=7.0 };
        assert!(
            range.contains(&after),
            "token {i}: renewal {after}s after issue"
        );
    }
    assert!(tokens.len() >= 8, "{} distinct tokens seen", tokens.len());
    let conn = env.connections().get("short").await.unwrap();
    assert_eq!(conn.status.unwrap().failed_attempts, 0);
}
