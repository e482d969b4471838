//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
//! built from Go modules (see `tests/controlplane/build.sh`) and started on free loopback ports in
//! a temporary directory.
//!
//! [`ControlPlane::shared`] starts one per test process on first use and stops it when the
//! process exits, also after a panicking test: child processes get `PR_SET_PDEATHSIG`, an
//! `atexit` hook stops them and removes their directory, and directories left behind by a process
//! that was killed outright are removed by the next start.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Prefix of the temporary directories of control planes, so stale ones can be found.
const DIR_PREFIX: &str = "pingone-cp-";
/// How long the API server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running control plane. Dropping it stops every process and removes its directory.
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    api_url: String,
    etcd_url: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    /// Client identities for the test node's kubelet and kube-scheduler (see `node.rs`).
    pub(crate) node_identity: (String, String),
    pub(crate) scheduler_identity: (String, String),
    api_port: u16,
    processes: Mutex<BTreeMap<&'static str, Child>>,
}

/// Every started control plane's process ids and directory, for the exit hook.
static REGISTRY: Mutex<Vec<(PathBuf, Vec<u32>)>> = Mutex::new(Vec::new());
static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static SHARED_INIT: Mutex<()> = Mutex::new(());

impl ControlPlane {
    /// The control plane shared by all tests of this process, started on first use.
    ///
    /// Tests sharing it should each work in their own namespace ([`ControlPlane::namespace`]).
    pub fn shared() -> &'static ControlPlane {
        if let Some(cp) = SHARED.get() {
            return cp;
        }
        let _guard = SHARED_INIT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cp) = SHARED.get() {
            return cp;
        }
        let cp = std::thread::spawn(Self::start_blocking)
            .join()
            .expect("control plane start panicked")
            .unwrap_or_else(|e| panic!("starting the control plane failed: {e:#}"));
        let _ = SHARED.set(cp);
        SHARED.get().expect("just set")
    }

    /// Starts a control plane of its own (blocking; call from a plain thread or
    /// `spawn_blocking`). Prefer [`ControlPlane::shared`] unless a test restarts components.
    pub fn start_blocking() -> Result<ControlPlane> {
        install_exit_hook();
        remove_stale_dirs();
        let bin_dir = binaries()?;
        let mut last = None;
        // Free ports are picked by binding port 0 and releasing it; another process may take
        // one in between, so a start that fails early is retried on new ports.
        for _ in 0..3 {
            match Self::try_start(&bin_dir) {
                Ok(cp) => return Ok(cp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("control plane did not start")))
    }

    fn try_start(bin_dir: &Path) -> Result<ControlPlane> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()?
            .keep();
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((dir.clone(), Vec::new()));
        let certs = Certs::generate()?;
        certs.write(&dir)?;

        let [etcd_port, peer_port, api_port] = free_ports::<3>()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let api_url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &api_url,
                &certs.ca_pem,
                Credentials::Cert {
                    cert_pem: &certs.admin_cert_pem,
                    key_pem: &certs.admin_key_pem,
                },
            ),
        )?;

        let cp = ControlPlane {
            dir: dir.clone(),
            bin_dir: bin_dir.to_path_buf(),
            api_url,
            etcd_url,
            kubeconfig,
            ca_pem: certs.ca_pem.clone(),
            admin_cert_pem: certs.admin_cert_pem.clone(),
            admin_key_pem: certs.admin_key_pem.clone(),
            node_identity: certs.node_identity.clone(),
            scheduler_identity: certs.scheduler_identity.clone(),
            api_port,
            processes: Mutex::new(BTreeMap::new()),
        };

        let peer = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            "etcd",
            Command::new(bin_dir.join("etcd")).args([
                "--name=default",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={}", cp.etcd_url),
                &format!("--advertise-client-urls={}", cp.etcd_url),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--initial-cluster=default={peer}"),
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]),
        )?;
        cp.spawn_apiserver()?;
        cp.wait_ready()?;
        cp.spawn_controller_manager()?;
        Ok(cp)
    }

    fn apiserver_command(&self) -> Command {
        let d = |name: &str| self.dir.join(name).display().to_string();
        let mut cmd = Command::new(self.bin_dir.join("kube-apiserver"));
        cmd.args([
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.api_port),
            format!("--cert-dir={}", d("apiserver-certs")),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            // The test node registers under a name that DNS does not know: logs and exec reach
            // its kubelet at its address.
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ]);
        cmd
    }

    fn spawn_apiserver(&self) -> Result<()> {
        self.spawn("kube-apiserver", &mut self.apiserver_command())
    }

    fn spawn_controller_manager(&self) -> Result<()> {
        let d = |name: &str| self.dir.join(name).display().to_string();
        self.spawn(
            "kube-controller-manager",
            Command::new(self.bin_dir.join("kube-controller-manager")).args([
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,deployment-controller,replicaset-controller,node-lifecycle-controller,root-ca-certificate-publisher-controller,disruption-controller,clusterrole-aggregation-controller".into(),
                format!("--service-account-private-key-file={}", d("sa.key")),
                format!("--root-ca-file={}", d("ca.crt")),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--v=0".into(),
            ]),
        )
    }

    /// Starts `name` from this thread or, for the shared control plane, from a thread that lives
    /// as long as the process (the parent-death signal fires when the spawning thread ends).
    fn spawn(&self, name: &'static str, cmd: &mut Command) -> Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_on_keeper_thread(cmd).with_context(|| format!("spawning {name}"))?;
        let pid = child.id();
        if let Some(entry) = REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .find(|(d, _)| *d == self.dir)
        {
            entry.1.push(pid);
        }
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, child);
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            for name in ["etcd", "kube-apiserver"] {
                if let Some(status) = self.exited(name) {
                    bail!(
                        "{name} exited ({status}) before the API server was ready:\n{}",
                        self.log_tail(name, 30)
                    );
                }
            }
            let ready = rt.block_on(async {
                let client = self.client().await.ok()?;
                let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client.request_text(req).await.ok()
            });
            if ready.as_deref() == Some("ok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail("kube-apiserver", 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn exited(&self, name: &str) -> Option<std::process::ExitStatus> {
        let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .get_mut(name)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id of a running component (`kube-apiserver`, `etcd`, ...).
    pub fn pid(&self, component: &str) -> Option<u32> {
        let procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        procs.get(component).map(Child::id)
    }

    /// The last `lines` lines of a component's log, for failure messages.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the API server and starts it again on the same port (etcd keeps the data), then
    /// waits until it is ready. For tests of how clients survive an API server restart.
    pub fn restart_apiserver(&self, downtime: Duration) -> Result<()> {
        self.restart_apiserver_with(downtime, || {})
    }

    /// Like [`ControlPlane::restart_apiserver`], running `while_down` while it is stopped
    /// (e.g. to compact etcd so that watches cannot resume).
    pub fn restart_apiserver_with(
        &self,
        downtime: Duration,
        while_down: impl FnOnce(),
    ) -> Result<()> {
        self.stop("kube-apiserver");
        let started = Instant::now();
        while_down();
        std::thread::sleep(downtime.saturating_sub(started.elapsed()));
        self.spawn_apiserver()?;
        self.wait_ready()
    }

    fn stop(&self, name: &str) {
        let child = self
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(mut child) = child {
            terminate(child.id());
            if !wait_timeout(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// A new client with the admin identity (`system:masters`). Create one per tokio runtime:
    /// a client's connections belong to the runtime it was created on.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The admin kubeconfig file, for `kubectl` and for an operator started as a process.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// `http://127.0.0.1:PORT` of etcd (for tests that compact it).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The cluster CA (PEM) that signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The directory that holds the control-plane binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A `kubectl` command that talks to this control plane as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client().await?;
        let api: Api<Namespace> = Api::all(client);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        created
            .metadata
            .name
            .ok_or_else(|| anyhow!("created namespace has no name"))
    }

    /// Applies CustomResourceDefinitions (multi-document YAML) with server-side apply and waits
    /// until each is Established and served.
    pub async fn install_crds(&self, yaml: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let mut names = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(value)?;
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("CRD without a name"))?;
            api.patch(
                &name,
                &kube::api::PatchParams::apply("pingone-testbed").force(),
                &kube::api::Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for name in &names {
            let cond = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), name, cond),
            )
            .await
            .with_context(|| format!("CRD {name} not established within 30s"))??;
        }
        Ok(names)
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` (which must
    /// exist) with a token from the TokenRequest API, and returns its path. Tests use it to run
    /// the operator with exactly the RBAC it ships.
    pub async fn serviceaccount_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let client = self.client().await?;
        let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let request = TokenRequest {
            spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("token for serviceaccount {namespace}/{name}"))?
            .status
            .ok_or_else(|| anyhow!("TokenRequest without status"))?
            .token;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        fs::write(
            &path,
            kubeconfig_yaml(&self.api_url, &self.ca_pem, Credentials::Token(&token)),
        )?;
        Ok(path)
    }

    /// The admin client certificate and key (PEM), for tools that need them directly.
    pub fn admin_identity_pem(&self) -> (&str, &str) {
        (&self.admin_cert_pem, &self.admin_key_pem)
    }

    /// Writes a kubeconfig for this control plane that authenticates with a client certificate.
    pub(crate) fn write_cert_kubeconfig(
        &self,
        path: &Path,
        (cert_pem, key_pem): &(String, String),
    ) -> Result<()> {
        fs::write(
            path,
            kubeconfig_yaml(
                &self.api_url,
                &self.ca_pem,
                Credentials::Cert { cert_pem, key_pem },
            ),
        )?;
        Ok(())
    }

    /// The temporary directory of this control plane (logs, certificates, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controller manager first, etcd last, so none logs errors about the others.
        for name in ["kube-controller-manager", "kube-apiserver", "etcd"] {
            self.stop(name);
        }
        let _ = fs::remove_dir_all(&self.dir);
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(d, _)| *d != self.dir);
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The directory with the control-plane binaries: `$PINGONE_CONTROLPLANE_BIN` if set, else
/// what `tests/controlplane/build.sh` prints (it builds them once and caches them by version).
pub fn binaries() -> Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = BIN.get() {
        return Ok(dir.clone());
    }
    if let Ok(dir) = std::env::var("PINGONE_CONTROLPLANE_BIN") {
        return Ok(BIN.get_or_init(|| PathBuf::from(dir)).clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok(BIN.get_or_init(|| dir).clone())
}

enum Credentials<'a> {
    Cert { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, creds: Credentials<'_>) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match creds {
        Credentials::Cert { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
        Credentials::Token(token) => format!("    token: {token}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n{user}contexts:\n- name: local\n  context:\n    cluster: local\n    user: user\n    namespace: default\ncurrent-context: local\n",
        b64(ca_pem)
    )
}

struct Certs {
    ca_pem: String,
    apiserver_cert_pem: String,
    apiserver_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    node_identity: (String, String),
    scheduler_identity: (String, String),
    sa_key_pem: String,
    sa_pub_pem: String,
}

impl Certs {
    fn generate() -> Result<Certs> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pingone-testbed cluster CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            "10.0.0.1".to_string(),
            // The host as the test node's pods reach it (node::HOST_FROM_PODS): pods that
            // talk to the API server come through a relay there.
            "10.244.7.1".to_string(),
        ])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        // The test node's kubelet (group system:nodes, bound to ClusterRole system:node by the
        // node harness) and the kube-scheduler (bound by the default RBAC policy).
        let client = |cn: &str, org: Option<&str>| -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            Ok((params.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
        };
        let node_identity = client(
            &format!("system:node:{}", crate::node::NODE_NAME),
            Some("system:nodes"),
        )?;
        let scheduler_identity = client("system:kube-scheduler", None)?;

        let sa_key = KeyPair::generate()?;
        Ok(Certs {
            node_identity,
            scheduler_identity,
            ca_pem: ca.pem(),
            apiserver_cert_pem: server_cert.pem(),
            apiserver_key_pem: server_key.serialize_pem(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
            sa_key_pem: sa_key.serialize_pem(),
        })
    }

    fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir.join("apiserver-certs"))?;
        for (name, pem) in [
            ("ca.crt", &self.ca_pem),
            ("apiserver.crt", &self.apiserver_cert_pem),
            ("apiserver.key", &self.apiserver_key_pem),
            ("sa.key", &self.sa_key_pem),
            ("sa.pub", &self.sa_pub_pem),
        ] {
            fs::write(dir.join(name), pem)?;
        }
        Ok(())
    }
}

pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners until every port is chosen so the N ports differ.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` on a thread that lives as long as the process, so `PR_SET_PDEATHSIG` fires only
/// when the test process itself ends, not when the test thread that asked for it does.
pub(crate) fn spawn_on_keeper_thread(cmd: &mut Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("controlplane-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    // Command is not Clone; move a copy of its settings to the keeper.
    let owned = std::mem::replace(cmd, Command::new(cmd.get_program()));
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((owned, reply_tx))
        .map_err(|_| io::Error::other("keeper thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("keeper thread gone"))?
}

pub(crate) fn terminate(pid: u32) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn install_exit_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        extern "C" fn on_exit() {
            let entries = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
            for (dir, pids) in &entries {
                crate::owned::stop_processes(pids);
                let _ = fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(on_exit);
        }
    });
}

/// Removes control-plane directories whose owning process no longer runs (killed outright).
fn remove_stale_dirs() {
    for (dir, _) in crate::owned::orphaned_dirs(DIR_PREFIX) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
