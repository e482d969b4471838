//! The guard rails (deploy/guard-rails) on the real API server: the operator's ServiceAccount
//! may not write a Secret it does not manage, and everything the operator does (token Secrets
//! created and renewed, its digest-key Secret, a rotation into a labelled credentials Secret)
//! still works under the policy, done by the operator binary as that ServiceAccount.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pingone_operator::controller::rotation::{ROTATED_AT, ROTATION_LABEL};
use pingone_testbed::standin::ClientRegistration;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const POLICY: &str = include_str!("../../deploy/guard-rails/policy.yaml");
const BINDING: &str = include_str!("../../deploy/guard-rails/binding.yaml");
/// The start of the policy's message.
const DENIED: &str = "pingone-operator guard rails: the operator may write only Secrets";
/// A second worker application, for a credentials Secret without the rotation label.
const OTHER_CLIENT_ID: &str = "0e0c8c7e-6a57-4b8e-a3c4-56e1b7d2f002";
const OTHER_SECRET: &str = "another secret";

/// The username the shipped policies restrict, as their matchConditions write it.
const SHIPPED_USER: &str =
    "'system:serviceaccount:' + 'pingone-operator' + ':' + 'pingone-operator'";

/// `SHIPPED_USER` for another ServiceAccount.
fn user_literal(namespace: &str, name: &str) -> String {
    format!("'system:serviceaccount:' + '{namespace}' + ':' + '{name}'")
}

/// The shipped policy and binding, restricting `system:serviceaccount:{namespace}:{name}`,
/// under names of their own (they are cluster-scoped; tests share the control plane).
async fn install_policy(client: &Client, namespace: &str, name: &str) {
    let rename = |text: &str| {
        text.replace(
            "pingone-operator-guard-rails",
            &format!("guard-rails-{namespace}"),
        )
        .replace(SHIPPED_USER, &user_literal(namespace, name))
    };
    assert!(POLICY.contains(SHIPPED_USER));
    let policy: ValidatingAdmissionPolicy =
        serde_yaml_ng::from_str(&rename(POLICY)).expect("policy.yaml");
    let binding: ValidatingAdmissionPolicyBinding =
        serde_yaml_ng::from_str(&rename(BINDING)).expect("binding.yaml");
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding created");
}

/// A namespace of the operator's own with the shipped ServiceAccount, Lease and digest-key
/// Roles, and the shipped ClusterRole bound in the test's namespace; returns the operator's
/// namespace and a kubeconfig for its ServiceAccount.
async fn operator_identity(env: &TestEnv) -> (String, std::path::PathBuf) {
    let operator_ns = format!("op-{}", env.ns);
    Api::<Namespace>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(operator_ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut docs = String::new();
    for f in [
        "base/serviceaccount.yaml",
        "base/leader-election-role.yaml",
        "base/digest-key-role.yaml",
        "base/clusterrole.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{DEPLOY}/{f}")).unwrap();
        docs.push_str(&text.replace(
            "namespace: pingone-operator",
            &format!("namespace: {operator_ns}"),
        ));
        docs.push_str("\n---\n");
    }
    docs.push_str(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: pingone-operator
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: pingone-operator
subjects:
  - kind: ServiceAccount
    name: pingone-operator
    namespace: {operator_ns}
",
        ns = env.ns
    ));
    let path = env.cp.dir().join(format!("guard-rails-{}.yaml", env.ns));
    std::fs::write(&path, &docs).unwrap();
    let mut cmd = env.cp.kubectl();
    cmd.args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&path);
    run_ok(cmd, "").await;
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&operator_ns, "pingone-operator")
        .await
        .unwrap();
    (operator_ns, kubeconfig)
}

/// Records that `secret`'s client secret was last rotated two days ago (due with 24h).
async fn mark_due(env: &TestEnv, secret: &str) {
    let long_ago = Timestamp::now() - SignedDuration::from_hours(48);
    let patch = json!({"metadata": {"annotations": {
        ROTATED_AT: long_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }}});
    env.secrets()
        .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotation set");
}

fn rotation_spec(secret: &str) -> serde_json::Value {
    json!({
        "credentialsSecretRef": {"name": secret},
        "clientSecretRotation": {"rotateEvery": "24h", "keepPreviousFor": "1h"},
    })
}

/// The error message of a denied request, or what happened instead.
fn denial(result: Result<Secret, kube::Error>) -> Result<String, String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(status.message),
        Err(e) => Err(format!("failed otherwise: {e}")),
        Ok(s) => Err(format!(
            "allowed (resourceVersion {:?})",
            s.resource_version()
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_may_write_only_its_own_secrets_and_still_does_its_work() {
    let env = TestEnv::new("guard").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET).with_secret_rotation(true),
    );
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, OTHER_CLIENT_ID, OTHER_SECRET).with_secret_rotation(true),
    );
    // Tokens renew every few seconds: token Secret updates happen under the policy too.
    env.standin.set_token_lifetime(Duration::from_secs(10));
    let (operator_ns, kubeconfig) = operator_identity(&env).await;
    install_policy(&env.client, &operator_ns, "pingone-operator").await;
    let as_operator = pingone_testbed::controlplane::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let operator_secrets: Api<Secret> = Api::namespaced(as_operator.clone(), &env.ns);

    // A Secret of someone else's.
    env.put_credentials("foreign", "someone", "their secret")
        .await;
    let foreign_before = env.secrets().get("foreign").await.unwrap();

    // The policy is enforced once the API server has loaded it: wait for that with dry runs
    // (admission sees them, nothing is stored).
    let overwrite = json!({"data": {"clientSecret": "b3duZWQ="}});
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    eventually(Duration::from_secs(20), "the policy is in force", || {
        let api = operator_secrets.clone();
        let overwrite = overwrite.clone();
        let dry_run = dry_run.clone();
        async move {
            denial(
                api.patch("foreign", &dry_run, &Patch::Merge(&overwrite))
                    .await,
            )
            .ok()
        }
    })
    .await;
    // A forged request as the operator: overwrite the foreign Secret's data.
    let message = denial(
        operator_secrets
            .patch(
                "foreign",
                &PatchParams::default(),
                &Patch::Merge(&overwrite),
            )
            .await,
    )
    .expect("a merge patch of a foreign Secret");
    assert!(message.contains(DENIED), "{message}");
    assert!(
        message.contains(&format!("Secret {}/foreign", env.ns)),
        "{message}"
    );

    // Labelling itself in does not help: server-side apply with the operator's label, a merge
    // patch adding the rotation label, or a replace.
    let takeover: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "foreign", "labels": {"app.kubernetes.io/managed-by": "pingone-operator"}},
        "stringData": {"clientSecret": "owned"},
    }))
    .unwrap();
    let denied = denial(
        operator_secrets
            .patch(
                "foreign",
                &PatchParams::apply("pingone-operator").force(),
                &Patch::Apply(&takeover),
            )
            .await,
    )
    .expect("server-side apply of the operator's label onto a foreign Secret");
    assert!(denied.contains(DENIED), "{denied}");
    let self_labelled = json!({"metadata": {"labels": {ROTATION_LABEL: "enabled"}},
        "data": {"clientSecret": "b3duZWQ="}});
    let denied = denial(
        operator_secrets
            .patch(
                "foreign",
                &PatchParams::default(),
                &Patch::Merge(&self_labelled),
            )
            .await,
    )
    .expect("the operator adding the rotation label itself");
    assert!(denied.contains(DENIED), "{denied}");
    // A new Secret without the operator's label.
    let unlabelled: Secret = serde_json::from_value(json!({
        "metadata": {"name": "planted"}, "stringData": {"k": "v"},
    }))
    .unwrap();
    let denied = denial(
        operator_secrets
            .create(&PostParams::default(), &unlabelled)
            .await,
    )
    .expect("create of an unlabelled Secret");
    assert!(denied.contains(DENIED), "{denied}");
    let foreign_after = env.secrets().get("foreign").await.unwrap();
    assert_eq!(foreign_after.data, foreign_before.data);
    assert_eq!(
        foreign_after.resource_version(),
        foreign_before.resource_version()
    );
    assert!(env.secrets().get_opt("planted").await.unwrap().is_none());
    // Other users are not restricted: the admin patches the foreign Secret.
    env.secrets()
        .patch(
            "foreign",
            &PatchParams::default(),
            &Patch::Merge(&overwrite),
        )
        .await
        .expect("the admin is not restricted");

    // Normal operation, by the operator binary as that ServiceAccount: the credentials Secret
    // `creds` is labelled for rotation and due, `unlabelled` is due and not labelled.
    env.secrets()
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {ROTATION_LABEL: "enabled"}}})),
        )
        .await
        .unwrap();
    mark_due(&env, "creds").await;
    env.put_credentials("unlabelled", OTHER_CLIENT_ID, OTHER_SECRET)
        .await;
    mark_due(&env, "unlabelled").await;
    let operator = OperatorProcess::start_with_lease(
        &env,
        &kubeconfig,
        (&operator_ns, "pingone-operator"),
        &[],
    );
    env.create_connection("rot", rotation_spec("creds")).await;
    env.create_connection("plain", json!({})).await;
    env.create_connection("unlabelled", rotation_spec("unlabelled"))
        .await;

    // The labelled credentials Secret was rotated and the new secret proven.
    env.wait_condition(
        "rot",
        "ClientSecretRotation",
        "True",
        Some("SecretRotated"),
        Duration::from_secs(60),
    )
    .await;
    let rotated = data(&env.secrets().get("creds").await.unwrap(), "clientSecret").unwrap();
    assert_ne!(rotated, CLIENT_SECRET);
    assert_eq!(
        env.standin.current_secret(ENV_ID, CLIENT_ID).as_deref(),
        Some(rotated.as_str())
    );

    // Token Secrets created, then updated with renewed tokens.
    env.wait_ready("plain").await;
    let first = env.token_secret("plain-token").await.unwrap().annotations()
        ["pingone.tokenops.dev/issued-at"]
        .clone();
    eventually(
        Duration::from_secs(30),
        "a renewed token written into the token Secret",
        || async {
            let s = env.token_secret("plain-token").await?;
            (s.annotations().get("pingone.tokenops.dev/issued-at") != Some(&first)).then_some(())
        },
    )
    .await;

    // The digest-key Secret in the operator's namespace.
    let key: Api<Secret> = Api::namespaced(env.client.clone(), &operator_ns);
    let key = key.get("pingone-operator-digest-key").await.unwrap();
    assert_eq!(
        key.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("pingone-operator")
    );

    // Without the label, the operator warns and stops before asking PingOne for a new secret.
    let conn = env
        .wait_condition(
            "unlabelled",
            "ClientSecretRotation",
            "False",
            Some("RotationWriteDenied"),
            Duration::from_secs(60),
        )
        .await;
    let cond = TestEnv::condition(&conn, "ClientSecretRotation");
    assert!(cond.message.contains(ROTATION_LABEL), "{}", cond.message);
    assert_eq!(
        env.standin
            .current_secret(ENV_ID, OTHER_CLIENT_ID)
            .as_deref(),
        Some(OTHER_SECRET),
        "PingOne was asked to rotate a secret the operator could not store"
    );
    assert_eq!(
        data(
            &env.secrets().get("unlabelled").await.unwrap(),
            "clientSecret"
        )
        .as_deref(),
        Some(OTHER_SECRET)
    );
    env.wait_ready("unlabelled").await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    let warned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("RotationLabelMissing")
                && e.regarding.and_then(|r| r.name).as_deref() == Some("unlabelled")
        });
    assert!(warned, "no RotationLabelMissing Event");
    assert!(
        operator
            .output()
            .contains("lacks the label pingone.tokenops.dev/rotation=enabled"),
        "no warning in the log:\n{}",
        operator.output()
    );
    drop(operator);
}
