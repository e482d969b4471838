//! The guard rails (deploy/guard-rails) on the real API server: the operator's ServiceAccount
//! may not write a Secret it does not manage, and everything the operator does (token Secrets
//! created and renewed, its digest-key Secret, a rotation into a labelled credentials Secret)
//! still works under the policy, done by the operator binary as that ServiceAccount. The same
//! with kustomize in another namespace, and the rollout-restart policy (deploy/rollout-restart):
//! the operator may change nothing of a workload but its restart stamp, and still restarts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use pingone_operator::controller::rollout::RESTARTED_FOR;
use pingone_operator::controller::rotation::{ROTATED_AT, ROTATION_LABEL};
use pingone_testbed::standin::ClientRegistration;
use serde_json::{Value, json};

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
fn denial<K: kube::Resource>(result: Result<K, kube::Error>) -> Result<String, String> {
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

// ---------------------------------------------------------------------------------------------
// deploy/base and deploy/rollout-restart installed with kustomize into another namespace

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The start of the rollout-restart policy's message.
const ROLLOUT_DENIED: &str = "pingone-operator rollout guard rails: the operator may change only";
/// A stamp older than any token, as a rolling restart long ago would have left it.
const OLD_STAMP: &str = "2020-01-01T00:00:00Z";

/// `kubectl kustomize DIR`, as parsed documents.
fn kustomize(dir: &Path) -> Vec<Value> {
    let kubectl = pingone_testbed::controlplane::binaries()
        .expect("control plane binaries")
        .join("kubectl");
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    crate::gitops::yaml_documents(&String::from_utf8(out.stdout).unwrap())
}

/// Builds an overlay of deploy/base and deploy/rollout-restart in `dir` as the README shows it:
/// another namespace, a name prefix (cluster-scoped names must not collide with other tests'),
/// and, with `follow`, deploy/serviceaccount-identity as a transformer.
fn overlay(dir: &Path, namespace: &str, prefix: &str, follow: bool) -> Vec<Value> {
    std::fs::create_dir_all(dir).unwrap();
    // kustomize takes no absolute paths.
    let deploy = relative(dir, &Path::new(ROOT).join("deploy"));
    let deploy = deploy.display();
    let mut kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {deploy}/base
  - {deploy}/rollout-restart
namespace: {namespace}
namePrefix: {prefix}
"
    );
    if follow {
        kustomization.push_str(&format!(
            "transformers:\n  - {deploy}/serviceaccount-identity\n"
        ));
    }
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    kustomize(dir)
}

/// Directory `to` relative to directory `from`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in from.components().skip(common) {
        path.push("..");
    }
    for c in to.components().skip(common) {
        path.push(c);
    }
    path
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// What [`install_overlay`] installed.
struct Installed {
    /// The operator's namespace and ServiceAccount.
    namespace: String,
    serviceaccount: String,
    /// The name prefix of every object of the overlay.
    prefix: String,
    kubeconfig: PathBuf,
    /// The cluster-scoped objects, removed by [`Installed::remove`].
    cluster_scoped: PathBuf,
}

impl Installed {
    fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.serviceaccount
        )
    }

    async fn remove(self, env: &TestEnv) {
        let mut cmd = env.cp.kubectl();
        cmd.args(["delete", "--ignore-not-found", "-f"])
            .arg(&self.cluster_scoped);
        run_ok(cmd, "").await;
    }
}

/// Builds the overlay for a namespace `op-<test namespace>`, checks that the ServiceAccount and
/// everything naming it (RBAC subjects, both admission policies) moved there, and applies its
/// namespace, ServiceAccount, RBAC and policies (not the CRD, the Deployment or the Service).
async fn install_overlay(env: &TestEnv) -> Installed {
    let namespace = format!("op-{}", env.ns);
    let prefix = format!("{}-", env.ns);
    let serviceaccount = format!("{prefix}pingone-operator");
    let dir = env.cp.dir().join(format!("overlay-{}", env.ns));
    let (docs, unfollowed) = tokio::task::block_in_place(|| {
        (
            overlay(&dir.join("follow"), &namespace, &prefix, true),
            overlay(&dir.join("plain"), &namespace, &prefix, false),
        )
    });

    let sa = &named(&docs, "ServiceAccount", &serviceaccount)["metadata"];
    assert_eq!(sa["namespace"], namespace);
    let subject =
        json!([{"kind": "ServiceAccount", "name": serviceaccount, "namespace": namespace}]);
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .collect();
    assert_eq!(
        bindings.len(),
        3,
        "ClusterRoleBinding, leader election, digest key"
    );
    for binding in bindings {
        assert_eq!(binding["subjects"], subject, "{binding}");
        // The rollout-restart ClusterRole is bound per namespace, never cluster-wide.
        assert_ne!(
            binding["roleRef"]["name"],
            format!("{prefix}pingone-operator-rollout-restart"),
            "{binding}"
        );
    }
    let expression = format!(
        "request.userInfo.username == {}",
        user_literal(&namespace, &serviceaccount)
    );
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(policies.len(), 2, "guard rails and rollout restart");
    for suffix in ["guard-rails", "rollout-restart"] {
        let name = format!("{prefix}pingone-operator-{suffix}");
        let policy = named(&docs, "ValidatingAdmissionPolicy", &name);
        assert_eq!(
            policy["spec"]["matchConditions"],
            json!([{"name": "operator-serviceaccount", "expression": expression}])
        );
        assert_eq!(
            named(&docs, "ValidatingAdmissionPolicyBinding", &name)["spec"]["policyName"],
            name
        );
        // Without deploy/serviceaccount-identity the overlay's policy would still name
        // deploy/base's ServiceAccount, and restrict nobody.
        assert_eq!(
            named(&unfollowed, "ValidatingAdmissionPolicy", &name)["spec"]["matchConditions"][0]["expression"],
            format!("request.userInfo.username == {SHIPPED_USER}")
        );
    }

    let applied = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let cluster_scoped_kinds = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let stream = |kinds: &[&str]| -> String {
        docs.iter()
            .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
            .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).unwrap()))
            .collect()
    };
    let objects = dir.join("objects.yaml");
    std::fs::write(&objects, stream(&applied)).unwrap();
    let cluster_scoped = dir.join("cluster-scoped.yaml");
    std::fs::write(&cluster_scoped, stream(&cluster_scoped_kinds)).unwrap();
    let mut cmd = env.cp.kubectl();
    cmd.args(["apply", "--server-side", "-f"]).arg(&objects);
    run_ok(cmd, "").await;
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&namespace, &serviceaccount)
        .await
        .unwrap();
    Installed {
        namespace,
        serviceaccount,
        prefix,
        kubeconfig,
        cluster_scoped,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_rails_follow_the_serviceaccount_into_another_namespace() {
    let env = TestEnv::new("follow").await;
    let installed = install_overlay(&env).await;
    let as_operator = pingone_testbed::controlplane::client_from_kubeconfig(&installed.kubeconfig)
        .await
        .unwrap();
    let operator_secrets: Api<Secret> = Api::namespaced(as_operator, &env.ns);
    env.put_credentials("foreign", "someone", "their secret")
        .await;
    let before = env.secrets().get("foreign").await.unwrap();

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
            .filter(|m| m.contains(DENIED))
        }
    })
    .await;
    // A forged request as the operator's ServiceAccount in its new namespace.
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
    let after = env.secrets().get("foreign").await.unwrap();
    assert_eq!(after.data, before.data);
    assert_eq!(after.resource_version(), before.resource_version());
    // The policy restricts the operator to its own Secrets; it does not block it.
    let managed: Secret = serde_json::from_value(json!({
        "metadata": {"name": "managed", "labels": {"app.kubernetes.io/managed-by": "pingone-operator"}},
        "stringData": {"k": "v"},
    }))
    .unwrap();
    operator_secrets
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &managed,
        )
        .await
        .expect("the operator may create a Secret it manages");
    installed.remove(&env).await;
}

/// The three workload kinds of rolling restarts: kind, plural, name.
const WORKLOADS: [(&str, &str, &str); 3] = [
    ("Deployment", "deployments", "billing"),
    ("StatefulSet", "statefulsets", "ledger"),
    ("DaemonSet", "daemonsets", "agent"),
];

fn workload_api(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// A workload whose pods no node runs (the object is what the tests look at).
fn workload(kind: &str, name: &str) -> DynamicObject {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "nodeSelector": {"pingone.tokenops.dev/no-such-node": "true"},
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            },
        },
    });
    match kind {
        "DaemonSet" => {}
        "StatefulSet" => {
            spec["replicas"] = json!(1);
            spec["serviceName"] = json!(name);
        }
        _ => spec["replicas"] = json!(1),
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn stamp_of(obj: &DynamicObject) -> Option<String> {
    obj.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_FOR]
        .as_str()
        .map(String::from)
}

fn stamp_patch(value: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR: value}}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_may_change_only_the_restart_stamp_of_its_rollout_targets() {
    let env = TestEnv::new("rollguard").await;
    let installed = install_overlay(&env).await;
    // deploy/rollout-restart/rolebinding.yaml, for this test's namespace and the overlay's names.
    let mut binding: RoleBinding = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{DEPLOY}/rollout-restart/rolebinding.yaml")).unwrap(),
    )
    .unwrap();
    binding.metadata.namespace = Some(env.ns.clone());
    binding.role_ref.name = format!("{}{}", installed.prefix, binding.role_ref.name);
    for subject in binding.subjects.iter_mut().flatten() {
        subject.name = installed.serviceaccount.clone();
        subject.namespace = Some(installed.namespace.clone());
    }
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // Bounded: patch in this namespace only.
    let user = installed.user();
    tokio::task::block_in_place(|| {
        for kind in ["deployments", "statefulsets", "daemonsets"] {
            let here = ["patch", kind, "-n", env.ns.as_str()];
            assert!(
                crate::gitops::kubectl_can_i(&env, &user, &here),
                "cannot {here:?}"
            );
            for elsewhere in [
                vec!["patch", kind, "-n", "default"],
                vec!["patch", kind, "-A"],
                vec!["create", kind, "-n", env.ns.as_str()],
                vec!["delete", kind, "-n", env.ns.as_str()],
            ] {
                assert!(
                    !crate::gitops::kubectl_can_i(&env, &user, &elsewhere),
                    "may {elsewhere:?}"
                );
            }
        }
    });

    let as_operator = pingone_testbed::controlplane::client_from_kubeconfig(&installed.kubeconfig)
        .await
        .unwrap();
    for (kind, plural, name) in WORKLOADS {
        workload_api(&env.client, &env.ns, kind, plural)
            .create(&PostParams::default(), &workload(kind, name))
            .await
            .unwrap();
    }
    let deployments_as_operator = workload_api(&as_operator, &env.ns, "Deployment", "deployments");
    let replicas = json!({"spec": {"replicas": 5}});
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    eventually(Duration::from_secs(20), "the policy is in force", || {
        let api = deployments_as_operator.clone();
        let replicas = replicas.clone();
        let dry_run = dry_run.clone();
        async move {
            denial(
                api.patch("billing", &dry_run, &Patch::Merge(&replicas))
                    .await,
            )
            .ok()
            .filter(|m| m.contains(ROLLOUT_DENIED))
        }
    })
    .await;

    // The stamp alone may be written, on each kind.
    for (kind, plural, name) in WORKLOADS {
        let api = workload_api(&as_operator, &env.ns, kind, plural);
        let stamped = api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&stamp_patch(OLD_STAMP)),
            )
            .await
            .unwrap_or_else(|e| panic!("stamping {kind} {name}: {e}"));
        assert_eq!(stamp_of(&stamped).as_deref(), Some(OLD_STAMP));
    }
    let before: Vec<DynamicObject> = workloads_now(&env).await;

    // Forged patches by the operator's ServiceAccount: anything but the stamp is denied.
    let image = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example.invalid/evil:1"}
    ]}}}});
    let mut stamp_and_image = stamp_patch("2031-01-01T00:00:00Z");
    stamp_and_image["spec"]["template"]["spec"] = image["spec"]["template"]["spec"].clone();
    let forged: Vec<(&str, &str, &str, Value)> = vec![
        ("Deployment", "deployments", "billing", replicas.clone()),
        ("Deployment", "deployments", "billing", image.clone()),
        ("Deployment", "deployments", "billing", stamp_and_image),
        (
            "Deployment",
            "deployments",
            "billing",
            json!({"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}}),
        ),
        (
            "Deployment",
            "deployments",
            "billing",
            json!({"spec": {"template": {"metadata": {"labels": {"extra": "label"}}}}}),
        ),
        (
            "Deployment",
            "deployments",
            "billing",
            json!({"spec": {"template": {"metadata": {"annotations": {"example.com/other": "x"}}}}}),
        ),
        (
            "Deployment",
            "deployments",
            "billing",
            json!({"metadata": {"labels": {"extra": "label"}}}),
        ),
        ("StatefulSet", "statefulsets", "ledger", replicas.clone()),
        ("DaemonSet", "daemonsets", "agent", image.clone()),
        (
            "DaemonSet",
            "daemonsets",
            "agent",
            json!({"metadata": {"annotations": {"example.com/other": "x"}}}),
        ),
    ];
    for (kind, plural, name, patch) in forged {
        let api = workload_api(&as_operator, &env.ns, kind, plural);
        let message = denial(
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .unwrap_or_else(|e| panic!("{kind} {name} {patch}: {e}"));
        assert!(message.contains(ROLLOUT_DENIED), "{patch}: {message}");
        assert!(
            message.contains(&format!("of {plural} {}/{name}", env.ns)),
            "{message}"
        );
    }
    // Nothing changed (the workload controllers write only status).
    let after = workloads_now(&env).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.data["spec"], b.data["spec"], "{}", a.name_any());
        assert_eq!(a.labels(), b.labels(), "{}", a.name_any());
        assert!(
            !a.annotations().contains_key("example.com/other"),
            "{}",
            a.name_any()
        );
    }

    // The operator binary as that ServiceAccount restarts all three after issuing a token.
    let operator = OperatorProcess::start_with_lease(
        &env,
        &installed.kubeconfig,
        (&installed.namespace, "pingone-operator"),
        &[],
    );
    let targets: Vec<Value> = WORKLOADS
        .iter()
        .map(|(kind, _, name)| json!({"kind": kind, "name": name}))
        .collect();
    env.create_connection("c", json!({"rolloutRestartTargets": targets}))
        .await;
    env.wait_ready("c").await;
    let issued =
        env.token_secret("c-token").await.unwrap().annotations()["pingone.tokenops.dev/issued-at"]
            .clone();
    for (kind, plural, name) in WORKLOADS {
        let api = workload_api(&env.client, &env.ns, kind, plural);
        let restarted = eventually(
            Duration::from_secs(30),
            &format!("{kind} {name} restarted by the operator"),
            || {
                let api = api.clone();
                async move {
                    let w = api.get(name).await.ok()?;
                    (stamp_of(&w).as_deref() != Some(OLD_STAMP)).then_some(w)
                }
            },
        )
        .await;
        assert_eq!(stamp_of(&restarted).as_deref(), Some(issued.as_str()));
        let container = &restarted.data["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "example.invalid/app:1");
        if kind != "DaemonSet" {
            assert_eq!(restarted.data["spec"]["replicas"], 1);
        }
    }
    // The Deployment controller rolls the stamped template out.
    let replicasets: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(
        Duration::from_secs(20),
        "a ReplicaSet for the new token",
        || {
            let replicasets = replicasets.clone();
            let issued = issued.clone();
            async move {
                let list = replicasets.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|rs| {
                        rs.spec
                            .as_ref()
                            .and_then(|s| s.template.as_ref())
                            .and_then(|t| t.metadata.as_ref())
                            .and_then(|m| m.annotations.as_ref())
                            .and_then(|a| a.get(RESTARTED_FOR))
                            == Some(&issued)
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        !reasons.iter().any(|r| r == "RolloutRestartFailed"),
        "{reasons:?}\n{}",
        operator.output()
    );
    let output = operator.output();
    assert!(
        !output.to_lowercase().contains("forbidden"),
        "denial in logs:\n{output}"
    );
    drop(operator);
    installed.remove(&env).await;
}

/// The three workloads as the admin reads them.
async fn workloads_now(env: &TestEnv) -> Vec<DynamicObject> {
    let mut all = Vec::new();
    for (kind, plural, name) in WORKLOADS {
        all.push(
            workload_api(&env.client, &env.ns, kind, plural)
                .get(name)
                .await
                .unwrap(),
        );
    }
    all
}
