//! Client secret rotation under faults, against the invariant of DESIGN §7: a secret PingOne
//! returned is never discarded before a secret PingOne accepts is in the credentials Secret and
//! proven, and no second rotation starts while the outcome of one is unknown.
//!
//! Each test ends in one of the two states the invariant allows: the credentials Secret holds a
//! secret the stand-in accepts, or the connection reports `RotationOutcomeUnknown` with the
//! deadline, and the stand-in saw no second rotation.

use std::time::Duration;

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use pingone_operator::controller::rotation::intent::INTENT;
use pingone_testbed::standin::Fault;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::secret_rotation::{
    ROTATION, accepted, hold_the_next_answer, mark_due, register, rotation_spec, secret_in_creds,
    wait_rotated,
};
use crate::support::*;

const UNKNOWN: &str = "RotationOutcomeUnknown";

/// Waits for the rotation condition to say the outcome is unknown, and checks what it says:
/// the deadline (an hour after the call, `keepPreviousFor`), what to do, and no secret.
async fn wait_unknown(env: &TestEnv, name: &str, sent_at: Timestamp) -> String {
    let conn = env
        .wait_condition(
            name,
            ROTATION,
            "False",
            Some(UNKNOWN),
            Duration::from_secs(30),
        )
        .await;
    let message = TestEnv::condition(&conn, ROTATION).message.clone();
    let deadline: Timestamp = conn
        .status
        .as_ref()
        .and_then(|s| s.previous_client_secret_expires_at.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("no deadline in status: {message}"));
    let hour = SignedDuration::from_hours(1);
    assert!(
        deadline >= sent_at + hour - SignedDuration::from_secs(2)
            && deadline <= Timestamp::now() + hour + SignedDuration::from_secs(2),
        "deadline {deadline} for a call at {sent_at}"
    );
    assert!(
        message.contains(&format!(
            "before {}",
            deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
        )),
        "{message}"
    );
    assert!(
        message.contains("PingOne admin console") && message.contains("Secret creds"),
        "{message}"
    );
    // Ready is about the token, which still works.
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    message
}

/// The stand-in's record: how many rotations were committed.
fn rotations(env: &TestEnv) -> usize {
    env.standin
        .management_requests()
        .iter()
        .filter(|r| r.rotated)
        .count()
}

/// Sends a renew request and waits for a token for it: a full reconcile with a proven token,
/// which is when a due rotation would start.
async fn reconcile_with_a_new_token(env: &TestEnv, value: &str) {
    env.request_renewal("rot", value).await;
    env.wait_served("rot", value).await;
}

/// Puts `secret` into the credentials Secret, as a person does after reading it in PingOne.
async fn put_secret(env: &TestEnv, secret: &str) {
    let patch =
        json!({"data": {"clientSecret": base64::engine::general_purpose::STANDARD.encode(secret)}});
    env.secrets()
        .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("secret put");
}

/// An answer lost after PingOne rotated (`fault`), twice in a row: each time the outcome is
/// reported unknown with its deadline and no second rotation starts, whatever else makes the
/// connection reconcile; the Secret keeps a secret PingOne accepts (the previous one). A person
/// who puts PingOne's current secret in resolves it; the schedule then goes on.
async fn lost_answers_twice(prefix: &str, fault: Fault) {
    let mut env = TestEnv::new(prefix).await;
    register(&env, true);
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    env.standin.push_management_fault(fault.clone(), 2);

    let mut sent_at = Timestamp::now();
    mark_due(&env).await;
    for round in 1..=2 {
        wait_unknown(&env, "rot", sent_at).await;
        assert_eq!(rotations(&env), round, "round {round}: {fault:?}");
        let held = secret_in_creds(&env).await;
        assert_ne!(
            env.standin.current_secret(ENV_ID, CLIENT_ID),
            Some(held.clone()),
            "round {round}: PingOne rotated, the Secret has the old secret"
        );
        assert!(
            accepted(&env, &held).await,
            "round {round}: the Secret's secret is refused"
        );
        // Whatever makes it reconcile, no second rotation while the outcome is unknown.
        for n in 0..2 {
            reconcile_with_a_new_token(&env, &format!("r{round}-{n}")).await;
        }
        assert_eq!(rotations(&env), round, "round {round}: rotated again");
        wait_unknown(&env, "rot", sent_at).await;
        let creds = env.secrets().get("creds").await.unwrap();
        let record = creds.metadata.annotations.unwrap_or_default();
        let record = record.get(INTENT).expect("the intent on the Secret");
        assert!(!record.contains(&held), "the record holds no secret");

        // A person reads the current secret in PingOne and puts it in.
        let current = env.standin.current_secret(ENV_ID, CLIENT_ID).unwrap();
        sent_at = Timestamp::now();
        put_secret(&env, &current).await;
        if round == 1 {
            // Resolved; the rotation is still due and starts again, into the second fault.
            eventually(Duration::from_secs(30), "the second rotation", || async {
                (rotations(&env) == 2).then_some(())
            })
            .await;
        }
    }
    // Resolved, and the third rotation (no fault left) goes through and is proven.
    eventually(Duration::from_secs(30), "the third rotation", || async {
        (rotations(&env) == 3).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "PingOne's current secret in the Secret",
        || async {
            let current = env.standin.current_secret(ENV_ID, CLIENT_ID)?;
            (secret_in_creds(&env).await == current).then_some(())
        },
    )
    .await;
    let conn = wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert_eq!(rotations(&env), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_lost_after_rotating_twice_never_locks_out() {
    lost_answers_twice("lost-answer", Fault::DropAfterCommit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_5xx_after_rotating_twice_never_locks_out() {
    lost_answers_twice("rotate-502", Fault::StatusAfterCommit(502)).await;
}

/// Slower than the operator's timeout (5 s in the tests).
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_slower_than_the_timeout_twice_never_locks_out() {
    lost_answers_twice(
        "rotate-slow",
        Fault::DelayAfterCommit(Duration::from_secs(7)),
    )
    .await;
}

/// A lost answer, then a restart: the new process finds the record on the Secret and reports
/// the unknown outcome instead of rotating again (which would make the Secret's secret
/// worthless the moment PingOne's grace ends).
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_then_a_restart_is_still_unknown() {
    let env = TestEnv::new("lost-restart").await;
    register(&env, true);
    let args = ["--leader-election=false"];
    let mut first = OperatorProcess::start(&env, &args);
    first.wait_serving(Duration::from_secs(30)).await;
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    env.standin.push_management_fault(Fault::DropAfterCommit, 1);
    let sent_at = Timestamp::now();
    mark_due(&env).await;
    wait_unknown(&env, "rot", sent_at).await;
    first.kill();

    let mut second = OperatorProcess::start(&env, &args);
    second.wait_serving(Duration::from_secs(30)).await;
    reconcile_with_a_new_token(&env, "after-restart").await;
    wait_unknown(&env, "rot", sent_at).await;
    assert_eq!(rotations(&env), 1, "{}", second.output());
    assert!(accepted(&env, &secret_in_creds(&env).await).await);
}

/// A client secret whose stored value ends in CRLF (a Secret made from a Windows file) is read
/// without the line ending for tokens, and compared the same way when the rotation writes:
/// one rotation, the new secret written and proven.
#[tokio::test(flavor = "multi_thread")]
async fn a_crlf_client_secret_is_rotated_once() {
    let mut env = TestEnv::new("crlf").await;
    register(&env, true);
    put_secret(&env, &format!("{CLIENT_SECRET}\r\n")).await;
    mark_due(&env).await;
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    env.wait_ready("rot").await;
    let held = secret_in_creds(&env).await;
    assert_eq!(env.standin.current_secret(ENV_ID, CLIENT_ID), Some(held));
    assert_eq!(rotations(&env), 1);
    let (previous, _) = env.standin.previous_secret(ENV_ID, CLIENT_ID).unwrap();
    assert_eq!(previous, CLIENT_SECRET);
    // A full reconcile later: still one rotation, still the new secret.
    reconcile_with_a_new_token(&env, "later").await;
    assert_eq!(rotations(&env), 1);
}

/// A person puts a secret PingOne refuses into the Secret while PingOne's answer is on its way,
/// and removes clientSecretRotation from the spec: the secret PingOne returned is kept (not
/// discarded as "superseded"), and once PingOne refuses the person's secret it is written and
/// proven.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_put_in_during_a_rotation_does_not_lose_the_new_one() {
    let mut env = TestEnv::new("rotate-edit").await;
    register(&env, true);
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    hold_the_next_answer(&env).await;
    put_secret(&env, "set-by-a-person").await;
    let patch = json!({"spec": {"clientSecretRotation": null}});
    env.connections()
        .patch("rot", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    env.standin.release_held();

    let current = env.standin.current_secret(ENV_ID, CLIENT_ID).unwrap();
    eventually(
        Duration::from_secs(30),
        "PingOne's new secret in the Secret",
        || async { (secret_in_creds(&env).await == current).then_some(()) },
    )
    .await;
    let conn = env
        .wait_condition("rot", "Ready", "True", None, Duration::from_secs(30))
        .await;
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
    assert_eq!(rotations(&env), 1);
    // The person's secret was tried (and refused) before it was replaced.
    let refused = env
        .standin
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert!(refused >= 1, "the person's secret was never tried");
}

/// A person puts PingOne's new secret into the Secret themselves while the answer is on its
/// way: the operator's write finds it there, which is success, not a conflict.
#[tokio::test(flavor = "multi_thread")]
async fn the_new_secret_put_in_by_a_person_meanwhile_is_a_success() {
    let mut env = TestEnv::new("rotate-same").await;
    register(&env, true);
    env.start_operator();
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    hold_the_next_answer(&env).await;
    let current = env.standin.current_secret(ENV_ID, CLIENT_ID).unwrap();
    put_secret(&env, &current).await;
    env.standin.release_held();
    wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    assert_eq!(secret_in_creds(&env).await, current);
    // The rotation time is recorded: a full reconcile later nothing is due.
    reconcile_with_a_new_token(&env, "later").await;
    assert_eq!(rotations(&env), 1);
    let creds = env.secrets().get("creds").await.unwrap();
    let annotations = creds.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key(INTENT), "{annotations:?}");
}

/// The leader dies while PingOne's answer to its rotation is on the way, and the standby takes
/// over: the new leader finds the record on the Secret, reports the unknown outcome and does
/// not rotate again; the Secret keeps a secret PingOne accepts.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_handover_during_the_call_is_an_unknown_outcome() {
    let env = TestEnv::new("rotate-handover").await;
    register(&env, true);
    let args = ["--lease-duration=6s"];
    let leader = OperatorProcess::start(&env, &args);
    leader
        .wait_log("leading; starting the controller", Duration::from_secs(20))
        .await;
    let standby = OperatorProcess::start(&env, &args);
    standby
        .wait_log("waiting for leadership", Duration::from_secs(20))
        .await;
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    let sent_at = Timestamp::now();
    hold_the_next_answer(&env).await;
    leader.kill();
    env.standin.release_held();
    standby
        .wait_log("leading; starting the controller", Duration::from_secs(15))
        .await;
    wait_unknown(&env, "rot", sent_at).await;
    reconcile_with_a_new_token(&env, "after-handover").await;
    assert_eq!(rotations(&env), 1, "{}", standby.output());
    assert!(accepted(&env, &secret_in_creds(&env).await).await);
}

/// The recovery application: a second worker allowed to read this application's secret.
const RECOVERY_ID: &str = "2c1d0e9f-8a7b-4c6d-9e5f-4a3b2c1d0e9f";
const RECOVERY_SECRET: &str = "recovery worker secret";

/// A connection that rotates, with recovery credentials whose application may (or may not)
/// read this application's secret.
async fn with_recovery(prefix: &str, may_read: bool) -> TestEnv {
    let mut env = TestEnv::new(prefix).await;
    register(&env, true);
    env.standin.add_client(
        pingone_testbed::standin::ClientRegistration::new(ENV_ID, RECOVERY_ID, RECOVERY_SECRET)
            .with_secret_read(may_read),
    );
    env.put_credentials("recovery", RECOVERY_ID, RECOVERY_SECRET)
        .await;
    env.start_operator();
    let mut spec = rotation_spec();
    spec["clientSecretRotation"]["recoveryCredentialsRef"] = json!({"name": "recovery"});
    env.create_connection("rot", spec).await;
    env.wait_ready("rot").await;
    env
}

/// A lost answer with recovery credentials: the operator reads the application's current
/// secret from PingOne with them and writes it, so the outcome is known again without a
/// person; one rotation, the new secret proven, the record gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_is_recovered_with_the_recovery_credentials() {
    let env = with_recovery("rotate-recover", true).await;
    env.standin.push_management_fault(Fault::DropAfterCommit, 1);
    mark_due(&env).await;
    let current = eventually(
        Duration::from_secs(30),
        "PingOne's new secret in the Secret",
        || async {
            let current = env.standin.current_secret(ENV_ID, CLIENT_ID)?;
            (current != CLIENT_SECRET && secret_in_creds(&env).await == current).then_some(current)
        },
    )
    .await;
    wait_rotated(&env, "rot", Duration::from_secs(30)).await;
    assert_eq!(rotations(&env), 1);
    assert!(accepted(&env, &current).await);
    let creds = env.secrets().get("creds").await.unwrap();
    assert!(
        !creds
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(INTENT),
        "the record is removed"
    );
    let read = env
        .standin
        .management_requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect::<Vec<_>>();
    assert_eq!(read.len(), 1, "{read:#?}");
    assert_eq!(read[0].caller_client_id.as_deref(), Some(RECOVERY_ID));
    assert_eq!(
        events_for(&env, "rot", "RotationRecovered").await.len(),
        1,
        "the recovery is an Event"
    );
    // Later reconciles neither rotate nor read again.
    reconcile_with_a_new_token(&env, "later").await;
    assert_eq!(rotations(&env), 1);
}

/// Recovery credentials whose application may not read the secret: the outcome stays unknown,
/// and the condition says why the recovery did not resolve it.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_credentials_without_the_permission_leave_it_unknown() {
    let env = with_recovery("rotate-norecover", false).await;
    env.standin.push_management_fault(Fault::DropAfterCommit, 1);
    let sent_at = Timestamp::now();
    mark_due(&env).await;
    let message = wait_unknown(&env, "rot", sent_at).await;
    assert!(
        message.contains("applications:read:secret") && message.contains("next try at"),
        "{message}"
    );
    assert_eq!(rotations(&env), 1);
    assert!(accepted(&env, &secret_in_creds(&env).await).await);
    // A failed recovery backs off (a minute, doubling): more reconciles read nothing again.
    let reads = || {
        env.standin
            .management_requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .count()
    };
    assert_eq!(reads(), 1);
    for n in 0..2 {
        reconcile_with_a_new_token(&env, &format!("again-{n}")).await;
    }
    assert_eq!(reads(), 1, "the recovery was retried at once");
    wait_unknown(&env, "rot", sent_at).await;
}

/// The hold of a rotated client secret for Secret `creds` (see `rotation::hold`).
const HOLD: &str = "pingone-rotation-creds";

/// The secret the hold keeps, if any.
async fn held_secret(env: &TestEnv) -> Option<String> {
    let hold = env.secrets().get_opt(HOLD).await.unwrap()?;
    data(&hold, "clientSecret")
}

/// Makes the API server deny every change of the credentials Secret's data (as an admission
/// policy or a webhook of the cluster might), for the operator and everyone else; returns once
/// it is enforced. The annotations stay writable: the rotation's record gets through.
async fn deny_credential_changes(env: &TestEnv) -> String {
    let name = format!("freeze-creds-{}", env.ns);
    let denial = format!("the data of Secret creds in {} is frozen", env.ns);
    crate::kubernetes_errors::kubectl_apply(
        env,
        "freeze-creds",
        &pingone_testbed::admission::deny_secret_writes(
            &name,
            &env.ns,
            &["UPDATE"],
            "request.name != 'creds' || (has(object.data) && has(oldObject.data) && object.data == oldObject.data)",
            &denial,
        ),
    )
    .await;
    // Policies load asynchronously: wait until a dry run of a change is denied.
    let patch = json!({"data": {"clientSecret": base64::engine::general_purpose::STANDARD.encode("probe")}});
    eventually(Duration::from_secs(20), "the policy is enforced", || {
        let patch = patch.clone();
        let denial = denial.clone();
        async move {
            let params = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            match env
                .secrets()
                .patch("creds", &params, &Patch::Merge(&patch))
                .await
            {
                Err(e) if e.to_string().contains(&denial) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    name
}

/// Lifts [`deny_credential_changes`].
async fn allow_credential_changes(env: &TestEnv, name: &str) {
    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        crate::kubernetes_errors::kubectl(env, &["delete", kind, name]).await;
    }
}

/// After the write: PingOne's current secret in the credentials Secret, proven, one rotation,
/// the hold emptied.
async fn lands_from_the_hold(env: &TestEnv, current: &str) {
    eventually(
        Duration::from_secs(60),
        "PingOne's current secret in the Secret",
        || async { (secret_in_creds(env).await == current).then_some(()) },
    )
    .await;
    let conn = wait_rotated(env, "rot", Duration::from_secs(60)).await;
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "True");
    assert!(accepted(env, current).await);
    assert_eq!(rotations(env), 1);
    eventually(Duration::from_secs(10), "the hold emptied", || async {
        held_secret(env).await.is_none().then_some(())
    })
    .await;
    let creds = env.secrets().get("creds").await.unwrap();
    let annotations = creds.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key(INTENT), "{annotations:?}");
}

/// PingOne answers, and the API server denies the write of the new secret into the credentials
/// Secret for longer than `keepPreviousFor`, across a restart of the operator: the returned
/// secret is kept in the hold (the condition says where), the restarted operator finds it
/// there, and writes it once the write is allowed, though the Secret's own secret no longer
/// works by then. One rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_returned_secret_outlives_a_denied_write_a_restart_and_the_grace_end() {
    let env = TestEnv::new("rotate-denied").await;
    register(&env, true);
    let args = ["--leader-election=false"];
    let mut first = OperatorProcess::start(&env, &args);
    first.wait_serving(Duration::from_secs(30)).await;
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    let policy = deny_credential_changes(&env).await;
    mark_due(&env).await;
    let conn = env
        .wait_condition(
            "rot",
            ROTATION,
            "False",
            Some("RotatedSecretNotWritten"),
            Duration::from_secs(30),
        )
        .await;
    let message = &TestEnv::condition(&conn, ROTATION).message;
    assert!(
        message.contains(&format!("a copy is in Secret {HOLD}, key clientSecret")),
        "{message}"
    );
    let current = env.standin.current_secret(ENV_ID, CLIENT_ID).unwrap();
    assert_eq!(held_secret(&env).await.as_deref(), Some(current.as_str()));
    assert_eq!(secret_in_creds(&env).await, CLIENT_SECRET);
    assert_eq!(rotations(&env), 1);
    first.kill();

    // PingOne's grace for the replaced secret ends while the write is still denied.
    env.standin.advance_clock(Duration::from_secs(2 * 3600));
    assert!(!accepted(&env, CLIENT_SECRET).await, "the grace has ended");
    let mut second = OperatorProcess::start(&env, &args);
    second.wait_serving(Duration::from_secs(30)).await;
    second
        .wait_log(
            "found a rotated client secret in the hold",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rotations(&env), 1, "no second rotation");
    allow_credential_changes(&env, &policy).await;
    lands_from_the_hold(&env, &current).await;
}

/// While PingOne's answer is on its way, a person replaces the credentials Secret with a
/// secret PingOne refuses (dropping the rotation's record with the annotations), and the write
/// is denied; then the operator restarts. The restarted operator knows nothing of the rotation
/// but the hold: once the person's secret is refused, it writes the returned one from there.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_replacing_the_secret_during_a_rotation_then_a_restart_loses_nothing() {
    let env = TestEnv::new("rotate-replace").await;
    register(&env, true);
    let args = ["--leader-election=false"];
    let mut first = OperatorProcess::start(&env, &args);
    first.wait_serving(Duration::from_secs(30)).await;
    env.create_connection("rot", rotation_spec()).await;
    env.wait_ready("rot").await;
    hold_the_next_answer(&env).await;
    let mut creds = env.secrets().get("creds").await.unwrap();
    creds.metadata.annotations = None;
    creds.metadata.managed_fields = None;
    creds.data = Some(
        [
            (
                "clientId".to_string(),
                k8s_openapi::ByteString(CLIENT_ID.as_bytes().to_vec()),
            ),
            (
                "clientSecret".to_string(),
                k8s_openapi::ByteString(b"set-by-a-person".to_vec()),
            ),
        ]
        .into(),
    );
    env.secrets()
        .replace("creds", &Default::default(), &creds)
        .await
        .unwrap();
    let policy = deny_credential_changes(&env).await;
    env.standin.release_held();
    let current = env.standin.current_secret(ENV_ID, CLIENT_ID).unwrap();
    env.wait_condition(
        "rot",
        ROTATION,
        "False",
        Some("RotatedSecretNotWritten"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(held_secret(&env).await.as_deref(), Some(current.as_str()));
    first.kill();

    let mut second = OperatorProcess::start(&env, &args);
    second.wait_serving(Duration::from_secs(30)).await;
    second
        .wait_log(
            "found a rotated client secret in the hold",
            Duration::from_secs(30),
        )
        .await;
    allow_credential_changes(&env, &policy).await;
    lands_from_the_hold(&env, &current).await;
}
