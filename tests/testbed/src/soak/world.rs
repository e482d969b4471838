//! The soak's world: a control plane of its own, the stand-in, two operator replicas with
//! leader election, the connections of the plan, and the hands that inject the faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::check::{Accepts, ConnView, Excuses, Request, TokenView};
use super::plan::{Action, Auth, ConnPlan, ENVIRONMENTS, NAMESPACES};
use crate::bench::objects::connection_resource;
use crate::controlplane::ControlPlane;
use crate::standin::{ClientRegistration, StandIn, StandInConfig};

/// The environments, each with its cap (`None`: the operator's default, 100/s).
pub const ENVIRONMENT_IDS: [&str; ENVIRONMENTS] = [
    "5a0e3c1d-7b2f-4e8a-9c6d-1f0e2d3c4b5a",
    "6b1f4d2e-8c3a-4f9b-8d7e-2a1f3e4d5c6b",
    "7c2a5e3f-9d4b-4a8c-9e8f-3b2a4f5e6d7c",
];
/// `--environment-max-requests-per-second` of the first two environments.
pub const CAPS: [Option<u32>; ENVIRONMENTS] = [Some(5), Some(20), None];
/// The operator's default cap.
pub const DEFAULT_CAP: u32 = 100;
/// The operator's request timeout in the soak (a 7 s delay is a timeout).
pub const REQUEST_TIMEOUT: &str = "5s";
/// Scopes every client may have; connections flip between one and both.
pub const SCOPES: [&str; 2] = ["p1:read:user", "p1:update:user"];
const OPERATOR_NAMESPACE: &str = "soak-system";
const SECRET_ROLE: &str = "soak.pingone.tokenops.dev/role";

/// The namespace of index `i`.
pub fn namespace(i: usize) -> String {
    format!("soak-{i}")
}

/// A connection's name.
pub fn conn_name(i: usize) -> String {
    format!("c{i}")
}

/// The client id of connection `i`.
pub fn client_id(i: usize) -> String {
    format!("{i:08x}-50a4-4c0e-8d1f-2b3c4d5e6f70")
}

fn recovery_id(env: usize) -> String {
    format!("{env:08x}-7ec0-4e1a-9b2c-3d4e5f607182")
}

/// One operator replica, a separate process.
struct Replica {
    name: String,
    child: Option<Child>,
    /// Where its `/metrics` is served.
    port: u16,
}

/// What happened to the operator and to the cluster, with times: the checker's excuses.
#[derive(Default)]
pub struct Journal {
    /// What the scheduler did (time, description).
    pub actions: Vec<(Timestamp, String)>,
    pub excuses: Excuses,
    /// Secrets the soak wrote last (key → resourceVersion; `None` while the soak writes it):
    /// nobody else may write them.
    pub owned: HashMap<String, Option<String>>,
    /// Every client secret and key line the soak made or saw (value → what it is).
    pub needles: HashMap<String, String>,
    /// Connections whose inputs a person broke and has not fixed yet.
    pub broken_now: HashSet<String>,
    /// The namespace being deleted, from when.
    pub doomed: Option<Timestamp>,
    /// Replicas not running (killed, terminated or stopped), by index.
    down: HashSet<usize>,
    /// Where each down replica's window is in `excuses.replica_down`.
    down_since: HashMap<usize, usize>,
    /// Counts per class.
    pub injected: BTreeMap<&'static str, usize>,
    /// When people changed a connection's inputs (or made its rotation due), per client id.
    pub touched: HashMap<String, Vec<Timestamp>>,
}

impl Journal {
    fn say(&mut self, what: String) {
        println!("soak: {} {what}", Timestamp::now().strftime("%H:%M:%S"));
        self.actions.push((Timestamp::now(), what));
    }

    fn replica_down(&mut self, i: usize) {
        if !self.down.insert(i) {
            return;
        }
        self.excuses.replica_down.push((Timestamp::now(), None));
        self.down_since
            .insert(i, self.excuses.replica_down.len() - 1);
        if self.down.len() == 2 {
            self.excuses.no_operator.push((Timestamp::now(), None));
        }
    }

    fn replica_up(&mut self, i: usize) {
        if !self.down.contains(&i) {
            return;
        }
        if self.down.len() == 2
            && let Some(last) = self.excuses.no_operator.last_mut()
        {
            last.1 = Some(Timestamp::now());
        }
        self.down.remove(&i);
        if let Some(w) = self
            .down_since
            .remove(&i)
            .and_then(|at| self.excuses.replica_down.get_mut(at))
        {
            w.1 = Some(Timestamp::now());
        }
    }

    fn needle(&mut self, value: &str, what: String) {
        for e in super::check::encodings(value) {
            self.needles.insert(e, what.clone());
        }
    }
}

/// The running soak world.
pub struct World {
    pub cp: Arc<ControlPlane>,
    pub standin: StandIn,
    pub client: Client,
    pub conns: Vec<ConnPlan>,
    pub journal: Arc<Mutex<Journal>>,
    replicas: Mutex<Vec<Replica>>,
    operator_bin: PathBuf,
    out: PathBuf,
    rng: Mutex<StdRng>,
    /// Serial of the admission policies and foreign Secrets.
    serial: Mutex<u64>,
}

fn random_secret(rng: &mut StdRng) -> String {
    let bytes: [u8; 24] = rng.r#gen();
    format!("soak-{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn ec_key(rng: &mut StdRng, kid: &str) -> Result<(String, Value)> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let _ = rng;
    let sys = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &sys)
        .map_err(|_| anyhow!("EC key generation"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &sys)
        .map_err(|_| anyhow!("EC key"))?;
    let point = pair.public_key().as_ref();
    let body = STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Ok((pem, jwk))
}

impl World {
    /// Starts everything and creates the connections; returns once all are Ready.
    pub async fn start(
        seed: u64,
        conns: Vec<ConnPlan>,
        operator_bin: PathBuf,
        crds: &Path,
        out: PathBuf,
    ) -> Result<World> {
        std::fs::create_dir_all(&out)?;
        let cp = Arc::new(
            tokio::task::spawn_blocking(ControlPlane::start_blocking)
                .await?
                .context("starting the control plane")?,
        );
        let crd_yaml =
            std::fs::read_to_string(crds).with_context(|| format!("reading {}", crds.display()))?;
        cp.install_crds(&crd_yaml).await?;
        let client = cp.client().await?;
        let standin = StandIn::start(StandInConfig::default()).await?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5ec7e7);
        let mut journal = Journal::default();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in (0..NAMESPACES)
            .map(namespace)
            .chain([OPERATOR_NAMESPACE.to_string()])
        {
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
                )
                .await?;
        }
        // A recovery application per environment, allowed to read other applications' secrets,
        // with its credentials in every namespace.
        for (e, env) in ENVIRONMENT_IDS.iter().enumerate() {
            let secret = random_secret(&mut rng);
            journal.needle(&secret, format!("the recovery secret of environment {e}"));
            standin.add_client(
                ClientRegistration::new(*env, recovery_id(e), secret.clone())
                    .with_secret_read(true),
            );
            for n in 0..NAMESPACES {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("recovery-{e}"), "labels": {SECRET_ROLE: "recovery"}},
                    "stringData": {"clientId": recovery_id(e), "clientSecret": secret},
                }))?;
                Api::<Secret>::namespaced(client.clone(), &namespace(n))
                    .create(&PostParams::default(), &s)
                    .await?;
            }
        }
        for c in &conns {
            let env = ENVIRONMENT_IDS[c.environment];
            let id = client_id(c.index);
            let ns = namespace(c.namespace);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let mut data = json!({"clientId": id});
            let registration = if c.auth == Auth::PrivateKeyJwt {
                let kid = format!("key-{}", c.index);
                let (pem, jwk) = ec_key(&mut rng, &kid)?;
                for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                    journal
                        .needles
                        .insert(line.to_string(), format!("the private key of c{}", c.index));
                }
                data["privateKey"] = json!(pem);
                data["keyId"] = json!(kid);
                ClientRegistration::private_key(env, &id, json!({"keys": [jwk]}))
            } else {
                let secret = random_secret(&mut rng);
                journal.needle(&secret, format!("the client secret of c{}", c.index));
                data["clientSecret"] = json!(secret);
                let method = match c.auth {
                    Auth::Basic => crate::standin::AuthMethod::ClientSecretBasic,
                    Auth::SecretJwt => crate::standin::AuthMethod::ClientSecretJwt,
                    _ => crate::standin::AuthMethod::ClientSecretPost,
                };
                ClientRegistration::new(env, &id, secret)
                    .with_auth_method(method)
                    .with_secret_rotation(c.rotates)
            };
            standin.add_client(
                registration
                    .with_scopes(SCOPES)
                    .with_token_lifetime(c.lifetime),
            );
            let mut labels = json!({SECRET_ROLE: "credentials"});
            if c.rotates {
                labels["pingone.tokenops.dev/rotation"] = json!("enabled");
            }
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("c{}-creds", c.index), "labels": labels},
                "stringData": data,
            }))?;
            let created = secrets.create(&PostParams::default(), &s).await?;
            if !c.rotates {
                journal.owned.insert(
                    format!("{ns}/c{}-creds", c.index),
                    created.resource_version(),
                );
            }
            let mut spec = json!({
                "authDomain": "auth.pingone.eu",
                "environmentId": env,
                "credentialsSecretRef": {"name": format!("c{}-creds", c.index)},
                "tokenEndpointAuthMethod": c.auth.spec(),
                "scopes": SCOPES,
            });
            if c.rotates {
                spec["clientSecretRotation"] =
                    json!({"rotateEvery": "2h", "keepPreviousFor": "1h"});
                if c.recovery {
                    spec["clientSecretRotation"]["recoveryCredentialsRef"] =
                        json!({"name": format!("recovery-{}", c.environment)});
                }
            }
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "pingone.tokenops.dev/v1alpha1",
                "kind": "PingOneConnection",
                "metadata": {"name": conn_name(c.index)},
                "spec": spec,
            }))?;
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &connection_resource())
                .create(&PostParams::default(), &obj)
                .await
                .with_context(|| format!("creating connection c{}", c.index))?;
        }
        let world = World {
            cp,
            standin,
            client,
            conns,
            journal: Arc::new(Mutex::new(journal)),
            replicas: Mutex::new(vec![
                Replica {
                    name: "soak-r0".into(),
                    child: None,
                    port: 0,
                },
                Replica {
                    name: "soak-r1".into(),
                    child: None,
                    port: 0,
                },
            ]),
            operator_bin,
            out,
            rng: Mutex::new(rng),
            serial: Mutex::new(0),
        };
        world.spawn_replica(0)?;
        world.spawn_replica(1)?;
        Ok(world)
    }

    fn spawn_replica(&self, i: usize) -> Result<()> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = self.standin.addr();
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        let name = replicas[i].name.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join(format!("{name}.log")))?;
        let caps: Vec<String> = ENVIRONMENT_IDS
            .iter()
            .zip(CAPS)
            .filter_map(|(e, c)| c.map(|c| format!("{e}={c}")))
            .collect();
        let child = Command::new(&self.operator_bin)
            .arg("run")
            .arg(format!("--kubeconfig={}", self.cp.kubeconfig().display()))
            .arg(format!("--operator-namespace={OPERATOR_NAMESPACE}"))
            .arg("--lease-duration=6s")
            .arg(format!(
                "--extra-ca-file={}",
                self.standin.ca_path().display()
            ))
            .arg(format!("--host-override=auth.pingone.eu={addr}"))
            .arg(format!("--host-override=api.pingone.eu={addr}"))
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--request-timeout={REQUEST_TIMEOUT}"))
            .arg(format!(
                "--environment-max-requests-per-second={}",
                caps.join(",")
            ))
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .env("POD_NAME", &name)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.operator_bin.display()))?;
        replicas[i].child = Some(child);
        replicas[i].port = port;
        drop(replicas);
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replica_up(i);
        Ok(())
    }

    /// Starts again, as a Deployment would, a replica that exited by itself (a leader that
    /// lost its Lease exits); until the world is dropped.
    pub fn supervise(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let world = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for i in 0..2 {
                    let exited = {
                        let mut replicas = world.replicas.lock().unwrap_or_else(|e| e.into_inner());
                        match replicas[i].child.as_mut().map(|c| c.try_wait()) {
                            Some(Ok(Some(status))) => {
                                replicas[i].child = None;
                                Some(status)
                            }
                            _ => None,
                        }
                    };
                    if let Some(status) = exited {
                        {
                            let mut j = world.journal.lock().unwrap_or_else(|e| e.into_inner());
                            j.replica_down(i);
                            j.say(format!("replica {i} exited ({status}); restarting it"));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Err(e) = world.spawn_replica(i) {
                            println!("soak: replica {i} could not be started again: {e:#}");
                        }
                    }
                }
            }
        })
    }

    /// Stops every replica (SIGTERM, then SIGKILL).
    pub fn stop_replicas(&self) {
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        for r in replicas.iter_mut() {
            if let Some(mut child) = r.child.take() {
                signal(child.id(), libc::SIGCONT);
                signal(child.id(), libc::SIGTERM);
                for _ in 0..50 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The replica holding the Lease (else the first).
    async fn leader(&self) -> usize {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        let holder = leases
            .get_opt("pingone-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default();
        if holder.starts_with("soak-r1-") { 1 } else { 0 }
    }

    fn conn(&self, i: usize) -> &ConnPlan {
        &self.conns[i]
    }

    fn secrets(&self, c: &ConnPlan) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &namespace(c.namespace))
    }

    fn connections(&self, c: &ConnPlan) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &namespace(c.namespace),
            &connection_resource(),
        )
    }

    /// Puts `value` as the client secret of connection `c`'s credentials Secret.
    fn touch(&self, c: &ConnPlan) {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .touched
            .entry(client_id(c.index))
            .or_default()
            .push(Timestamp::now());
    }

    async fn put_secret(&self, c: &ConnPlan, value: &str) -> Result<()> {
        self.touch(c);
        let patch = json!({"data": {"clientSecret": STANDARD.encode(value)}});
        let key = format!("{}/c{}-creds", namespace(c.namespace), c.index);
        if !c.rotates {
            self.journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .owned
                .insert(key.clone(), None);
        }
        let written = self
            .secrets(c)
            .patch(
                &format!("c{}-creds", c.index),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        if !c.rotates {
            self.journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .owned
                .insert(key, written.resource_version());
        }
        Ok(())
    }

    fn current_secret(&self, c: &ConnPlan) -> Option<String> {
        self.standin
            .current_secret(ENVIRONMENT_IDS[c.environment], &client_id(c.index))
    }

    fn next_serial(&self) -> u64 {
        let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        *s += 1;
        *s
    }

    fn doomed(&self, c: &ConnPlan) -> bool {
        c.namespace + 1 == NAMESPACES
            && self
                .journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .doomed
                .is_some()
    }

    /// Carries out one action (those with a length wait here for their end: the caller spawns
    /// them). Failures of the soak's own calls (the API server may be down) are logged.
    pub async fn act(self: &Arc<Self>, action: Action) {
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            *j.injected.entry(action.class()).or_default() += 1;
            j.say(format!("{action:?}"));
        }
        if let Err(e) = self.try_act(action.clone()).await {
            self.journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .say(format!("({action:?} could not be completed: {e:#})"));
        }
    }

    async fn try_act(self: &Arc<Self>, action: Action) -> Result<()> {
        match action {
            Action::TokenFault { fault, times } => self.standin.push_fault(fault, times),
            Action::ManagementFault { fault, times } => {
                self.standin.push_management_fault(fault, times)
            }
            Action::ManagementHold { release_after } => {
                self.standin
                    .push_management_fault(crate::standin::Fault::HoldAfterCommit, 1);
                tokio::time::sleep(release_after).await;
                self.standin.release_held();
            }
            Action::JwksDown { length } => {
                self.standin.set_jwks_unavailable(true);
                tokio::time::sleep(length).await;
                self.standin.set_jwks_unavailable(false);
            }
            Action::JwksRotate => self.standin.rotate_signing_key().await,
            Action::ApiServerRestart { downtime, compact } => {
                if compact {
                    // A write, then a compaction past every watch's last version: watches
                    // cannot resume and must re-list.
                    let cms: Api<ConfigMap> =
                        Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
                    let cm: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": format!("compaction-{}", self.next_serial())}
                    }))?;
                    cms.create(&PostParams::default(), &cm).await?;
                    let http = reqwest::Client::new();
                    let body: Value = http
                        .post(format!("{}/v3/kv/range", self.cp.etcd_url()))
                        .json(&json!({"key": STANDARD.encode("/")}))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let revision = body["header"]["revision"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no etcd revision"))?
                        .to_string();
                    http.post(format!("{}/v3/kv/compaction", self.cp.etcd_url()))
                        .json(&json!({"revision": revision, "physical": true}))
                        .send()
                        .await?
                        .error_for_status()?;
                }
                let started = Timestamp::now();
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .excuses
                    .apiserver_down
                    .push((started, None));
                let cp = self.cp.clone();
                let result =
                    tokio::task::spawn_blocking(move || cp.restart_apiserver(downtime)).await?;
                if let Some(w) = self
                    .journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .excuses
                    .apiserver_down
                    .last_mut()
                {
                    w.1 = Some(Timestamp::now());
                }
                result?;
            }
            Action::DenyWrites {
                namespace: n,
                length,
            } => {
                let ns = namespace(n);
                let name = format!("soak-deny-{}", self.next_serial());
                self.kubectl_apply(&name, &deny_policy(&name, &ns)).await?;
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .excuses
                    .denied
                    .entry(ns.clone())
                    .or_default()
                    .push((Timestamp::now(), None));
                tokio::time::sleep(length).await;
                let mut deleted = Ok(());
                for kind in [
                    "validatingadmissionpolicybinding",
                    "validatingadmissionpolicy",
                ] {
                    for _ in 0..30 {
                        deleted = self
                            .kubectl(&["delete", "--ignore-not-found", kind, &name])
                            .await;
                        if deleted.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                // The API server drops a deleted policy asynchronously: a second more.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = j.excuses.denied.get_mut(&ns).and_then(|w| w.last_mut()) {
                    w.1 = Some(Timestamp::now());
                }
                deleted?;
            }
            Action::KillLeader { down } | Action::TermLeader { down } => {
                let term = matches!(action, Action::TermLeader { .. });
                let i = self.leader().await;
                let child = self.replicas.lock().unwrap_or_else(|e| e.into_inner())[i]
                    .child
                    .take();
                if let Some(mut child) = child {
                    if term {
                        signal(child.id(), libc::SIGTERM);
                        tokio::task::spawn_blocking(move || {
                            for _ in 0..100 {
                                if matches!(child.try_wait(), Ok(Some(_))) {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            let _ = child.kill();
                            let _ = child.wait();
                        })
                        .await?;
                    } else {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    self.journal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .replica_down(i);
                    tokio::time::sleep(down).await;
                    self.spawn_replica(i)?;
                }
            }
            Action::StopLeader { length } => {
                let i = self.leader().await;
                let pid = self.replicas.lock().unwrap_or_else(|e| e.into_inner())[i]
                    .child
                    .as_ref()
                    .map(Child::id);
                if let Some(pid) = pid {
                    signal(pid, libc::SIGSTOP);
                    self.journal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .replica_down(i);
                    tokio::time::sleep(length).await;
                    signal(pid, libc::SIGCONT);
                    self.journal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .replica_up(i);
                }
            }
            Action::Crlf { conn } => {
                let c = self.conn(conn).clone();
                if self.doomed(&c) {
                    return Ok(());
                }
                let s = self.secrets(&c).get(&format!("c{}-creds", c.index)).await?;
                let value = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("clientSecret"))
                    .map(|v| String::from_utf8_lossy(&v.0).trim_end().to_string())
                    .unwrap_or_default();
                self.put_secret(&c, &format!("{value}\r\n")).await?;
            }
            Action::WrongThenRight { conn, length } => {
                let c = self.conn(conn).clone();
                let key = format!("{}/c{}", namespace(c.namespace), c.index);
                let wrong = {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    random_secret(&mut rng)
                };
                self.broken(&key, true);
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .needle(&wrong, format!("a wrong secret put into c{}", c.index));
                let result = self.put_secret(&c, &wrong).await;
                tokio::time::sleep(length).await;
                let fixed = until_done(|| async {
                    match self.current_secret(&c) {
                        Some(right) => self.put_secret(&c, &right).await,
                        None => Ok(()),
                    }
                })
                .await;
                self.broken(&key, false);
                result?;
                fixed?;
            }
            Action::RotatedByHand { conn, length } => {
                let c = self.conn(conn).clone();
                let key = format!("{}/c{}", namespace(c.namespace), c.index);
                let new = {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    random_secret(&mut rng)
                };
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .needle(&new, format!("a secret made by hand for c{}", c.index));
                self.broken(&key, true);
                self.standin.set_client_secret(
                    ENVIRONMENT_IDS[c.environment],
                    &client_id(c.index),
                    &new,
                    None,
                );
                tokio::time::sleep(length).await;
                let result = until_done(|| async {
                    match self.current_secret(&c) {
                        Some(current) => self.put_secret(&c, &current).await,
                        None => Ok(()),
                    }
                })
                .await;
                self.broken(&key, false);
                result?;
            }
            Action::SpecFlip { conn, length } => {
                let c = self.conn(conn).clone();
                self.touch(&c);
                let name = conn_name(c.index);
                let one = json!({"spec": {"scopes": [SCOPES[0]]}});
                self.connections(&c)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&one))
                    .await?;
                tokio::time::sleep(length).await;
                let both = json!({"spec": {"scopes": SCOPES}});
                self.touch(&c);
                until_done(|| async {
                    Ok(self
                        .connections(&c)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&both))
                        .await?)
                })
                .await?;
            }
            Action::Renew { conn } => {
                let c = self.conn(conn).clone();
                self.touch(&c);
                let value = format!("soak-{}", self.next_serial());
                let patch = json!({"metadata": {"annotations": {"pingone.tokenops.dev/renew-requested-at": value}}});
                self.connections(&c)
                    .patch(
                        &conn_name(c.index),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            Action::DeleteTokenSecret { conn } => {
                let c = self.conn(conn).clone();
                self.touch(&c);
                let _ = self
                    .secrets(&c)
                    .delete(&format!("c{}-token", c.index), &DeleteParams::default())
                    .await;
            }
            Action::ForeignSecret { conn, length } => {
                let c = self.conn(conn).clone();
                self.touch(&c);
                let name = format!("c{}-token", c.index);
                let secrets = self.secrets(&c);
                let _ = secrets.delete(&name, &DeleteParams::default()).await;
                let foreign: Secret = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {SECRET_ROLE: "foreign"}},
                    "stringData": {"owner": "someone else"},
                }))?;
                let key = format!("{}/{name}", namespace(c.namespace));
                // The operator may recreate its Secret between the delete and the create:
                // a few tries.
                let mut created = None;
                for _ in 0..5 {
                    match secrets.create(&PostParams::default(), &foreign).await {
                        Ok(s) => {
                            created = Some(s);
                            break;
                        }
                        Err(_) => {
                            let _ = secrets.delete(&name, &DeleteParams::default()).await;
                        }
                    }
                }
                let Some(created) = created else {
                    return Err(anyhow!("the foreign Secret could not be created"));
                };
                let c_key = format!("{}/c{}", namespace(c.namespace), c.index);
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .owned
                    .insert(key.clone(), created.resource_version());
                self.broken(&c_key, true);
                tokio::time::sleep(length).await;
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .owned
                    .remove(&key);
                self.touch(&c);
                let deleted = until_done(|| async {
                    match secrets.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => Err(anyhow::Error::from(e)),
                    }
                })
                .await;
                self.broken(&c_key, false);
                deleted?;
            }
            Action::RotationDue { conn } => {
                let c = self.conn(conn).clone();
                self.touch(&c);
                self.touch(&c);
                let long_ago = Timestamp::now() - jiff::SignedDuration::from_hours(3);
                let patch = json!({"metadata": {"annotations": {
                    "pingone.tokenops.dev/client-secret-rotated-at": long_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
                }}});
                self.secrets(&c)
                    .patch(
                        &format!("c{}-creds", c.index),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            Action::ResolveUnknown => {
                let conns = self.snapshot_conns().await?;
                for v in conns
                    .iter()
                    .filter(|v| v.rotation_reason.as_deref() == Some("RotationOutcomeUnknown"))
                {
                    let Some(c) = self
                        .conns
                        .iter()
                        .find(|c| format!("{}/c{}", namespace(c.namespace), c.index) == v.key)
                        .cloned()
                    else {
                        continue;
                    };
                    if let Some(current) = self.current_secret(&c) {
                        self.put_secret(&c, &current).await?;
                        self.journal
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .say(format!(
                                "a person put PingOne's current secret into c{}",
                                c.index
                            ));
                    }
                }
            }
            Action::DeleteNamespace => {
                let ns = namespace(NAMESPACES - 1);
                self.journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .doomed = Some(Timestamp::now());
                Api::<Namespace>::all(self.client.clone())
                    .delete(&ns, &DeleteParams::default())
                    .await?;
            }
        }
        Ok(())
    }

    fn broken(&self, key: &str, on: bool) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now();
        let windows = j.excuses.person_broken.entry(key.to_string()).or_default();
        if on {
            windows.push((now, None));
        } else if let Some(w) = windows.iter_mut().rev().find(|w| w.1.is_none()) {
            w.1 = Some(now);
        }
        let still = windows.iter().any(|w| w.1.is_none());
        if still {
            j.broken_now.insert(key.to_string());
        } else {
            j.broken_now.remove(key);
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Result<()> {
        let mut cmd = tokio::process::Command::from(self.cp.kubectl());
        let out = cmd.args(args).output().await?;
        if !out.status.success() {
            return Err(anyhow!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    async fn kubectl_apply(&self, name: &str, yaml: &str) -> Result<()> {
        let path = self.out.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let path = path.display().to_string();
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &path])
            .await
    }

    /// The connections as the checker sees them.
    pub async fn snapshot_conns(&self) -> Result<Vec<ConnView>> {
        let conns = Api::<DynamicObject>::all_with(self.client.clone(), &connection_resource())
            .list(&ListParams::default())
            .await?;
        let secrets = Api::<Secret>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        let by_key: HashMap<String, &Secret> = secrets
            .items
            .iter()
            .map(|s| {
                (
                    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                    s,
                )
            })
            .collect();
        let mut out = Vec::new();
        for obj in &conns.items {
            let ns = obj.namespace().unwrap_or_default();
            let name = obj.name_any();
            let Some(index) = name.strip_prefix('c').and_then(|i| i.parse::<usize>().ok()) else {
                continue;
            };
            let Some(plan) = self.conns.get(index) else {
                continue;
            };
            let status = &obj.data["status"];
            let condition = |t: &str| {
                status["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                    .cloned()
            };
            let rotation = condition("ClientSecretRotation");
            let uid = obj.uid().unwrap_or_default();
            let token = by_key.get(&format!("{ns}/{name}-token")).and_then(|s| {
                let owned = s
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.controller == Some(true));
                owned.then(|| token_view(s)).flatten()
            });
            let credentials_secret = by_key
                .get(&format!("{ns}/{name}-creds"))
                .and_then(|s| s.data.as_ref()?.get("clientSecret"))
                .map(|v| {
                    let text = String::from_utf8_lossy(&v.0).to_string();
                    text.strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text)
                        .to_string()
                });
            out.push(ConnView {
                key: format!("{ns}/{name}"),
                namespace: ns.clone(),
                environment_id: ENVIRONMENT_IDS[plan.environment].to_string(),
                client_id: client_id(index),
                secret_based: plan.auth.secret_based(),
                ready: condition("Ready").is_some_and(|c| c["status"] == "True"),
                stalled: condition("Stalled").is_some_and(|c| c["status"] == "True"),
                rotation_reason: rotation.and_then(|c| c["reason"].as_str().map(str::to_string)),
                previous_expires_at: status["previousClientSecretExpiresAt"]
                    .as_str()
                    .and_then(|t| t.parse().ok()),
                token,
                credentials_secret,
            });
        }
        Ok(out)
    }

    /// The Secrets the soak owns, by key, with their resourceVersions now.
    pub async fn snapshot_versions(&self) -> Result<HashMap<String, String>> {
        let secrets = Api::<Secret>::all(self.client.clone())
            .list(&ListParams::default().labels(SECRET_ROLE))
            .await?;
        Ok(secrets
            .items
            .iter()
            .map(|s| {
                (
                    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                    s.resource_version().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The stand-in's record of token requests.
    pub fn requests(&self) -> Vec<Request> {
        self.standin
            .requests()
            .into_iter()
            .map(|r| Request {
                time: Timestamp::try_from(r.time).unwrap_or_default(),
                environment_id: r.environment_id,
                client_id: r.client_id,
                status: r.status,
                fault: r.fault,
                scoped: r.scope.as_deref().is_some_and(|s| !s.is_empty()),
            })
            .collect()
    }

    /// What the stand-in accepts for each secret-based client; every secret seen becomes a
    /// needle of the leak check.
    pub fn accepts(&self) -> HashMap<(String, String), Accepts> {
        let mut out = HashMap::new();
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        for c in self.conns.iter().filter(|c| c.auth.secret_based()) {
            let env = ENVIRONMENT_IDS[c.environment];
            let id = client_id(c.index);
            let a = Accepts {
                current: self.standin.current_secret(env, &id),
                previous: self.standin.previous_secret(env, &id).map(|(s, _)| s),
            };
            for s in a.current.iter().chain(a.previous.iter()) {
                if !j.needles.contains_key(s) {
                    j.needle(s, format!("a client secret of c{}", c.index));
                }
            }
            out.insert((env.to_string(), id), a);
        }
        out
    }

    /// Reconciles both replicas counted so far (their `/metrics`); `None` when one cannot be
    /// read.
    pub async fn reconciles(&self) -> Option<f64> {
        let ports: Vec<u16> = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.port)
            .collect();
        let mut total = 0.0;
        for port in ports {
            let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            total += text
                .lines()
                .filter(|l| l.starts_with("pingone_operator_reconciles_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Some(total)
    }

    /// When the connections' tokens are due for renewal (from their token Secrets).
    pub async fn renewals_due(&self, from: Timestamp, until: Timestamp) -> Result<usize> {
        let secrets = Api::<Secret>::all(self.client.clone())
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=pingone-operator"))
            .await?;
        Ok(secrets
            .items
            .iter()
            .filter_map(|s| {
                s.annotations()
                    .get("pingone.tokenops.dev/renew-at")?
                    .parse::<Timestamp>()
                    .ok()
            })
            .filter(|t| *t >= from && *t <= until)
            .count())
    }

    /// Everything a leak could be in: the replicas' logs, the Events, the connections' status.
    pub async fn haystacks(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for r in ["soak-r0", "soak-r1"] {
            out.push((
                format!("{r} log"),
                std::fs::read_to_string(self.out.join(format!("{r}.log"))).unwrap_or_default(),
            ));
        }
        let events = Api::<k8s_openapi::api::events::v1::Event>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        out.push(("Events".into(), serde_json::to_string(&events.items)?));
        let conns = Api::<DynamicObject>::all_with(self.client.clone(), &connection_resource())
            .list(&ListParams::default())
            .await?;
        let status: Vec<&Value> = conns.items.iter().map(|c| &c.data["status"]).collect();
        out.push(("status".into(), serde_json::to_string(&status)?));
        Ok(out)
    }

    /// Every token the stand-in issued, as needles (each token's signature, which no other text
    /// has).
    pub fn token_needles(&self) -> HashMap<String, String> {
        self.standin
            .issued_tokens()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t.rsplit('.').next()?.to_string(), format!("token #{i}"))))
            .filter(|(sig, _)| sig.len() >= 16)
            .collect()
    }

    /// The connections a person broke and has not fixed, and those of the deleted namespace.
    pub fn bad_inputs(&self) -> HashSet<String> {
        let j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = j.broken_now.clone();
        if j.doomed.is_some() {
            for c in self.conns.iter().filter(|c| c.namespace + 1 == NAMESPACES) {
                out.insert(format!("{}/c{}", namespace(c.namespace), c.index));
            }
        }
        out
    }
}

/// A person's fix that must land: tried again for a minute (the API server may be down).
async fn until_done<F, Fut, T>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for _ in 0..60 {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.unwrap_or_else(|| anyhow!("not done")))
}

fn token_view(s: &Secret) -> Option<TokenView> {
    let token = s.data.as_ref()?.get("access_token")?;
    let text = std::str::from_utf8(&token.0).ok()?;
    let payload = text.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some(TokenView {
        issued_at: Timestamp::from_second(claims["iat"].as_i64()?).ok()?,
        expires_at: Timestamp::from_second(claims["exp"].as_i64()?).ok()?,
    })
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process id this process started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// An admission policy that denies writes of the operator's Secrets in `namespace`.
fn deny_policy(name: &str, namespace: &str) -> String {
    crate::admission::deny_secret_writes(
        name,
        namespace,
        &["CREATE", "UPDATE"],
        crate::admission::NOT_THE_OPERATORS,
        &format!("the soak denies the operator's Secret writes in {namespace}"),
    )
}
