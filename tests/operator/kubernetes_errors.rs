//! Kubernetes API errors the operator cannot fix itself: missing RBAC and a token Secret write
//! that admission rejects. Reported in status, counted, logged once, retried with backoff.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

/// Applies `yaml` with `kubectl apply --server-side`.
pub(crate) async fn kubectl_apply(env: &TestEnv, file: &str, yaml: &str) {
    let path: PathBuf = env.cp.dir().join(format!("{file}-{}.yaml", env.ns));
    std::fs::write(&path, yaml).unwrap();
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            path.to_str().unwrap(),
        ],
    )
    .await;
}

pub(crate) async fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let mut cmd = env.cp.kubectl();
    cmd.args(args);
    run_ok(cmd, &format!("kubectl {args:?}")).await
}

/// A ServiceAccount `op` in the test namespace, bound to a Role with what the operator needs
/// there, Secrets with `secret_verbs`.
fn rbac_yaml(ns: &str, secret_verbs: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: op, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: op, namespace: {ns}}}
rules:
  - apiGroups: ["pingone.tokenops.dev"]
    resources: ["pingoneconnections"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["pingone.tokenops.dev"]
    resources: ["pingoneconnections/status"]
    verbs: ["patch"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: [{secret_verbs}]
  # The operator's own key Secret (the operator's namespace is the test namespace here).
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: ["pingone-operator-digest-key"]
    verbs: ["get"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: op, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: op}}
subjects:
  - {{kind: ServiceAccount, name: op, namespace: {ns}}}
"#
    )
}

/// JSON log lines at WARN or above about connection `name` that mention a forbidden request.
fn forbidden_lines(operator: &OperatorProcess, name: &str) -> Vec<String> {
    operator
        .output()
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            let about = v["span"]["connection"] == name
                || v["fields"]["name"] == name
                || v["fields"]["connection"] == name;
            let lower = l.to_lowercase();
            (v["level"] == "WARN" || v["level"] == "ERROR") && about && lower.contains("forbidden")
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_get_on_secrets_the_connection_stalls_credentials_forbidden() {
    let env = TestEnv::new("noget").await;
    // list and watch (the operator's metadata watch works), but no get.
    kubectl_apply(
        &env,
        "noget-rbac",
        &rbac_yaml(&env.ns, r#""list", "watch", "create", "patch""#),
    )
    .await;
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&env.ns, "op")
        .await
        .unwrap();
    let mut operator = OperatorProcess::start_with_lease(
        &env,
        &kubeconfig,
        (&env.ns, "op-lease"),
        &["--backoff-cap=10s"],
    );
    operator.wait_serving(Duration::from_secs(20)).await;
    env.create_connection("noget", json!({})).await;

    let conn = env
        .wait_stalled("noget", "CredentialsForbidden", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.contains("Secret creds") && message.contains("get"),
        "{message}"
    );

    // Retried with backoff (1, 2, 4, 8 s nominal), each failure counted: at least four within
    // about 15 s.
    let ns = env.ns.clone();
    let started = Instant::now();
    eventually(
        Duration::from_secs(30),
        "four Kubernetes errors counted for the connection",
        || {
            let url = operator.url("/metrics");
            let ns = ns.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                let n = metric_value(
                    &text,
                    "pingone_operator_kubernetes_errors_total",
                    &[("namespace", ns.as_str()), ("name", "noget")],
                )?;
                (n >= 4.0).then_some(())
            }
        },
    )
    .await;
    println!("four failed reads in {:?}", started.elapsed());
    let lines = forbidden_lines(&operator, "noget");
    assert_eq!(
        lines.len(),
        1,
        "logged once per change, not per retry:\n{}",
        lines.join("\n")
    );
    assert_eq!(env.standin.token_request_count(), 0);

    // Granting get fixes it on the next retry (backoff capped at 10 s).
    kubectl_apply(
        &env,
        "noget-rbac",
        &rbac_yaml(&env.ns, r#""get", "list", "watch", "create", "patch""#),
    )
    .await;
    env.wait_condition("noget", "Ready", "True", None, Duration::from_secs(20))
        .await;
    let conn = env.connections().get("noget").await.unwrap();
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_secret_write_rejected_by_an_admission_policy_is_reported_and_recovers() {
    let mut env = TestEnv::new("vap").await;
    let (name, denial) = freeze_token_secrets(&env).await;

    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_stalled("c", "TargetSecretRejected", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(message.contains(&denial), "{message}");
    assert!(env.token_secret("c-token").await.is_none());
    let errors = metric_value(
        &env.metrics.encode(),
        "pingone_operator_kubernetes_errors_total",
        &[("name", "c")],
    );
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");

    // Without the binding the next retry (backoff capped at 10 s in tests) writes the Secret.
    kubectl(&env, &["delete", "validatingadmissionpolicybinding", &name]).await;
    let deleted = Instant::now();
    env.wait_condition("c", "Ready", "True", None, Duration::from_secs(20))
        .await;
    println!(
        "Ready {:?} after the binding was deleted",
        deleted.elapsed()
    );
    let conn = env.connections().get("c").await.unwrap();
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
    assert!(env.token_secret("c-token").await.is_some());
    kubectl(&env, &["delete", "validatingadmissionpolicy", &name]).await;
}

/// A Kubernetes failure after a rejected token request does not erase the rejection: Stalled
/// keeps `InvalidClient` and its retry time, the Kubernetes problem stands beside it in
/// `KubernetesAccess`, and an operator restarted after the outage sends nothing new for the
/// unchanged inputs.
#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_failure_keeps_the_token_failure_across_a_restart() {
    let env = TestEnv::new("keepfail").await;
    let all = r#""get", "list", "watch", "create", "patch""#;
    kubectl_apply(&env, "keepfail-rbac", &rbac_yaml(&env.ns, all)).await;
    env.put_credentials("bad", CLIENT_ID, "not-the-secret")
        .await;
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&env.ns, "op")
        .await
        .unwrap();
    let lease = (env.ns.as_str(), "op-lease");
    let args = ["--backoff-cap=10s"];
    let mut operator = OperatorProcess::start_with_lease(&env, &kubeconfig, lease, &args);
    operator.wait_serving(Duration::from_secs(20)).await;
    env.create_connection("c", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    env.wait_stalled("c", "InvalidClient", Duration::from_secs(30))
        .await;
    assert_eq!(env.standin.token_request_count(), 1);
    let rejected = env.status_json("c").await;

    // The operator loses `get` on Secrets; a change to the credentials Secret's labels starts
    // a reconcile that cannot read it.
    kubectl_apply(
        &env,
        "keepfail-rbac",
        &rbac_yaml(&env.ns, r#""list", "watch", "create", "patch""#),
    )
    .await;
    kubectl(
        &env,
        &["label", "-n", &env.ns, "secret", "bad", "touched=1"],
    )
    .await;
    let conn = env
        .wait_condition(
            "c",
            "KubernetesAccess",
            "False",
            Some("CredentialsForbidden"),
            Duration::from_secs(30),
        )
        .await;
    let stalled = TestEnv::condition(&conn, "Stalled");
    assert_eq!(stalled.reason, "InvalidClient", "{stalled:?}");
    let status = env.status_json("c").await;
    for field in ["nextAttemptTime", "failedInputsDigest", "lastFailureTime"] {
        assert_eq!(status[field], rejected[field], "{field}: {status}");
    }

    // The outage ends and the operator restarts: the rejected request is not sent again.
    kubectl_apply(&env, "keepfail-rbac", &rbac_yaml(&env.ns, all)).await;
    operator.kill();
    let mut operator = OperatorProcess::start_with_lease(&env, &kubeconfig, lease, &args);
    operator.wait_serving(Duration::from_secs(20)).await;
    // It has reconciled `c` once it set the connection's readiness gauge, which comes after
    // any token request a reconcile makes.
    eventually(
        Duration::from_secs(30),
        "the restarted operator reconciled the connection",
        || async {
            let text = operator.metrics().await;
            let labels = [("namespace", env.ns.as_str()), ("name", "c")];
            metric_value(&text, "pingone_operator_ready_status", &labels).map(|_| ())
        },
    )
    .await;
    // Its status (written after the gauge) has the rejection and no Kubernetes problem.
    let conn = eventually(
        Duration::from_secs(10),
        "a status without the Kubernetes problem",
        || async {
            let conn = env.connections().get("c").await.ok()?;
            let conditions = &conn.status.as_ref()?.conditions;
            conditions
                .iter()
                .all(|c| c.type_ != "KubernetesAccess")
                .then_some(conn)
        },
    )
    .await;
    assert_eq!(TestEnv::condition(&conn, "Stalled").reason, "InvalidClient");
    assert_eq!(
        env.standin.token_request_count(),
        1,
        "{}",
        operator.output()
    );
}

/// Freezes the operator's Secrets in the test namespace (an admission policy denying their
/// writes); returns the policy's name once it is enforced.
async fn freeze_token_secrets(env: &TestEnv) -> (String, String) {
    let name = format!("freeze-{}", env.ns);
    let denial = format!("the operator's Secrets in {} are frozen", env.ns);
    kubectl_apply(
        env,
        "freeze",
        &pingone_testbed::admission::deny_secret_writes(
            &name,
            &env.ns,
            &["CREATE", "UPDATE"],
            pingone_testbed::admission::NOT_THE_OPERATORS,
            &denial,
        ),
    )
    .await;
    let probe = Secret {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            labels: Some(std::collections::BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "pingone-operator".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    eventually(Duration::from_secs(20), "the policy is enforced", || {
        let (secrets, probe, denial) = (env.secrets(), probe.clone(), denial.clone());
        async move {
            let params = PostParams {
                dry_run: true,
                ..Default::default()
            };
            match secrets.create(&params, &probe).await {
                Err(e) if e.to_string().contains(&denial) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    (name, denial)
}

/// Found by the soak: a renewal whose token Secret write is denied, then the operator killed
/// and restarted. The restarted operator counts the minimum interval (10 s) from the token the
/// first one got and could not write (status `lastTokenObtainedTime`), not from the older one
/// in the Secret; and while the write stays denied, Ready turns False within a few seconds of
/// the old token's expiry (the Kubernetes backoff wakes at the expiry), not a backoff step
/// later. Lifted, the connection recovers.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_renewal_write_keeps_the_floor_across_a_restart_and_ready_honest_at_expiry() {
    let env = TestEnv::new("deny-renew").await;
    env.standin.add_client(
        pingone_testbed::standin::ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_token_lifetime(Duration::from_secs(40)),
    );
    let args = ["--leader-election=false"];
    let mut first = OperatorProcess::start(&env, &args);
    first.wait_serving(Duration::from_secs(30)).await;
    env.create_connection("c", json!({})).await;
    let conn = env.wait_ready("c").await;
    let expires = conn.status.as_ref().unwrap().expires_at.clone().unwrap().0;
    let (policy, _) = freeze_token_secrets(&env).await;

    // The renewal: a token obtained, its write denied, the problem in status.
    let before = env.standin.token_request_count();
    eventually(Duration::from_secs(40), "the denied renewal", || async {
        let status = env.connections().get("c").await.ok()?.status?;
        let newer = status.last_token_obtained_time.as_ref() > status.issued_at.as_ref();
        (env.standin.token_request_count() > before && newer).then_some(())
    })
    .await;
    let obtained = env.standin.requests().last().unwrap().time;
    first.kill();
    let requests = env.standin.token_request_count();

    let mut second = OperatorProcess::start(&env, &args);
    second.wait_serving(Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "the restarted operator's request",
        || async { (env.standin.token_request_count() > requests).then_some(()) },
    )
    .await;
    let next = env.standin.requests()[requests].time;
    let gap = next.duration_since(obtained).unwrap_or_default();
    println!("the restarted operator asked {gap:?} after the unwritten token");
    assert!(
        gap >= Duration::from_millis(9_500),
        "{gap:?} after the token it could not write, under the 10 s floor"
    );

    // Still denied at the old token's expiry: Ready says so within a few seconds.
    let conn = env
        .wait_condition(
            "c",
            "Ready",
            "False",
            Some("TokenExpired"),
            Duration::from_secs(60),
        )
        .await;
    let turned = TestEnv::condition(&conn, "Ready").last_transition_time.0;
    let late = turned.duration_since(expires);
    println!("Ready turned False {late:?} after the expiry");
    assert!(
        late <= jiff::SignedDuration::from_secs(3),
        "Ready turned False {late:?} after the token expired"
    );

    kubectl(
        &env,
        &["delete", "validatingadmissionpolicybinding", &policy],
    )
    .await;
    kubectl(&env, &["delete", "validatingadmissionpolicy", &policy]).await;
    env.wait_condition("c", "Ready", "True", None, Duration::from_secs(60))
        .await;
}
