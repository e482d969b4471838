//! Client secret rotation through the Management API: the new secret lands in the credentials
//! Secret in one change and is proven with a token; a missing role is a condition, not a loop;
//! a SIGKILL at each step leaves a secret PingOne accepts and the connection Ready.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use pingone_operator::controller::rotation::{PREVIOUS_EXPIRES_AT, ROTATED_AT};
use pingone_operator::pingone::{ClientAuth, SecretString, TokenRequest};
use pingone_testbed::standin::{ClientRegistration, Fault};
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

pub(crate) const ROTATION: &str = "ClientSecretRotation";

/// Registers the test client with the permission to rotate its secret (or not).
pub(crate) fn register(env: &TestEnv, may_rotate: bool) {
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET).with_secret_rotation(may_rotate),
    );
}

/// Records on the credentials Secret that its secret was last rotated two days ago: with
/// rotateEvery 24h, a rotation is due.
pub(crate) async fn mark_due(env: &TestEnv) {
    let long_ago = Timestamp::now() - SignedDuration::from_hours(48);
    let patch = json!({"metadata": {"annotations": {ROTATED_AT: long_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}});
    env.secrets()
        .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotation set");
}

/// Makes a rotation due with PingOne's answer held after the rotation was committed; returns
/// once the answer is held (`env.standin.release_held()` lets it go).
pub(crate) async fn hold_the_next_answer(env: &TestEnv) {
    env.standin.push_management_fault(Fault::HoldAfterCommit, 1);
    mark_due(env).await;
    eventually(Duration::from_secs(20), "the answer held", || async {
        (env.standin.held_requests() == 1).then_some(())
    })
    .await;
}

/// Waits until `name`'s ClientSecretRotation is True with SecretRotated: rotated and proven.
pub(crate) async fn wait_rotated(
    env: &TestEnv,
    name: &str,
    timeout: Duration,
) -> pingone_operator::api::PingOneConnection {
    env.wait_condition(name, ROTATION, "True", Some("SecretRotated"), timeout)
        .await
}

pub(crate) async fn secret_in_creds(env: &TestEnv) -> String {
    let s = env.secrets().get("creds").await.unwrap();
    data(&s, "clientSecret").unwrap()
}

/// Whether PingOne (the stand-in) gives a token for `secret`, asked directly.
pub(crate) async fn accepted(env: &TestEnv, secret: &str) -> bool {
    let secret = SecretString::from(secret);
    env.token_client(&[])
        .request_token(&TokenRequest {
            auth_domain: "auth.pingone.eu",
            environment_id: ENV_ID,
            client_id: CLIENT_ID,
            auth: ClientAuth::SecretPost(&secret),
            scopes: &[],
        })
        .await
        .is_ok()
}

pub(crate) fn rotation_spec() -> serde_json::Value {
    json!({"clientSecretRotation": {"rotateEvery": "24h", "keepPreviousFor": "1h"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_writes_the_new_secret_in_one_change_and_proves_it() {
    let mut env = TestEnv::new("rotate").await;
    register(&env, true);
    mark_due(&env).await;
    // Everything a consumer of the credentials Secret sees from now on.
    // (clientSecret, rotated-at annotation) of every version seen.
    type Versions = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;
    let seen: Versions = Arc::default();
    let watch = {
        let seen = seen.clone();
        let stream = watcher(
            env.secrets(),
            watcher::Config::default().fields("metadata.name=creds"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) = event {
                    let annotation = s
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ROTATED_AT).cloned());
                    seen.lock()
                        .unwrap()
                        .push((data(&s, "clientSecret"), annotation));
                }
            }
        })
    };
    let started = Timestamp::now();
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    let conn = wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    let finished = Timestamp::now();
    let status = conn.status.clone().unwrap();

    // The Secret holds PingOne's new secret; the old one is PingOne's previous, for an hour.
    let new_secret = secret_in_creds(&env).await;
    assert_ne!(new_secret, CLIENT_SECRET);
    assert_eq!(
        env.standin.current_secret(ENV_ID, CLIENT_ID).as_deref(),
        Some(new_secret.as_str())
    );
    let (previous, until) = env.standin.previous_secret(ENV_ID, CLIENT_ID).unwrap();
    assert_eq!(previous, CLIENT_SECRET);
    let until = Timestamp::try_from(until).unwrap();
    let hour = SignedDuration::from_hours(1);
    assert!(
        // Whole seconds on the wire: up to half a second either way.
        until >= started + hour - SignedDuration::from_secs(1)
            && until <= finished + hour + SignedDuration::from_secs(1),
        "previous secret kept until {until}"
    );

    // Status: rotated, proven, the next one a day later, the previous secret's end.
    let last = status.last_credential_rotation_time.clone().unwrap().0;
    assert!(
        last >= started - SignedDuration::from_secs(1) && last <= finished,
        "{last}"
    );
    assert_eq!(
        status.next_credential_rotation_time.clone().unwrap().0,
        last + SignedDuration::from_hours(24)
    );
    let shown_until = status.previous_client_secret_expires_at.clone().unwrap().0;
    assert!(
        shown_until.duration_since(until).abs() < SignedDuration::from_secs(1),
        "{shown_until} vs {until}"
    );
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    let creds = env.secrets().get("creds").await.unwrap();
    let annotations = creds.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(ROTATED_AT).map(String::as_str),
        Some(last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().as_str())
    );
    assert!(annotations.contains_key(PREVIOUS_EXPIRES_AT));

    // The proof: the token in the Secret came from a request with the new secret.
    let requests = env.standin.requests();
    let proof = requests.last().unwrap();
    assert!(
        proof.status == 200 && proof.client_secret_ok && !proof.used_previous_secret,
        "{proof:?}"
    );
    // One rotation: the connection's first token, the Management API token, the proof.
    let management = env.standin.management_requests();
    assert_eq!(management.len(), 1, "{management:?}");
    assert!(management[0].rotated && management[0].host == "api.pingone.eu");
    assert_eq!(management[0].caller_client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let metrics = env.metrics.encode();
    let rotations = metric_value(
        &metrics,
        "pingone_operator_client_secret_rotations_total",
        &[("name", "rot"), ("result", "success")],
    );
    assert_eq!(rotations, Some(1.0), "{metrics}");

    // Consumers of the credentials Secret saw the secret and its rotation time change together.
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let changes: Vec<_> = seen.windows(2).filter(|w| w[0].0 != w[1].0).collect();
    assert_eq!(changes.len(), 1, "one change of the secret: {}", seen.len());
    for (secret, annotation) in &seen {
        let rotated = secret.as_deref() == Some(new_secret.as_str());
        let marked_now = annotation
            .as_deref()
            .and_then(|a| a.parse::<Timestamp>().ok())
            .is_some_and(|t| t >= started - SignedDuration::from_secs(1));
        assert_eq!(
            rotated, marked_now,
            "secret and rotation time change at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_role_is_a_condition_and_tokens_go_on() {
    let mut env = TestEnv::new("rotate-403").await;
    register(&env, false);
    mark_due(&env).await;
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    let conn = env
        .wait_condition(
            "rot",
            ROTATION,
            "False",
            Some("ManagementApiForbidden"),
            Duration::from_secs(30),
        )
        .await;
    let failed_at = Timestamp::now();
    let message = &TestEnv::condition(&conn, ROTATION).message;
    assert!(
        message.contains("applications:update:secret") && message.contains("Environment Admin"),
        "{message}"
    );
    assert!(
        message.contains("token issuance is not affected"),
        "{message}"
    );
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    let next = conn
        .status
        .unwrap()
        .next_credential_rotation_time
        .unwrap()
        .0;
    assert!(
        next >= failed_at + SignedDuration::from_secs(4 * 60),
        "slow backoff: next attempt at {next}, failed at {failed_at}"
    );

    // More reconciles (a change to the credentials Secret wakes the controller) do not call the
    // API again.
    for i in 0..3 {
        let before = env.metrics.reconciles.get();
        let patch = json!({"metadata": {"annotations": {"nudge": i.to_string()}}});
        env.secrets()
            .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "a reconcile", || async {
            (env.metrics.reconciles.get() > before).then_some(())
        })
        .await;
    }
    assert_eq!(env.standin.management_requests().len(), 1);
    assert_eq!(
        secret_in_creds(&env).await,
        CLIENT_SECRET,
        "the Secret is untouched"
    );
    let conn = env.wait_ready("rot").await;
    assert_eq!(TestEnv::condition(&conn, ROTATION).status, "False");
}

/// Where the operator is killed during a rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KillPoint {
    /// Rotation decided, its Management API token being requested: nothing changed at PingOne.
    BeforeCall,
    /// PingOne rotated and answered; the operator never wrote the new secret.
    AfterAnswer,
    /// The new secret is in the credentials Secret; the token that proves it is in flight.
    AfterWrite,
}

async fn kill_during_rotation(point: KillPoint, prefix: &str) {
    let env = TestEnv::new(prefix).await;
    register(&env, true);
    let args = ["--leader-election=false"];
    let mut first = OperatorProcess::start(&env, &args);
    first.wait_serving(Duration::from_secs(30)).await;
    env.create_connection("kp", rotation_spec()).await;
    env.wait_ready("kp").await;
    match point {
        // The next token request is the Management API token: hold it.
        KillPoint::BeforeCall => env.standin.push_fault(Fault::Hold, 1),
        KillPoint::AfterAnswer => env.standin.push_management_fault(Fault::HoldAfterCommit, 1),
        // The Management API token passes; the proof after the write is held.
        KillPoint::AfterWrite => {
            env.standin
                .push_fault(Fault::Delay(Duration::from_millis(1)), 1);
            env.standin.push_fault(Fault::Hold, 1);
        }
    }
    mark_due(&env).await;
    eventually(Duration::from_secs(20), "a held request", || async {
        (env.standin.held_requests() == 1).then_some(())
    })
    .await;
    if point == KillPoint::AfterWrite {
        eventually(
            Duration::from_secs(10),
            "the new secret written",
            || async {
                let current = env.standin.current_secret(ENV_ID, CLIENT_ID)?;
                (secret_in_creds(&env).await == current).then_some(())
            },
        )
        .await;
    }
    first.kill();
    env.standin.release_held();

    // With no operator running, the Secret holds a secret PingOne accepts.
    let held = secret_in_creds(&env).await;
    assert!(
        accepted(&env, &held).await,
        "{point:?}: the Secret's secret is refused"
    );
    let by_previous = env.standin.requests().last().unwrap().used_previous_secret;
    assert_eq!(
        by_previous,
        point == KillPoint::AfterAnswer,
        "{point:?}: only a lost answer leaves the previous secret in use"
    );

    let mut second = OperatorProcess::start(&env, &args);
    second.wait_serving(Duration::from_secs(30)).await;
    if point == KillPoint::AfterAnswer {
        // PingOne rotated and nobody knows the new secret: the record on the Secret makes the
        // restarted operator report that, with the deadline, instead of rotating again (which
        // would leave the Secret with a secret PingOne no longer accepts).
        let conn = env
            .wait_condition(
                "kp",
                ROTATION,
                "False",
                Some("RotationOutcomeUnknown"),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
        assert_eq!(env.standin.management_requests().len(), 1);
        assert_eq!(secret_in_creds(&env).await, held);
        return;
    }
    let conn = wait_rotated(&env, "kp", Duration::from_secs(60)).await;
    assert_eq!(
        TestEnv::condition(&conn, "Ready").status,
        "True",
        "{point:?}"
    );
    let now_held = secret_in_creds(&env).await;
    assert_eq!(
        env.standin.current_secret(ENV_ID, CLIENT_ID).as_deref(),
        Some(now_held.as_str()),
        "{point:?}: the Secret holds PingOne's current secret"
    );
    assert!(accepted(&env, &now_held).await);
    assert!(!env.standin.requests().last().unwrap().used_previous_secret);
    // A single rotation: the original secret is the previous one.
    let (previous, _) = env.standin.previous_secret(ENV_ID, CLIENT_ID).unwrap();
    assert_eq!(previous, CLIENT_SECRET, "{point:?}\n{}", second.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_before_the_management_call_loses_no_access() {
    kill_during_rotation(KillPoint::BeforeCall, "kill-before").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_after_pingone_answered_loses_no_access() {
    kill_during_rotation(KillPoint::AfterAnswer, "kill-answer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_after_the_write_before_the_proof_loses_no_access() {
    kill_during_rotation(KillPoint::AfterWrite, "kill-write").await;
}

/// A rotation, logged down to trace: neither secret, nor any token (the Management API's
/// included), appears in the logs, the Events or the status.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_leaks_neither_secret_nor_token() {
    let env = TestEnv::new("rotate-leak").await;
    register(&env, true);
    mark_due(&env).await;
    let operator = OperatorProcess::start_logging(
        &env,
        "debug,pingone_operator=trace",
        &["--leader-election=false"],
    );
    env.create_connection("rot", rotation_spec()).await;
    wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    let new_secret = secret_in_creds(&env).await;
    assert_ne!(new_secret, CLIENT_SECRET);
    let tokens = env.standin.issued_tokens();
    assert_eq!(tokens.len(), 3, "first token, Management API token, proof");

    let mut haystacks = vec![("operator logs".to_string(), operator.output())];
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    for e in events.list(&Default::default()).await.unwrap() {
        haystacks.push((
            format!("event {:?}", e.reason),
            serde_json::to_string(&e).unwrap(),
        ));
    }
    assert!(
        haystacks
            .iter()
            .any(|(what, _)| what.contains("ClientSecretRotated")),
        "the rotation Event is there to be searched"
    );
    haystacks.push(("status".into(), env.status_json("rot").await.to_string()));
    assert!(
        haystacks[0].1.contains("client secret rotated"),
        "trace logs were captured"
    );
    let mut needles = crate::hostile::encodings("old secret", CLIENT_SECRET);
    needles.extend(crate::hostile::encodings("new secret", &new_secret));
    for (i, t) in tokens.iter().enumerate() {
        needles.extend(crate::hostile::encodings(&format!("token #{i}"), t));
    }
    let hits: Vec<String> = haystacks
        .iter()
        .flat_map(|(what, hay)| {
            needles
                .iter()
                .filter(|(_, n)| hay.contains(n.as_str()))
                .map(move |(name, _)| format!("{name} in {what}"))
        })
        .collect();
    assert!(hits.is_empty(), "leaks: {hits:#?}");
}

/// The write of a rotated secret is conditional on the version read: an unrelated change to the
/// Secret meanwhile (a label) is looked at and kept. (A change of the secret itself:
/// `rotation_faults`.)
#[tokio::test(flavor = "multi_thread")]
async fn an_unrelated_change_during_a_rotation_is_kept() {
    let mut env = TestEnv::new("rotate-race").await;
    register(&env, true);
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;

    // An unrelated change while PingOne's answer is held: the write retries on the new
    // version and keeps that change.
    hold_the_next_answer(&env).await;
    let patch = json!({"metadata": {"labels": {"team": "billing"}}});
    env.secrets()
        .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    env.standin.release_held();
    wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    let creds = env.secrets().get("creds").await.unwrap();
    assert_eq!(
        data(&creds, "clientSecret"),
        env.standin.current_secret(ENV_ID, CLIENT_ID)
    );
    assert_eq!(
        creds
            .metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("billing")
    );
}

/// Two connections share one credentials Secret and both rotate it: one rotation happens, and
/// both end up with tokens from the new secret. Two would leave a secret that dies once PingOne
/// drops the previous one.
#[tokio::test(flavor = "multi_thread")]
async fn connections_sharing_a_secret_rotate_it_once() {
    let mut env = TestEnv::new("rotate-shared").await;
    register(&env, true);
    mark_due(&env).await;
    env.start_operator();
    for name in ["one", "two", "three"] {
        env.create_connection(name, rotation_spec()).await;
    }
    for name in ["one", "two", "three"] {
        env.wait_condition(
            name,
            ROTATION,
            "True",
            Some("SecretRotated"),
            Duration::from_secs(30),
        )
        .await;
        env.wait_ready(name).await;
    }
    let (previous, _) = env.standin.previous_secret(ENV_ID, CLIENT_ID).unwrap();
    assert_eq!(previous, CLIENT_SECRET, "a single rotation");
    assert_eq!(
        env.standin.management_requests().len(),
        1,
        "{:#?}",
        env.standin.management_requests()
    );
    assert_eq!(
        env.standin.current_secret(ENV_ID, CLIENT_ID),
        Some(secret_in_creds(&env).await)
    );
}
