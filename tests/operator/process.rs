//! The operator as it ships: the binary, run as a separate process with the ServiceAccount and
//! RBAC from deploy/, serving health and metrics, stopping on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base");

/// The operator binary, running; killed on drop. Its output lines are collected.
pub struct OperatorProcess {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub port: u16,
}

impl OperatorProcess {
    /// With the admin kubeconfig; a leader election Lease of its own in the test namespace.
    pub fn start(env: &TestEnv, extra: &[&str]) -> OperatorProcess {
        Self::start_with_lease(
            env,
            env.cp.kubeconfig(),
            (&env.ns, "pingone-operator"),
            extra,
        )
    }

    /// Like [`OperatorProcess::start`] with `RUST_LOG` set to `filter`.
    pub fn start_logging(env: &TestEnv, filter: &str, extra: &[&str]) -> OperatorProcess {
        Self::spawn(
            env,
            env.cp.kubeconfig(),
            (&env.ns, "pingone-operator"),
            filter,
            extra,
        )
    }

    pub fn start_with_lease(
        env: &TestEnv,
        kubeconfig: &Path,
        lease: (&str, &str),
        extra: &[&str],
    ) -> OperatorProcess {
        Self::spawn(env, kubeconfig, lease, "info", extra)
    }

    fn spawn(
        env: &TestEnv,
        kubeconfig: &Path,
        (lease_namespace, lease): (&str, &str),
        log_filter: &str,
        extra: &[&str],
    ) -> OperatorProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pingone-operator"));
        cmd.arg("run")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--namespaces={}", env.ns))
            .arg(format!(
                "--extra-ca-file={}",
                env.standin.ca_path().display()
            ))
            .arg(format!(
                "--host-override=auth.pingone.eu={}",
                env.standin.addr()
            ))
            .arg(format!(
                "--host-override=api.pingone.eu={}",
                env.standin.addr()
            ))
            .arg("--log-format=json")
            .arg(format!("--leader-election-lease={lease}"))
            .arg(format!("--leader-election-namespace={lease_namespace}"))
            .args(extra)
            .env("RUST_LOG", log_filter);
        Self::launch(cmd)
    }

    /// Starts `cmd` (the operator's `run` with its flags) with a free `--listen` port, and
    /// collects its output lines.
    pub fn launch(mut cmd: Command) -> OperatorProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = cmd
            .arg(format!("--listen=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("operator binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        OperatorProcess { child, lines, port }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}: {status:?}");
    }

    /// Waits until /healthz answers; fails with the process's output if it does not (e.g. it
    /// exited on a flag it does not know).
    pub async fn wait_serving(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = reqwest::get(self.url("/healthz")).await
                && r.status().is_success()
            {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "operator not serving within {timeout:?} (exit status {exited:?}):\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let lines = self.lines.clone();
        eventually(timeout, &format!("log line with {needle:?}"), || {
            let found = lines.lock().unwrap().iter().any(|l| l.contains(needle));
            async move { found.then_some(()) }
        })
        .await
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Kills the process with SIGKILL: no clean-up of any kind.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "operator did not exit within {timeout:?} of SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies the shipped namespace, ServiceAccount and RBAC, and returns a kubeconfig for that
/// ServiceAccount.
pub async fn shipped_serviceaccount(env: &TestEnv) -> std::path::PathBuf {
    let files = [
        "namespace.yaml",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "leader-election-role.yaml",
        "digest-key-role.yaml",
    ];
    let mut cmd = env.cp.kubectl();
    cmd.args(["apply", "--server-side", "--force-conflicts"]);
    for f in files {
        cmd.arg("-f").arg(format!("{DEPLOY}/{f}"));
    }
    run_ok(cmd, "").await;
    env.cp
        .serviceaccount_kubeconfig("pingone-operator", "pingone-operator")
        .await
        .unwrap()
}

async fn can_i(env: &TestEnv, args: &[&str]) -> bool {
    let mut cmd = env.cp.kubectl();
    cmd.args([
        "auth",
        "can-i",
        "--as=system:serviceaccount:pingone-operator:pingone-operator",
    ]);
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_runs_with_exactly_the_shipped_rbac_serves_health_and_stops_on_sigterm() {
    let env = TestEnv::new("process").await;
    let kubeconfig = shipped_serviceaccount(&env).await;
    // The shipped RBAC allows Leases in the operator's namespace only; each test has a Lease of
    // its own there so that tests do not wait for each other.
    let lease = format!("lease-{}", env.ns);
    let operator =
        OperatorProcess::start_with_lease(&env, &kubeconfig, ("pingone-operator", &lease), &[]);

    let http = reqwest::Client::new();
    let healthz = eventually(Duration::from_secs(20), "/healthz answers", || {
        let http = http.clone();
        let url = operator.url("/healthz");
        async move { http.get(url).send().await.ok() }
    })
    .await;
    assert_eq!(healthz.status(), 200);
    // Ready once it leads and its watches have listed everything.
    eventually(Duration::from_secs(20), "/readyz 200", || {
        let http = http.clone();
        let url = operator.url("/readyz");
        async move {
            let r = http.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;

    env.create_connection("shipped", json!({})).await;
    env.wait_ready("shipped").await;
    // Events were written with the shipped RBAC.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let listed = eventually(Duration::from_secs(10), "TokenIssued Event", || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("TokenIssued"))
        }
    })
    .await;
    assert_eq!(listed.regarding.unwrap().name.as_deref(), Some("shipped"));

    let metrics = http.get(operator.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("pingone_operator_ready_status{"), "{text}");
    assert!(text.contains(&format!("namespace=\"{}\"", env.ns)));

    let output = operator.output();
    assert!(
        !output.to_lowercase().contains("forbidden"),
        "RBAC denial in logs:\n{output}"
    );
    assert!(!output.contains(CLIENT_SECRET), "client secret in logs");

    // Not broader than needed.
    for denied in [
        vec!["delete", "secrets", "-A"],
        vec!["update", "secrets", "-A"],
        vec!["create", "pods", "-A"],
        vec!["get", "configmaps", "-A"],
        vec!["update", "pingoneconnections.pingone.tokenops.dev", "-A"],
        vec!["delete", "pingoneconnections.pingone.tokenops.dev", "-A"],
        vec![
            "update",
            "pingoneconnections.pingone.tokenops.dev",
            "--subresource=status",
            "-A",
        ],
        vec!["create", "leases.coordination.k8s.io", "-n", "default"],
        vec!["create", "clusterrolebindings"],
        // The digest key is created once and never changed.
        vec![
            "update",
            "secrets/pingone-operator-digest-key",
            "-n",
            "pingone-operator",
        ],
        vec![
            "delete",
            "secrets/pingone-operator-digest-key",
            "-n",
            "pingone-operator",
        ],
    ] {
        assert!(
            !can_i(&env, &denied).await,
            "the shipped RBAC allows {denied:?}"
        );
    }
    for allowed in [
        vec![
            "patch",
            "pingoneconnections.pingone.tokenops.dev",
            "--subresource=status",
            "-A",
        ],
        vec!["watch", "secrets", "-A"],
        vec![
            "create",
            "leases.coordination.k8s.io",
            "-n",
            "pingone-operator",
        ],
        vec!["create", "secrets", "-n", "pingone-operator"],
        vec![
            "get",
            "secrets/pingone-operator-digest-key",
            "-n",
            "pingone-operator",
        ],
    ] {
        assert!(
            can_i(&env, &allowed).await,
            "the shipped RBAC lacks {allowed:?}"
        );
    }

    let status = operator.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// An HTTP status and body of one of the operator's endpoints.
async fn probe(operator: &OperatorProcess, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(operator.url(path)).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_waits_for_synced_watches_and_healthz_fails_on_a_watch_failing_too_long() {
    let env = TestEnv::new("health").await;
    // A ServiceAccount that may do everything the operator needs in this namespace except
    // list and watch Secrets: the Secret watch fails until that is granted.
    let role = |secret_verbs: &[&str]| {
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "health"},
            "rules": [
                {"apiGroups": ["pingone.tokenops.dev"], "resources": ["pingoneconnections"],
                 "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": ["pingone.tokenops.dev"], "resources": ["pingoneconnections/status"],
                 "verbs": ["get", "patch", "update"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                 "verbs": ["create", "patch"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": secret_verbs},
            ],
        })
    };
    let apply = |obj: serde_json::Value| {
        let client = env.client.clone();
        let ns = env.ns.clone();
        async move {
            let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
                api_version: obj["apiVersion"].as_str().unwrap().into(),
                kind: obj["kind"].as_str().unwrap().into(),
            })
            .unwrap();
            let ar = kube::core::ApiResource::from_gvk(&gvk);
            let api: kube::Api<kube::core::DynamicObject> =
                kube::Api::namespaced_with(client, &ns, &ar);
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            api.patch(
                &name,
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(&obj),
            )
            .await
            .unwrap();
        }
    };
    apply(
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "health"}}),
    )
    .await;
    apply(role(&["get", "create", "patch"])).await;
    apply(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "health"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "health"},
        "subjects": [{"kind": "ServiceAccount", "name": "health", "namespace": env.ns}],
    }))
    .await;
    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&env.ns, "health")
        .await
        .unwrap();
    let mut operator = OperatorProcess::start_with_lease(
        &env,
        &kubeconfig,
        (&env.ns, "health"),
        &["--leader-election=false", "--watch-failure-threshold=2s"],
    );
    operator.wait_serving(Duration::from_secs(20)).await;

    // Not ready: the Secret watch cannot list.
    let (code, body) = probe(&operator, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("secrets"), "{body}");
    // After the threshold, not healthy either: the kubelet would restart it.
    let body = eventually(Duration::from_secs(20), "/healthz 500", || async {
        let (code, body) = probe(&operator, "/healthz").await?;
        (code == 500).then_some(body)
    })
    .await;
    assert!(body.contains("secrets"), "{body}");
    let errors = metric_value(
        &operator.metrics().await,
        "pingone_operator_watch_errors_total",
        &[("watch", "secrets")],
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "watch errors counted: {errors}");

    // Granted: the watch recovers (after its backoff), and the process is ready and healthy.
    apply(role(&["get", "create", "patch", "list", "watch"])).await;
    eventually(
        Duration::from_secs(60),
        "/readyz and /healthz 200",
        || async {
            let (ready, _) = probe(&operator, "/readyz").await?;
            let (healthy, _) = probe(&operator, "/healthz").await?;
            (ready == 200 && healthy == 200).then_some(())
        },
    )
    .await;
    env.create_connection("c", serde_json::json!({})).await;
    env.wait_ready("c").await;
    // The reconcile counts as done once its Event is sent too, which may come just after Ready
    // shows.
    let last = eventually(
        Duration::from_secs(10),
        "a successful reconcile recorded",
        || async {
            let last = metric_value(
                &operator.metrics().await,
                "pingone_operator_last_successful_reconcile_timestamp_seconds",
                &[],
            )?;
            (last > 0.0).then_some(last)
        },
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last < 30.0 && last <= now + 1.0,
        "last reconcile {last}, now {now}"
    );
}
