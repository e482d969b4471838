//! The user's story on a real node (issue 14): `kubectl apply` the examples, the pod of
//! examples/token-reader.yaml mounts the token Secret and reads every rotated token from its
//! files; a workload in `rolloutRestartTargets` is restarted after a rotation and runs with the
//! new token; an operator restart restarts nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use pingone_operator::controller::rollout::RESTARTED_FOR;
use pingone_testbed::controlplane::ControlPlane;
use pingone_testbed::node::{Node, SYNC_FREQUENCY};
use pingone_testbed::standin::ClientRegistration;
use serde_json::json;
use sha2::Digest as _;

use crate::resilience::metric_sum;
use crate::support::*;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
/// The example's worker application (credentials-secret.yaml) and token Secret.
pub(crate) const EXAMPLE_CLIENT_ID: &str = "9b2f6c1e-4d3a-4e8b-a7c5-2f1d0e9b8a76";
pub(crate) const EXAMPLE_CLIENT_SECRET: &str = "replace-me-with-the-worker-app-client-secret";
pub(crate) const TOKEN_SECRET: &str = "billing-api-token";
pub(crate) const CONNECTION: &str = "billing-api";
pub(crate) const READER: &str = "token-reader";
const RESTARTED: &str = "token-reader-restarted";

/// What a reader pod printed after reading the mounted files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Read {
    pub(crate) expires_at: String,
    pub(crate) fingerprint: String,
}

/// The first 12 hex digits of the token's SHA-256, as token-reader.yaml prints it.
fn fingerprint(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

fn parse_reads(log: &str) -> Vec<Read> {
    log.lines()
        .filter_map(|l| {
            let expires_at = l.split("expires_at=").nth(1)?.split(' ').next()?;
            let fingerprint = l.split("access_token=sha256:").nth(1)?.trim();
            Some(Read {
                expires_at: expires_at.to_string(),
                fingerprint: fingerprint.to_string(),
            })
        })
        .collect()
}

/// The token in the Secret, as the reader would print it, and its issue time.
pub(crate) async fn current_token(secrets: &Api<Secret>) -> Option<(Read, String)> {
    let secret = secrets.get_opt(TOKEN_SECRET).await.ok()??;
    let read = Read {
        expires_at: data(&secret, "expires_at")?,
        fingerprint: fingerprint(&data(&secret, "access_token")?),
    };
    let issued = secret
        .metadata
        .annotations?
        .get("pingone.tokenops.dev/issued-at")?
        .clone();
    Some((read, issued))
}

/// The Running pod of Deployment `app` (not terminating), if there is exactly one.
pub(crate) async fn running_pod(pods: &Api<Pod>, app: &str) -> Option<Pod> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={app}")))
        .await
        .ok()?;
    let running: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    (running.len() == 1).then(|| running.into_iter().next().expect("one"))
}

pub(crate) async fn reads_of(pods: &Api<Pod>, pod: &str) -> Vec<Read> {
    match pods.logs(pod, &LogParams::default()).await {
        Ok(log) => parse_reads(&log),
        Err(_) => Vec::new(),
    }
}

/// Each poll here lists pods and fetches logs through the API server from the kubelet, and the
/// other tests share both: every 500 ms is enough.
pub(crate) const POLL: Duration = Duration::from_millis(500);

pub(crate) fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pod name")
}

fn restart_stamp(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(RESTARTED_FOR)
        .cloned()
}

/// `kubectl apply -f -` of an example file, moved to namespace `ns` (and renamed).
pub(crate) fn apply_example(cp: &ControlPlane, ns: &str, file: &str, rename: Option<(&str, &str)>) {
    let path = format!("{EXAMPLES}/{file}");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text = text.replace("namespace: payments", &format!("namespace: {ns}"));
    if let Some((from, to)) = rename {
        text = text.replace(from, to);
    }
    let mut child = cp
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("kubectl stdin");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_a_real_node_read_every_rotated_token_from_the_mounted_secret() {
    let node_started = Instant::now();
    if let Err(e) = Node::check() {
        panic!("no node can run here: {e:#}");
    }
    let mut env = TestEnv::new("node").await;
    tokio::task::spawn_blocking(Node::shared)
        .await
        .expect("node starts");
    eprintln!(
        "node: Ready after {:.1}s",
        node_started.elapsed().as_secs_f64()
    );
    // 45 s tokens: renewed about 15 s before expiry, so the first rotation comes about 30 s
    // after the first token.
    env.standin.set_token_lifetime(Duration::from_secs(45));
    env.standin.add_client(ClientRegistration::new(
        ENV_ID,
        EXAMPLE_CLIENT_ID,
        EXAMPLE_CLIENT_SECRET,
    ));

    // The user's story: the examples, applied with kubectl.
    apply_example(env.cp, &env.ns, "credentials-secret.yaml", None);
    apply_example(env.cp, &env.ns, "connection.yaml", None);
    apply_example(env.cp, &env.ns, "token-reader.yaml", None);
    // The same reader for an application that reads the token once: restarted after rotations.
    apply_example(
        env.cp,
        &env.ns,
        "token-reader.yaml",
        Some((READER, RESTARTED)),
    );
    env.connections()
        .patch(
            CONNECTION,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rolloutRestartTargets": [
                {"kind": "Deployment", "name": RESTARTED}]}})),
        )
        .await
        .expect("rolloutRestartTargets set");
    env.start_operator();
    env.wait_ready(CONNECTION).await;

    let secrets = env.secrets();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let (first, first_issued) = current_token(&secrets).await.expect("first token");

    // The reader's pod runs and reads the first token from its mounted files.
    let reader = eventually_every(
        POLL,
        Duration::from_secs(60),
        "the reader pod runs and reads the first token",
        || {
            let (pods, first) = (pods.clone(), first.clone());
            async move {
                let pod = running_pod(&pods, READER).await?;
                reads_of(&pods, &pod_name(&pod))
                    .await
                    .contains(&first)
                    .then_some(pod)
            }
        },
    )
    .await;
    let reader_name = pod_name(&reader);
    eprintln!(
        "node: pod {reader_name} read expires_at={} access_token=sha256:{}",
        first.expires_at, first.fingerprint
    );

    // A rotation: the Secret holds a new token...
    let (second, second_issued) =
        eventually(Duration::from_secs(60), "a rotation to a new token", || {
            let (secrets, first) = (secrets.clone(), first.clone());
            async move { current_token(&secrets).await.filter(|(t, _)| *t != first) }
        })
        .await;
    let rotated = Instant::now();
    // ... and soon the files in the running pod do: the kubelet refreshes Secret volumes at
    // a pod's next sync.
    eventually_every(
        POLL,
        SYNC_FREQUENCY * 2 + Duration::from_secs(10),
        "the running pod reads the rotated token from its files",
        || {
            let (pods, second, name) = (pods.clone(), second.clone(), reader_name.clone());
            async move { reads_of(&pods, &name).await.contains(&second).then_some(()) }
        },
    )
    .await;
    let latency = rotated.elapsed();
    eprintln!(
        "node: the running pod read the rotated token {:.1}s after the Secret changed \
         (kubelet sync period {}s)",
        latency.as_secs_f64(),
        SYNC_FREQUENCY.as_secs()
    );
    // The same pod, never restarted: the file changed under it.
    let still = running_pod(&pods, READER).await.expect("reader still runs");
    assert_eq!(pod_name(&still), reader_name);
    let restarts: i32 = still
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "the reader's container restarted");

    // The restart target is restarted for the new token and its new pod reads it.
    let restarted = eventually_every(
        POLL,
        Duration::from_secs(60),
        "the restart target runs a pod for the rotated token that reads it",
        || {
            let (pods, second, issued) = (pods.clone(), second.clone(), second_issued.clone());
            async move {
                let pod = running_pod(&pods, RESTARTED).await?;
                (restart_stamp(&pod).as_deref() == Some(issued.as_str())
                    && reads_of(&pods, &pod_name(&pod)).await.first() == Some(&second))
                .then_some(pod)
            }
        },
    )
    .await;
    assert!(first_issued < second_issued);
    eprintln!(
        "node: restart target pod {} started for the rotated token and read it",
        pod_name(&restarted)
    );

    // An operator restart restarts nothing. Tokens last an hour from the next one on, so no
    // rotation comes in between; a renew request brings that token now.
    env.standin.set_token_lifetime(Duration::from_secs(3600));
    env.request_renewal(CONNECTION, "node-test").await;
    env.wait_served(CONNECTION, "node-test").await;
    let (third, third_issued) = current_token(&secrets).await.expect("token");
    let settled = eventually_every(
        POLL,
        Duration::from_secs(60),
        "the restart target runs a pod for the hour-long token",
        || {
            let (pods, third, issued) = (pods.clone(), third.clone(), third_issued.clone());
            async move {
                let pod = running_pod(&pods, RESTARTED).await?;
                (restart_stamp(&pod).as_deref() == Some(issued.as_str())
                    && reads_of(&pods, &pod_name(&pod)).await.first() == Some(&third))
                .then_some(pod)
            }
        },
    )
    .await;
    let generation = |d: Deployment| d.metadata.generation;
    let before = (
        generation(deployments.get(READER).await.unwrap()),
        generation(deployments.get(RESTARTED).await.unwrap()),
    );
    env.stop_operator().await;
    env.start_operator();
    env.reconciled_to_the_end(CONNECTION).await;
    let after = (
        generation(deployments.get(READER).await.unwrap()),
        generation(deployments.get(RESTARTED).await.unwrap()),
    );
    assert_eq!(
        after, before,
        "a Deployment changed after the operator restart"
    );
    assert_eq!(
        metric_sum(
            &env.metrics.encode(),
            "pingone_operator_rollout_restarts_total"
        ),
        0.0
    );
    let reader_now = running_pod(&pods, READER).await.expect("reader runs");
    let target_now = running_pod(&pods, RESTARTED).await.expect("target runs");
    assert_eq!(pod_name(&reader_now), reader_name);
    assert_eq!(pod_name(&target_now), pod_name(&settled));
    assert_eq!(
        current_token(&secrets).await.map(|(t, _)| t),
        Some(third.clone()),
        "the restarted operator renewed the token"
    );
    // The running reader has the hour-long token too.
    eventually_every(
        POLL,
        SYNC_FREQUENCY * 2 + Duration::from_secs(10),
        "the running pod reads the hour-long token",
        || {
            let (pods, third, name) = (pods.clone(), third.clone(), reader_name.clone());
            async move { reads_of(&pods, &name).await.contains(&third).then_some(()) }
        },
    )
    .await;
    env.stop_operator().await;
    eprintln!(
        "node: test done {:.1}s after start",
        node_started.elapsed().as_secs_f64()
    );
}
