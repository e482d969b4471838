//! The product as a platform team installs it (issue 25): the operator image of
//! `deploy/image/build.sh`, imported into the test node, installed with the chart packaged as
//! `make dist` ships it (cluster-wide and namespaced RBAC) or with deploy/base and
//! deploy/namespaced (kustomize), two replicas running as pods under the
//! restricted Pod Security Standard (uid 65532, read-only root filesystem), Ready through their
//! probes, one of them leading. Then the user's story (the examples, a pod reading the token
//! from its mounted files) and what a platform team does to it: delete the leader's pod,
//! `helm upgrade` (or re-apply) with a changed value; a token Secret sampled every 500 ms is
//! never expired meanwhile and renewals go on. The guard rails refuse a write that the
//! operator's ServiceAccount could make by its RBAC but that no operator code makes.
//!
//! The node runs no kube-proxy, so the pods reach the API server through a relay on the host
//! (`Node::apiserver_for_pods`), named by `KUBERNETES_SERVICE_HOST`/`_PORT`, and PingOne's
//! stand-in through `--host-override`, both passed through the chart's `extraEnv` and
//! `extraArgs`: the only values a real cluster would not need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pingone_testbed::node::{HOST_FROM_PODS, Node};
use pingone_testbed::standin::{ClientRegistration, StandInConfig};
use serde_json::json;

use crate::gitops::helm_on;
use crate::node::{
    CONNECTION, EXAMPLE_CLIENT_ID, EXAMPLE_CLIENT_SECRET, POLL, READER, TOKEN_SECRET,
    apply_example, current_token, pod_name, reads_of, running_pod,
};
use crate::support::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/pingone-operator");
const KUSTOMIZE_BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base");
const KUSTOMIZE_NAMESPACED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/namespaced");
/// Tokens live 40 s: renewed every ~27 s, so each step below sees renewals by the pod that
/// leads at that moment.
const TOKEN_LIFETIME: Duration = Duration::from_secs(40);

/// The operator image: the archive, its reference and its version tag.
struct Image {
    archive: PathBuf,
    reference: String,
}

impl Image {
    fn repository(&self) -> &str {
        self.reference.rsplit_once(':').expect("repo:tag").0
    }
    fn tag(&self) -> &str {
        self.reference.rsplit_once(':').expect("repo:tag").1
    }
}

/// `$PINGONE_OPERATOR_IMAGE` (what `make test` built), else what `deploy/image/build.sh`
/// builds now; its reference comes from the `image.env` beside the archive.
fn operator_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let archive = match std::env::var("PINGONE_OPERATOR_IMAGE") {
            Ok(path) => PathBuf::from(path),
            Err(_) => {
                let out = Command::new("bash")
                    .arg(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/deploy/image/build.sh"
                    ))
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("deploy/image/build.sh runs");
                assert!(out.status.success(), "deploy/image/build.sh failed");
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        let env_file = archive.with_file_name("image.env");
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{}: {e}", env_file.display()));
        let reference = text
            .lines()
            .find_map(|l| l.strip_prefix("IMAGE_REF="))
            .expect("IMAGE_REF in image.env")
            .to_string();
        Image { archive, reference }
    })
}

/// The node, with the operator image imported (once per test process).
async fn node_with_image() -> &'static Node {
    if let Err(e) = Node::check() {
        panic!("no node can run here: {e:#}");
    }
    static IMPORTED: OnceLock<()> = OnceLock::new();
    tokio::task::spawn_blocking(|| {
        let node = Node::shared();
        IMPORTED.get_or_init(|| {
            node.import_image(&operator_image().archive)
                .expect("operator image imports");
        });
        node
    })
    .await
    .expect("node starts")
}

/// How the operator is installed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Install {
    /// `helm install` of the chart, with `rbac.namespaced` as given.
    Chart { namespaced: bool },
    /// `kubectl apply -k` of an overlay on deploy/base.
    Kustomize,
    /// `kubectl apply -k` of an overlay on deploy/namespaced: Roles in the watched namespace
    /// only, no ClusterRole for the operator.
    KustomizeNamespaced,
}

/// What every install gets beyond the defaults: the image as built (never pulled), this test's
/// namespace to watch, short leases, the stand-in's CA and address, the API server's relay.
struct Setup<'a> {
    env: &'a TestEnv,
    work: PathBuf,
    api: std::net::SocketAddr,
    standin_port: u16,
}

impl Setup<'_> {
    fn host_override(&self) -> String {
        format!(
            "--host-override=auth.pingone.eu={HOST_FROM_PODS}:{}",
            self.standin_port
        )
    }

    fn service_env(&self) -> serde_json::Value {
        json!([
            {"name": "KUBERNETES_SERVICE_HOST", "value": self.api.ip().to_string()},
            {"name": "KUBERNETES_SERVICE_PORT", "value": self.api.port().to_string()},
        ])
    }

    /// The chart's values, `extra` merged over them.
    fn chart_values(&self, namespaced: bool, extra: serde_json::Value) -> PathBuf {
        let image = operator_image();
        let mut values = json!({
            "image": {"repository": image.repository(), "tag": image.tag(), "pullPolicy": "Never"},
            "watchNamespaces": [self.env.ns],
            "rbac": {"namespaced": namespaced},
            "leaderElection": {"leaseDuration": "6s"},
            "extraCA": {"configMap": {"name": "pingone-ca"}},
            "extraArgs": [self.host_override()],
            "extraEnv": self.service_env(),
            "terminationGracePeriodSeconds": 10,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            // The control plane's CRD is the harness's, shared by every test of this process;
            // the upgrade of a CRD through the chart has a test of its own.
            "crds": {"enabled": false},
        });
        merge(&mut values, extra);
        let path = self.work.join(format!("values-{}.json", unique()));
        std::fs::write(&path, values.to_string()).unwrap();
        path
    }

    /// An overlay on deploy/base (or deploy/namespaced, its Roles moved to this test's
    /// namespace), `annotation` on the pods.
    fn kustomization(&self, namespaced: bool, annotation: &str) -> PathBuf {
        let dir = self.work.join(format!("overlay-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = operator_image();
        let patch = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "pingone-operator", "namespace": "pingone-operator"},
            "spec": {"template": {
                "metadata": {"annotations": {"test/revision": annotation}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "operator",
                        "imagePullPolicy": "Never",
                        "args": [
                            "run", "--log-format=json", "--lease-duration=6s",
                            format!("--namespaces={}", self.env.ns),
                            "--extra-ca-file=/etc/pingone-ca/ca.crt",
                            self.host_override(),
                        ],
                        "env": self.service_env(),
                        "volumeMounts": [{"name": "pingone-ca", "mountPath": "/etc/pingone-ca", "readOnly": true}],
                    }],
                    "volumes": [{"name": "pingone-ca", "configMap": {"name": "pingone-ca"}}],
                },
            }},
        });
        std::fs::write(dir.join("deployment-patch.json"), patch.to_string()).unwrap();
        let mut patches = vec![json!({"path": "deployment-patch.json"})];
        if namespaced {
            for kind in ["Role", "RoleBinding"] {
                patches.push(json!({
                    "target": {"kind": kind, "name": "pingone-operator", "namespace": "team-a"},
                    "patch": json!([{"op": "replace", "path": "/metadata/namespace",
                                     "value": self.env.ns}]).to_string(),
                }));
            }
        }
        let base = if namespaced {
            KUSTOMIZE_NAMESPACED
        } else {
            KUSTOMIZE_BASE
        };
        let kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [relative_to_root(&dir, base)],
            "images": [{"name": "ghcr.io/tokenops/pingone-operator",
                        "newName": image.repository(), "newTag": image.tag()}],
            "patches": patches,
        });
        std::fs::write(dir.join("kustomization.yaml"), kustomization.to_string()).unwrap();
        dir
    }
}

/// `target` as a path relative to `dir` (kustomize takes no absolute base).
fn relative_to_root(dir: &Path, target: &str) -> String {
    let ups = dir.components().count().saturating_sub(1);
    format!("{}{}", "../".repeat(ups), target.trim_start_matches('/'))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs a blocking command off the runtime; panics with its output when it fails.
async fn run(cmd: Command, what: &str) -> String {
    run_ok(cmd, what).await
}

/// The operator's pods (not terminating), by name, with whether each is Ready.
async fn operator_pods(pods: &Api<Pod>) -> Vec<(String, bool, Option<String>)> {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=pingone-operator"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let hash = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash").cloned());
            (pod_name(&p), ready, hash)
        })
        .collect()
}

/// The pod that holds the Lease `lease`, once exactly `replicas` pods with `hash` (any when
/// None) are Ready and one of them holds it.
async fn ready_with_leader(
    pods: &Api<Pod>,
    leases: &Api<Lease>,
    lease: &str,
    replicas: usize,
    hash: Option<&str>,
    what: &str,
) -> (Vec<String>, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = ready_and_leading(pods, leases, lease, replicas, hash).await {
            return found;
        }
        if Instant::now() > deadline {
            // What the pods went through, for the failure's message.
            let list = pods.list(&ListParams::default()).await.unwrap();
            let states: Vec<String> = list
                .items
                .iter()
                .map(|p| {
                    let status = p.status.clone().unwrap_or_default();
                    format!(
                        "{}: phase {:?}, conditions {:?}, containers {:?}",
                        pod_name(p),
                        status.phase,
                        status.conditions,
                        status.container_statuses
                    )
                })
                .collect();
            let holder = leases
                .get_opt(lease)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity);
            panic!(
                "{what}: not within 120s; Lease holder {holder:?}; pods:\n{}",
                states.join("\n")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn ready_and_leading(
    pods: &Api<Pod>,
    leases: &Api<Lease>,
    lease: &str,
    replicas: usize,
    hash: Option<&str>,
) -> Option<(Vec<String>, String)> {
    {
        let all = operator_pods(pods).await;
        if all.len() != replicas
            || !all
                .iter()
                .all(|(_, ready, h)| *ready && (hash.is_none() || h.as_deref() == hash))
        {
            return None;
        }
        let holder = leases.get_opt(lease).await.ok()??.spec?.holder_identity?;
        let names: Vec<String> = all.into_iter().map(|(n, _, _)| n).collect();
        let leader = names
            .iter()
            .find(|n| holder.starts_with(n.as_str()))?
            .clone();
        Some((names, leader))
    }
}

/// The release namespace: created when it has a fixed name (kustomize), the restricted Pod
/// Security Standard enforced (a pod that breaks it is not admitted), and the stand-in's CA in
/// a ConfigMap (it plays the corporate CA of a custom domain).
async fn prepare_release_namespace(env: &TestEnv, release_ns: &str, create: bool) {
    let client = env.client.clone();
    if create {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": release_ns}})).unwrap(),
            )
            .await;
    }
    let mut label = env.cp.kubectl();
    label.args([
        "label",
        "--overwrite",
        "namespace",
        release_ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    run(label, "label the release namespace").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, release_ns);
    let _ = configmaps
        .delete("pingone-ca", &DeleteParams::default())
        .await;
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pingone-ca"},
                "data": {"ca.crt": env.standin.ca_pem()},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// The token Secret's `issued-at` after `after`: a renewal happened.
async fn a_renewal_after(
    secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    after: &str,
) -> String {
    let after = after.to_string();
    eventually_every(
        POLL,
        TOKEN_LIFETIME + Duration::from_secs(20),
        "a renewal of the token",
        || {
            let after = after.clone();
            async move {
                let (_, issued) = current_token(secrets).await?;
                (issued != after).then_some(issued)
            }
        },
    )
    .await
}

async fn installed_operator_story(install: Install) {
    let started = Instant::now();
    let standin = StandInConfig {
        // Pods reach the stand-in at the host's bridge address.
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        ..StandInConfig::default()
    };
    let env = TestEnv::with_standin("installed", standin).await;
    env.standin.set_token_lifetime(TOKEN_LIFETIME);
    env.standin.add_client(ClientRegistration::new(
        ENV_ID,
        EXAMPLE_CLIENT_ID,
        EXAMPLE_CLIENT_SECRET,
    ));
    let node = node_with_image().await;
    let api = node.apiserver_for_pods(env.cp).expect("API server relay");
    let kustomized = matches!(install, Install::Kustomize | Install::KustomizeNamespaced);
    let release_ns = if kustomized {
        "pingone-operator".to_string()
    } else {
        env.cp.namespace("installed-release").await.unwrap()
    };
    let work = env.cp.dir().join(format!("installed-{}", env.ns));
    std::fs::create_dir_all(&work).unwrap();
    let setup = Setup {
        env: &env,
        work: work.clone(),
        api,
        standin_port: env.standin.addr().port(),
    };
    let client = env.client.clone();
    prepare_release_namespace(&env, &release_ns, kustomized).await;

    // Install. Releases of their own: the ClusterRoles and admission policies are
    // cluster-wide and named after the release.
    let release = match install {
        Install::Chart { namespaced: false } => "cluster",
        Install::Chart { namespaced: true } => "namespaced",
        Install::Kustomize | Install::KustomizeNamespaced => "pingone-operator",
    };
    let fullname = format!("{release}-pingone-operator");
    // The chart as released: `helm package` (what make dist ships), installed from the archive.
    let chart = if kustomized {
        PathBuf::new()
    } else {
        let dir = work.join("chart");
        let mut cmd = helm_on(env.cp);
        cmd.args(["package", CHART, "--destination"]).arg(&dir);
        run(cmd, "helm package").await;
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .expect("a chart archive")
    };
    let (lease, sa) = match install {
        Install::Chart { namespaced } => {
            let values = setup.chart_values(namespaced, json!({}));
            let mut cmd = helm_on(env.cp);
            cmd.args(["install", release])
                .arg(&chart)
                .args(["--namespace", &release_ns])
                .arg("-f")
                .arg(&values);
            run(cmd, "helm install").await;
            (fullname.as_str(), fullname.as_str())
        }
        Install::Kustomize | Install::KustomizeNamespaced => {
            let overlay = setup.kustomization(install == Install::KustomizeNamespaced, "1");
            let mut cmd = env.cp.kubectl();
            cmd.args(["apply", "--server-side", "-k"]).arg(&overlay);
            run(cmd, "kubectl apply -k").await;
            ("pingone-operator", "pingone-operator")
        }
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release_ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &release_ns);
    let (names, leader) = ready_with_leader(
        &pods,
        &leases,
        lease,
        2,
        None,
        "both operator pods Ready through their probes, one leading",
    )
    .await;
    eprintln!(
        "{install:?}: {names:?} Ready, {leader} leads, {:.1}s after the start",
        started.elapsed().as_secs_f64()
    );
    // The PodDisruptionBudget covers the pair: two healthy, one voluntary disruption allowed.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &release_ns);
    eventually_every(
        POLL,
        Duration::from_secs(60),
        "the PodDisruptionBudget sees two healthy pods and allows one disruption",
        || async {
            let list = budgets
                .list(&ListParams::default().labels("app.kubernetes.io/name=pingone-operator"))
                .await
                .ok()?;
            let [pdb] = list.items.as_slice() else {
                return None;
            };
            let status = pdb.status.as_ref()?;
            (status.current_healthy == 2 && status.disruptions_allowed == 1).then_some(())
        },
    )
    .await;
    // The default roles of Kubernetes take in the connections (aggregated ClusterRoles): a
    // user with `edit` in a namespace may create them.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    eventually_every(
        POLL,
        Duration::from_secs(60),
        "the edit ClusterRole aggregates pingoneconnections",
        || async {
            let edit = roles.get("edit").await.ok()?;
            edit.rules?
                .iter()
                .any(|r| {
                    r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|x| x == "pingoneconnections"))
                        && r.verbs.iter().any(|v| v == "create")
                })
                .then_some(())
        },
    )
    .await;
    // Each replica says what it is on its own metrics: the leader 1, the standby 0.
    for name in &names {
        let pod = pods.get(name).await.unwrap();
        let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
        let text = reqwest::get(format!("http://{ip}:8080/metrics"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("the pod's /metrics")
            .text()
            .await
            .unwrap();
        let expected = if *name == leader { 1.0 } else { 0.0 };
        assert_eq!(
            metric_value(&text, "pingone_operator_leader", &[]),
            Some(expected),
            "pingone_operator_leader of {name}"
        );
    }
    // As installed: uid 65532, read-only root filesystem (the image's user, the chart's
    // security context), checked on the running pod.
    let pod = pods.get(&leader).await.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let security = spec.containers[0].security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        spec.security_context.as_ref().unwrap().run_as_user,
        Some(65532)
    );

    // The user's story: the examples applied with kubectl, a pod reads the token.
    apply_example(env.cp, &env.ns, "credentials-secret.yaml", None);
    apply_example(env.cp, &env.ns, "connection.yaml", None);
    apply_example(env.cp, &env.ns, "token-reader.yaml", None);
    env.wait_ready(CONNECTION).await;
    let secrets = env.secrets();
    let sampler = ExpirySampler::start(secrets.clone(), TOKEN_SECRET, POLL);
    let app_pods: Api<Pod> = Api::namespaced(client.clone(), &env.ns);
    let (first, mut issued) = current_token(&secrets).await.expect("a token");
    eventually_every(
        POLL,
        Duration::from_secs(90),
        "the reader pod reads the token from its mounted files",
        || async {
            let pod = running_pod(&app_pods, READER).await?;
            reads_of(&app_pods, &pod_name(&pod))
                .await
                .contains(&first)
                .then_some(())
        },
    )
    .await;

    // The guard rails: the operator's ServiceAccount may create Secrets in the watched
    // namespace by its RBAC, but a Secret the operator does not manage is refused.
    let mut forged = env.cp.kubectl();
    forged.args([
        &format!("--as=system:serviceaccount:{release_ns}:{sa}"),
        "-n",
        &env.ns,
        "create",
        "secret",
        "generic",
        "forged",
        "--from-literal=key=value",
    ]);
    let out = tokio::task::spawn_blocking(move || forged.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ValidatingAdmissionPolicy"),
        "a forged Secret write by the operator's ServiceAccount was not refused by the guard \
         rails: {stderr}"
    );

    // Delete the leader's pod: another replica leads (the standby, or the replacement when it
    // starts first: after the old leader released the Lease, whichever asks first takes it)
    // and renews.
    let deleted = Instant::now();
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("leader pod deleted");
    let new_leader = eventually_every(
        POLL,
        Duration::from_secs(60),
        "another replica takes the Lease",
        || {
            let (leases, leader, pods) = (&leases, &leader, &pods);
            async move {
                let holder = leases.get(lease).await.ok()?.spec?.holder_identity?;
                operator_pods(pods)
                    .await
                    .into_iter()
                    .map(|(name, _, _)| name)
                    .find(|n| n != leader && holder.starts_with(n.as_str()))
            }
        },
    )
    .await;
    let takeover = deleted.elapsed();
    issued = a_renewal_after(&secrets, &issued).await;
    eprintln!(
        "{install:?}: {new_leader} leads {:.1}s after {leader}'s pod was deleted, and renewed",
        takeover.as_secs_f64()
    );
    // The Deployment replaces the deleted pod: two Ready again.
    ready_with_leader(&pods, &leases, lease, 2, None, "two Ready pods again").await;

    // A changed value rolls the Deployment: new pods, a new leader, renewals go on.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let deployment_name = match install {
        Install::Chart { .. } => fullname.as_str(),
        Install::Kustomize | Install::KustomizeNamespaced => "pingone-operator",
    };
    let before = deployments.get(deployment_name).await.unwrap();
    let old_hash = operator_pods(&pods).await[0].2.clone();
    match install {
        Install::Chart { namespaced } => {
            let values = setup.chart_values(
                namespaced,
                json!({"podAnnotations": {"test/revision": "2"}}),
            );
            let mut cmd = helm_on(env.cp);
            cmd.args(["upgrade", release])
                .arg(&chart)
                .args(["--namespace", &release_ns])
                .arg("-f")
                .arg(&values);
            run(cmd, "helm upgrade").await;
        }
        Install::Kustomize | Install::KustomizeNamespaced => {
            let overlay = setup.kustomization(install == Install::KustomizeNamespaced, "2");
            let mut cmd = env.cp.kubectl();
            cmd.args(["apply", "--server-side", "-k"]).arg(&overlay);
            run(cmd, "kubectl apply -k (changed)").await;
        }
    }
    let new_hash = eventually_every(
        POLL,
        Duration::from_secs(60),
        "a new ReplicaSet for the changed template",
        || async {
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &release_ns);
            let list = sets.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .filter_map(|rs| rs.metadata.labels?.get("pod-template-hash").cloned())
                .find(|h| Some(h) != old_hash.as_ref())
        },
    )
    .await;
    let (_, rolled_leader) = ready_with_leader(
        &pods,
        &leases,
        lease,
        2,
        Some(&new_hash),
        "the rolled pods Ready, one leading",
    )
    .await;
    let after = deployments.get(deployment_name).await.unwrap();
    assert!(
        after.metadata.generation > before.metadata.generation,
        "the Deployment did not change"
    );
    a_renewal_after(&secrets, &issued).await;
    eprintln!(
        "{install:?}: rolled to {new_hash}, {rolled_leader} leads and renewed, {:.1}s after \
         the start",
        started.elapsed().as_secs_f64()
    );

    let (samples, problems, span) = sampler.finish().await;
    assert!(samples > 20, "only {samples} samples of the token Secret");
    assert!(
        problems.is_empty(),
        "the token Secret held an expired token during {span:?}: {problems:?}"
    );
    let requests = env.standin.requests();
    assert!(
        requests.iter().all(|r| r.status == 200),
        "a token request failed: {:?}",
        requests.iter().map(|r| r.status).collect::<Vec<_>>()
    );

    // Uninstall; the connection and its token Secret stay (no owner but the connection).
    match install {
        Install::Chart { .. } => {
            let mut cmd = helm_on(env.cp);
            cmd.args(["uninstall", release, "--namespace", &release_ns, "--wait"]);
            run(cmd, "helm uninstall").await;
        }
        Install::Kustomize | Install::KustomizeNamespaced => {
            // Not `kubectl delete -k`: the base holds the CRD, which other tests use. The
            // operator's cluster-wide grants go too: the namespaced install must do without.
            let mut cmd = env.cp.kubectl();
            cmd.args(["delete", "--ignore-not-found", "-n", &release_ns])
                .args(["deployment/pingone-operator"]);
            run(cmd, "kubectl delete deployment").await;
            let mut cmd = env.cp.kubectl();
            cmd.args(["delete", "--ignore-not-found"]).args([
                "clusterrolebinding/pingone-operator",
                "clusterrole/pingone-operator",
            ]);
            run(cmd, "kubectl delete the cluster-wide grants").await;
            // The pods gone, so that the next install's Ready pods are its own.
            let pods = pods.clone();
            eventually_every(
                POLL,
                Duration::from_secs(60),
                "the operator pods gone",
                || {
                    let pods = pods.clone();
                    async move { operator_pods(&pods).await.is_empty().then_some(()) }
                },
            )
            .await;
        }
    }
    assert!(env.token_secret(TOKEN_SECRET).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_as_pods_with_cluster_rbac() {
    installed_operator_story(Install::Chart { namespaced: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_as_pods_with_namespaced_rbac() {
    installed_operator_story(Install::Chart { namespaced: true }).await;
}

/// Both kustomize installs share the names and the namespace of deploy/base: one after the
/// other.
#[tokio::test(flavor = "multi_thread")]
async fn the_kustomize_base_and_its_namespaced_overlay_run_as_pods() {
    installed_operator_story(Install::Kustomize).await;
    installed_operator_story(Install::KustomizeNamespaced).await;
}

/// A file of the image archive (`tar -xOf`).
fn archive_file(archive: &Path, member: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("tar runs");
    assert!(out.status.success(), "no {member} in {}", archive.display());
    out.stdout
}

fn blob(archive: &Path, digest: &str) -> serde_json::Value {
    let member = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&archive_file(archive, &member)).expect("JSON blob")
}

/// The Dockerfile's last stage and the local build describe the same image: entrypoint,
/// command, user, environment, port and labels; the local build's files come from the recipe
/// the Dockerfile runs (deploy/image/rootfs.sh), and its layer holds what the operator needs.
#[test]
fn the_local_image_is_the_dockerfiles_image() {
    let image = operator_image();
    let index = blob_index(&image.archive);
    let manifest = blob(
        &image.archive,
        index["manifests"][0]["digest"].as_str().unwrap(),
    );
    let config = blob(
        &image.archive,
        manifest["config"]["digest"].as_str().unwrap(),
    );
    let c = &config["config"];

    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage.starts_with("scratch"),
        "last stage: {last_stage}"
    );
    assert!(last_stage.contains("COPY --from=builder /rootfs /"));
    assert!(dockerfile.contains("RUN deploy/image/rootfs.sh /pingone-operator /rootfs"));
    let instruction = |name: &str| -> String {
        last_stage
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in the Dockerfile's last stage"))
            .to_string()
    };
    let json_array = |v: &serde_json::Value| serde_json::to_string(v).unwrap();
    assert_eq!(
        instruction("ENTRYPOINT").replace(' ', ""),
        json_array(&c["Entrypoint"])
    );
    assert_eq!(instruction("CMD").replace(' ', ""), json_array(&c["Cmd"]));
    assert_eq!(instruction("USER"), c["User"].as_str().unwrap());
    assert_eq!(c["User"], "65532:65532");
    let env_line = instruction("ENV");
    let env: Vec<&str> = env_line.split(' ').collect();
    let image_env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env, image_env);
    assert!(
        c["ExposedPorts"]
            .get(format!("{}/tcp", instruction("EXPOSE")))
            .is_some()
    );
    let labels = c["Labels"].as_object().unwrap();
    for key in [
        "title",
        "description",
        "licenses",
        "source",
        "version",
        "revision",
    ] {
        let key = format!("org.opencontainers.image.{key}");
        assert!(labels.contains_key(&key), "no label {key}");
        assert!(
            last_stage.contains(&format!("{key}=")),
            "Dockerfile lacks {key}"
        );
    }
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.version"].as_str(),
        Some(image.tag())
    );

    // The layer: the binary, the loader and libraries, CA certificates, the nonroot user; no
    // shell.
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let member = format!("blobs/sha256/{}", layer.trim_start_matches("sha256:"));
    let gz = archive_file(&image.archive, &member);
    let mut child = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(&gz).unwrap();
    });
    let listing = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let files = String::from_utf8(listing.stdout).unwrap();
    for needed in [
        "./pingone-operator",
        "./lib64/ld-linux-x86-64.so.2",
        "./lib/x86_64-linux-gnu/libc.so.6",
        "./etc/ssl/certs/ca-certificates.crt",
        "./etc/passwd",
    ] {
        assert!(
            files.lines().any(|l| l == needed),
            "no {needed} in the layer"
        );
    }
    assert!(
        !files.lines().any(|l| l.ends_with("/sh")),
        "a shell in the image"
    );

    // The SBOM beside it names the crates and the Debian packages.
    let sbom: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.archive.with_file_name("sbom.cdx.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    for prefix in [
        "pkg:cargo/kube-client@",
        "pkg:cargo/rustls@",
        "pkg:deb/debian/libc6@",
    ] {
        assert!(
            purls.iter().any(|p| p.starts_with(prefix)),
            "no {prefix} in the SBOM"
        );
    }
}

fn blob_index(archive: &Path) -> serde_json::Value {
    serde_json::from_slice(&archive_file(archive, "index.json")).expect("index.json")
}

/// An in-memory registry (`crane registry serve`, built from Go modules with the test tools),
/// stopped when dropped.
struct Registry {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Registry {
    async fn start() -> Registry {
        pingone_operator::pingone::install_crypto_provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(crate::gitops::tools().join("crane"))
            .args(["registry", "serve", "--address", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("crane registry serve runs");
        eventually(
            Duration::from_secs(20),
            "the registry answers",
            || async move {
                let r = reqwest::get(format!("http://{addr}/v2/")).await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        Registry { child, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn crane(args: &[&str]) -> String {
    let mut cmd = Command::new(crate::gitops::tools().join("crane"));
    cmd.arg("--insecure").args(args);
    run(cmd, &format!("crane {}", args.join(" "))).await
}

/// The README's first install step, as written: the image archive into a registry with
/// `crane push`, unpacked (an OCI layout: the release's digest stays) or as it is (a Docker
/// archive: the same config and layer, Docker's manifest).
#[tokio::test(flavor = "multi_thread")]
async fn the_image_archive_goes_into_a_registry_with_its_digest() {
    let image = operator_image();
    let env_file =
        std::fs::read_to_string(image.archive.with_file_name("image.env")).expect("image.env");
    let digest = env_file
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE_DIGEST="))
        .expect("IMAGE_DIGEST")
        .to_string();
    let index = blob_index(&image.archive);
    let manifest = blob(
        &image.archive,
        index["manifests"][0]["digest"].as_str().unwrap(),
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let registry = Registry::start().await;
    let layout = std::env::temp_dir().join(format!("pingone-image-{}", unique()));
    std::fs::create_dir_all(&layout).unwrap();
    let mut untar = Command::new("tar");
    untar.arg("-xf").arg(&image.archive).arg("-C").arg(&layout);
    run(untar, "unpack the image archive").await;
    let oci_ref = format!("{}/pingone-operator:{}", registry.addr, image.tag());
    crane(&["push", layout.to_str().unwrap(), &oci_ref]).await;
    let _ = std::fs::remove_dir_all(&layout);
    assert_eq!(crane(&["digest", &oci_ref]).await.trim(), digest);

    let docker_ref = format!("{}/pingone-operator:docker-archive", registry.addr);
    crane(&["push", image.archive.to_str().unwrap(), &docker_ref]).await;
    let pushed: serde_json::Value =
        serde_json::from_str(&crane(&["manifest", &docker_ref]).await).unwrap();
    assert_eq!(pushed["config"]["digest"], config_digest.as_str());
    assert_eq!(pushed["layers"][0]["digest"], layer_digest.as_str());
    let config: serde_json::Value =
        serde_json::from_str(&crane(&["config", &docker_ref]).await).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
}
