//! Shared set-up of the operator's integration tests: the real control plane, a PingOne
//! stand-in per test, a namespace per test, and the operator running in-process, watching only
//! that namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use pingone_operator::api::PingOneConnection;
use pingone_operator::controller::digest_key::DigestKey;
use pingone_operator::controller::{self, Context, ControllerConfig, schedule::Timing};
use pingone_operator::metrics::Metrics;
use pingone_operator::pingone::{
    API_DOMAINS, REGIONAL_AUTH_DOMAINS, TokenClient, TokenClientConfig,
};
use pingone_testbed::controlplane::ControlPlane;
use pingone_testbed::standin::{ClientRegistration, StandIn, StandInConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ENV_ID: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";
pub const CLIENT_ID: &str = "6f5b6ab5-0c4e-4ea4-9d3b-1c1f0f6a1d01";
pub const CLIENT_SECRET: &str = "s3cr3t+/:%&= with spaces~";
pub const CRD: &str = include_str!("../../crds/pingoneconnections.pingone.tokenops.dev.yaml");

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(100), timeout, what, check).await
}

/// [`eventually`], polling every `interval` (for checks that cost the shared API server more).
pub async fn eventually_every<T, F, Fut>(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(interval).await;
    }
}

pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: String,
    pub standin: StandIn,
    operator: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    pub metrics: Arc<Metrics>,
    /// The in-process operator's inputs digest key: one per test, kept across restarts as the
    /// key Secret keeps it for a real operator.
    pub digest_key: DigestKey,
}

/// The six regional auth domains and the six Management API domains, all sent to `addr`.
pub fn regional_overrides(addr: std::net::SocketAddr) -> Vec<(String, std::net::SocketAddr)> {
    REGIONAL_AUTH_DOMAINS
        .iter()
        .chain(API_DOMAINS.iter())
        .map(|d| (d.to_string(), addr))
        .collect()
}

/// A PingOne client for tests: `config` with a 5 s request timeout.
pub fn pingone_client(config: TokenClientConfig) -> TokenClient {
    TokenClient::new(TokenClientConfig {
        request_timeout: Duration::from_secs(5),
        ..config
    })
    .expect("token client")
}

/// Timing for tests: the production floor and backoff shapes, shorter caps.
pub fn test_timing() -> Timing {
    Timing {
        min_interval: Duration::from_secs(2),
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(10),
        stalled_recheck: Duration::from_secs(3600),
        rollout_debounce: Duration::from_secs(15),
    }
}

impl TestEnv {
    /// Waits until the operator started last has reconciled connection `name` to the end: its
    /// fresh metrics count a reconcile and report the connection Ready only after the last step
    /// (past the rollout decision). Checks that a restarted operator changed nothing would pass
    /// without it for an operator that had not looked yet.
    pub async fn reconciled_to_the_end(&self, name: &str) {
        eventually(
            Duration::from_secs(20),
            "a reconcile by the restarted operator",
            || {
                let text = self.metrics.encode();
                let ns = self.ns.clone();
                async move {
                    (crate::resilience::metric_sum(&text, "pingone_operator_reconciles_total")
                        >= 1.0
                        && metric_value(
                            &text,
                            "pingone_operator_ready_status",
                            &[("namespace", &ns), ("name", name)],
                        ) == Some(1.0))
                    .then_some(())
                }
            },
        )
        .await;
    }

    /// A namespace of its own with a credentials Secret `creds` for a client registered in the
    /// stand-in.
    pub async fn new(prefix: &str) -> TestEnv {
        Self::with_standin(prefix, StandInConfig::default()).await
    }

    pub async fn with_standin(prefix: &str, config: StandInConfig) -> TestEnv {
        Self::build(ControlPlane::shared(), prefix, config).await
    }

    /// On a control plane of the test's own (for tests that restart it).
    pub async fn on(cp: &'static ControlPlane, prefix: &str) -> TestEnv {
        Self::build(cp, prefix, StandInConfig::default()).await
    }

    /// On a control plane of the test's own whose CRD the test installs (e.g. with Helm).
    pub async fn on_without_crd(cp: &'static ControlPlane, prefix: &str) -> TestEnv {
        Self::build_with(cp, prefix, StandInConfig::default(), false).await
    }

    async fn build(cp: &'static ControlPlane, prefix: &str, config: StandInConfig) -> TestEnv {
        Self::build_with(cp, prefix, config, true).await
    }

    async fn build_with(
        cp: &'static ControlPlane,
        prefix: &str,
        config: StandInConfig,
        install_crd: bool,
    ) -> TestEnv {
        pingone_operator::pingone::install_crypto_provider();
        if install_crd {
            cp.install_crds(CRD).await.expect("CRD installs");
        }
        let client = cp.client().await.expect("client");
        let ns = cp.namespace(prefix).await.expect("namespace");
        let standin = StandIn::start(config).await.expect("stand-in starts");
        standin.add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET));
        let env = TestEnv {
            cp,
            client,
            ns,
            standin,
            operator: None,
            metrics: Arc::new(Metrics::new()),
            digest_key: DigestKey::random(),
        };
        env.put_credentials("creds", CLIENT_ID, CLIENT_SECRET).await;
        env
    }

    /// A PingOne client that reaches the stand-in under the regional names and
    /// `extra_domains` (allowed too), trusting its CA.
    pub fn token_client(&self, extra_domains: &[&str]) -> TokenClient {
        let addr = self.standin.addr();
        let mut overrides = regional_overrides(addr);
        overrides.extend(extra_domains.iter().map(|d| (d.to_string(), addr)));
        pingone_client(TokenClientConfig {
            extra_allowed_domains: extra_domains.iter().map(|d| d.to_string()).collect(),
            extra_ca_pem: Some(self.standin.ca_pem().as_bytes().to_vec()),
            host_overrides: overrides,
            ..TokenClientConfig::default()
        })
    }

    /// Starts the operator in-process, watching this test's namespace.
    pub fn start_operator(&mut self) {
        self.start_operator_with(test_timing(), &[]);
    }

    pub fn start_operator_with(&mut self, timing: Timing, extra_domains: &[&str]) {
        let tokens = self.token_client(extra_domains);
        self.start_operator_custom(tokens, timing);
    }

    /// With a PingOne client of the test's making (wrong CA, other overrides).
    pub fn start_operator_custom(&mut self, tokens: TokenClient, timing: Timing) {
        assert!(self.operator.is_none(), "operator already running");
        self.metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            tokens,
            self.metrics.clone(),
            timing,
            self.digest_key.clone(),
        ));
        let (tx, rx) = oneshot::channel::<()>();
        let config = ControllerConfig {
            namespaces: vec![self.ns.clone()],
            concurrency: 8,
            ..Default::default()
        };
        let handle = tokio::spawn(controller::run(ctx, config, async {
            let _ = rx.await;
        }));
        self.operator = Some((handle, tx));
    }

    pub async fn stop_operator(&mut self) {
        if let Some((handle, tx)) = self.operator.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(20), handle)
                .await
                .expect("operator stops within 20 s")
                .expect("operator task");
        }
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn connections(&self) -> Api<PingOneConnection> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn put_credentials(&self, name: &str, id: &str, secret: &str) {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"clientId": id, "clientSecret": secret},
        }))
        .unwrap();
        self.secrets()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&s))
            .await
            .expect("credentials Secret applied");
    }

    /// Creates a connection from a base spec (regional domain, the test environment, Secret
    /// `creds`) merged with `overrides`.
    pub async fn create_connection(
        &self,
        name: &str,
        overrides: serde_json::Value,
    ) -> PingOneConnection {
        let obj = self.connection_object(name, overrides);
        self.connections()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating connection {name}: {e}"))
    }

    pub fn connection_object(&self, name: &str, overrides: serde_json::Value) -> PingOneConnection {
        serde_json::from_value(self.connection_json(name, overrides)).expect("connection object")
    }

    /// The connection as JSON: the base spec merged with `overrides` (null removes a field).
    pub fn connection_json(&self, name: &str, overrides: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "authDomain": "auth.pingone.eu",
            "environmentId": ENV_ID,
            "credentialsSecretRef": {"name": "creds"},
        });
        merge(&mut spec, overrides);
        serde_json::json!({
            "apiVersion": "pingone.tokenops.dev/v1alpha1",
            "kind": "PingOneConnection",
            "metadata": {"name": name},
            "spec": spec,
        })
    }

    pub async fn delete_connection(&self, name: &str) {
        self.connections()
            .delete(name, &DeleteParams::background())
            .await
            .expect("delete connection");
    }

    /// Waits until the connection's condition `type_` has `status` (and `reason`, if given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> PingOneConnection {
        let api = self.connections();
        eventually(
            timeout,
            &format!("{name}: {type_}={status} {reason:?}"),
            || {
                let api = api.clone();
                async move {
                    let c = api.get(name).await.ok()?;
                    let cond = c
                        .status
                        .as_ref()?
                        .conditions
                        .iter()
                        .find(|c| c.type_ == type_)?
                        .clone();
                    (cond.status == status && reason.is_none_or(|r| cond.reason == r)).then_some(c)
                }
            },
        )
        .await
    }

    /// Waits until `name` is Stalled=True with `reason`.
    pub async fn wait_stalled(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> PingOneConnection {
        self.wait_condition(name, "Stalled", "True", Some(reason), timeout)
            .await
    }

    /// Waits until `name` is Reconciling=True with `reason`.
    pub async fn wait_reconciling(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> PingOneConnection {
        self.wait_condition(name, "Reconciling", "True", Some(reason), timeout)
            .await
    }

    pub async fn wait_ready(&self, name: &str) -> PingOneConnection {
        self.wait_condition(name, "Ready", "True", None, Duration::from_secs(30))
            .await
    }

    /// The connection's status as JSON, with fields the typed status may not know.
    pub async fn status_json(&self, name: &str) -> serde_json::Value {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &ApiResource::erase::<PingOneConnection>(&()),
        );
        let obj = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("getting connection {name}: {e}"));
        obj.data["status"].clone()
    }

    /// Asks for a new token with the renew-requested-at annotation set to `value`.
    pub async fn request_renewal(&self, name: &str, value: &str) {
        self.connections()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    pingone_operator::api::RENEW_REQUESTED_AT: value}}})),
            )
            .await
            .expect("annotate connection");
    }

    /// Waits until status.renewRequestServed is `value`; returns the status.
    pub async fn wait_served(&self, name: &str, value: &str) -> serde_json::Value {
        eventually(
            Duration::from_secs(30),
            &format!("renew request {value} served"),
            || async {
                let status = self.status_json(name).await;
                (status["renewRequestServed"] == value).then_some(status)
            },
        )
        .await
    }

    pub async fn token_secret(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.expect("get secret")
    }

    pub fn condition<'a>(
        conn: &'a PingOneConnection,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        conn.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .unwrap_or_else(|| panic!("{} has no {type_} condition", conn.name_any()))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some((handle, tx)) = self.operator.take() {
            let _ = tx.send(());
            handle.abort();
        }
    }
}

pub(crate) fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The Events of connection `name` with `reason`, oldest first.
pub async fn events_for(
    env: &TestEnv,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    let mut list: Vec<k8s_openapi::api::events::v1::Event> = events
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list
}

/// A Secret's data value as text.
pub fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8(v.0.clone()).expect("UTF-8"))
}

/// The value of the series of `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Reads a token Secret's `expires_at` key every `period` in the background and records every
/// sample that was not in the future when the read was sent.
pub struct ExpirySampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<(usize, Vec<String>, Duration)>,
}

impl ExpirySampler {
    pub fn start(secrets: Api<Secret>, name: &str, period: Duration) -> ExpirySampler {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut samples = 0;
            let mut problems = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                // What the Secret held at some point after this instant.
                let sent = jiff::Timestamp::now();
                if let Ok(Some(s)) = secrets.get_opt(&name).await {
                    samples += 1;
                    match data(&s, "expires_at").map(|t| t.parse::<jiff::Timestamp>()) {
                        Some(Ok(expires)) if expires > sent => {}
                        Some(Ok(expires)) => problems
                            .push(format!("at {sent}: expired token (expires_at {expires})")),
                        other => problems.push(format!("at {sent}: expires_at {other:?}")),
                    }
                }
                tokio::time::sleep(period).await;
            }
            (samples, problems, started.elapsed())
        });
        ExpirySampler { stop, task }
    }

    /// Stops sampling; returns the number of samples, the problems seen and how long it
    /// sampled.
    pub async fn finish(self) -> (usize, Vec<String>, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("sampler task")
    }
}

/// Runs `cmd` (kubectl, usually `env.cp.kubectl()` with arguments) off the runtime and asserts
/// that it succeeded, showing its stderr and `context` otherwise. Returns its stdout.
pub async fn run_ok(mut cmd: std::process::Command, context: &str) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{context}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
