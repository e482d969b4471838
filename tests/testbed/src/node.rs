//! A real node for tests: containerd, the kubelet and kube-scheduler built from Go modules
//! (see `tests/node/build.sh`), runc and the CNI plugins from Debian, registered with a
//! [`ControlPlane`]. Pods run in containers on a CNI bridge network, mount Secret volumes and
//! write logs that `kubectl logs` reads; images come from OCI archives built locally
//! (`pingone.local/busybox:1`, `pingone.local/pause:1`) and pods use `imagePullPolicy: Never`.
//!
//! One node runs on a machine at a time (a lock file in the temporary directory): it takes the
//! node name, the bridge and the pod subnet. Everything else lives in a temporary directory and
//! a cgroup of its own. Like the control plane, its processes get `PR_SET_PDEATHSIG`, an
//! `atexit` hook stops them, and the next start cleans up after a process that was killed
//! outright; the containers, the kubelet's mounts and the cgroups go with it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node as NodeObject;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};

use crate::controlplane::{
    ControlPlane, free_ports, spawn_on_keeper_thread, terminate, wait_timeout,
};

/// The name the kubelet registers.
pub const NODE_NAME: &str = "pingone-testbed-node";
/// The image for test workloads: Debian's busybox-static, every applet linked in `/bin`.
pub const BUSYBOX_IMAGE: &str = "pingone.local/busybox:1";
/// The pod sandbox image (`tests/node/pause`).
pub const PAUSE_IMAGE: &str = "pingone.local/pause:1";
/// The host as pods see it: the gateway of their bridge network (the CNI bridge plugin gives
/// the bridge the subnet's first address).
pub const HOST_FROM_PODS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 244, 7, 1);
/// The kubelet's sync period, test-sized (the kubelet's default is one minute): a mounted
/// Secret's files are refreshed at a pod's next sync after the Secret changed.
pub const SYNC_FREQUENCY: Duration = Duration::from_secs(10);

const DIR_PREFIX: &str = "pingone-node-";
const CNI_NETWORK: &str = "pingone-testbed";
const BRIDGE: &str = "pingone0";
const POD_SUBNET: &str = "10.244.7.0/24";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The kubelet runs external tools (mount, umount, ...) from its PATH. It gets these only: with
/// iptables in reach it would add rules to the host's firewall.
const KUBELET_TOOLS: &[&str] = &[
    "mount", "umount", "nsenter", "du", "find", "nice", "losetup", "blkid", "findmnt",
];

/// A running node. Dropping it stops every process, kills its containers, unmounts what the
/// kubelet and containerd mounted and removes its directory and cgroups.
pub struct Node {
    dir: PathBuf,
    bin_dir: PathBuf,
    cgroup: String,
    processes: Mutex<BTreeMap<&'static str, Child>>,
    _lock: fs::File,
}

/// Every started node's directory, cgroup name and process ids, for the exit hook.
static REGISTRY: Mutex<Vec<(PathBuf, String, Vec<u32>)>> = Mutex::new(Vec::new());
static SHARED: OnceLock<Node> = OnceLock::new();
static SHARED_INIT: Mutex<()> = Mutex::new(());

impl Node {
    /// The node of this test process, registered with the shared control plane and started on
    /// first use.
    pub fn shared() -> &'static Node {
        if let Some(node) = SHARED.get() {
            return node;
        }
        let _guard = SHARED_INIT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = SHARED.get() {
            return node;
        }
        let cp = ControlPlane::shared();
        let node = std::thread::spawn(move || Self::start_blocking(cp))
            .join()
            .expect("node start panicked")
            .unwrap_or_else(|e| panic!("starting the node failed: {e:#}"));
        let _ = SHARED.set(node);
        SHARED.get().expect("just set")
    }

    /// Whether a node can run here (`Err` says why not): root, the node binaries, runc, the
    /// CNI plugins, cgroups.
    pub fn check() -> Result<PathBuf> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a node needs root (containers, mounts, cgroups)");
        }
        if !Path::new("/sys/fs/cgroup").is_dir() {
            bail!("no /sys/fs/cgroup");
        }
        runc()?;
        cni_bin_dir()?;
        let bin = binaries()?;
        for tool in ["containerd", "kubelet", "kube-scheduler"] {
            if !bin.join(tool).is_file() {
                bail!("no {tool} in {}", bin.display());
            }
        }
        Ok(bin)
    }

    /// Starts a node registered with `cp` (blocking; call from a plain thread) and waits until
    /// it is Ready and schedulable.
    pub fn start_blocking(cp: &ControlPlane) -> Result<Node> {
        install_exit_hook();
        let bin_dir = Self::check()?;
        let lock = lock_machine()?;
        remove_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()?
            .keep();
        let cgroup = format!("{DIR_PREFIX}{}", std::process::id());
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push((
            dir.clone(),
            cgroup.clone(),
            Vec::new(),
        ));
        let node = Node {
            dir,
            bin_dir,
            cgroup,
            processes: Mutex::new(BTreeMap::new()),
            _lock: lock,
        };
        node.start(cp).map(|()| node)
    }

    fn start(&self, cp: &ControlPlane) -> Result<()> {
        create_cgroups(&self.cgroup)?;
        self.start_containerd()?;
        self.import_images()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(bind_node_role(cp))?;
        self.start_kubelet(cp)?;
        let sched_kubeconfig = self.dir.join("scheduler.kubeconfig");
        cp.write_cert_kubeconfig(&sched_kubeconfig, &cp.scheduler_identity)?;
        let k = format!("--kubeconfig={}", sched_kubeconfig.display());
        self.spawn(
            "kube-scheduler",
            Command::new(self.bin_dir.join("kube-scheduler")).args([
                k.clone(),
                k.replace("--kubeconfig", "--authentication-kubeconfig"),
                k.replace("--kubeconfig", "--authorization-kubeconfig"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--v=0".into(),
            ]),
        )?;
        rt.block_on(self.wait_ready(cp))
    }

    fn start_containerd(&self) -> Result<()> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        fs::create_dir_all(self.dir.join("cni/net.d"))?;
        fs::write(
            self.dir.join("cni/net.d/10-pingone-testbed.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": CNI_NETWORK,
                "plugins": [
                    {
                        "type": "bridge", "bridge": BRIDGE, "isGateway": true,
                        // No masquerading: nothing in the host's firewall changes.
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_SUBNET}]],
                            "dataDir": d("cni/ipam"),
                        }
                    },
                    {"type": "loopback"}
                ]
            }))?,
        )?;
        let config = format!(
            r#"version = 3
root = '{root}'
state = '{state}'
disabled_plugins = ['io.containerd.nri.v1.nri']
[grpc]
  address = '{sock}'
[ttrpc]
  address = '{sock}.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '{opt}'
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  # Without CAP_SYS_RESOURCE (a container) the kubelet's negative OOM scores cannot be set.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{runc}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni_bin}']
    conf_dir = '{cni_conf}'
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            sock = self.containerd_socket().display(),
            opt = d("containerd/opt"),
            runc = runc()?.display(),
            cni_bin = cni_bin_dir()?.display(),
            cni_conf = d("cni/net.d"),
        );
        fs::write(self.dir.join("containerd.toml"), config)?;
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.spawn(
            "containerd",
            Command::new(self.bin_dir.join("containerd"))
                .arg(format!("--config={}", d("containerd.toml")))
                .env("PATH", path),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exited("containerd") {
                bail!(
                    "containerd exited ({status}):\n{}",
                    self.log_tail("containerd", 20)
                );
            }
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd not serving within 30s:\n{}",
                    self.log_tail("containerd", 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Runs `ctr` against this node's containerd in the CRI namespace.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin_dir.join("ctr"))
            .arg(format!("--address={}", self.containerd_socket().display()))
            .arg("--namespace=k8s.io")
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports an OCI image archive (e.g. the operator image of `deploy/image/build.sh`) into
    /// the node's containerd, where pods with `imagePullPolicy: Never` find it by its name.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        self.ctr(&["images", "import", &archive.display().to_string()])
            .with_context(|| format!("importing {}", archive.display()))
            .map(drop)
    }

    /// The API server as pods reach it: `HOST_FROM_PODS` and a port on the host that relays to
    /// the control plane's API server. The node runs no kube-proxy (it would change the
    /// host's firewall), so the `kubernetes` Service's cluster IP leads nowhere; a pod that
    /// talks to the API server gets `KUBERNETES_SERVICE_HOST`/`_PORT` set to this address,
    /// which the API server's certificate names. The relay passes bytes only: TLS and
    /// authentication stay between the pod and the API server.
    pub fn apiserver_for_pods(&self, cp: &ControlPlane) -> Result<std::net::SocketAddr> {
        static RELAY: OnceLock<u16> = OnceLock::new();
        if let Some(port) = RELAY.get() {
            return Ok((HOST_FROM_PODS, *port).into());
        }
        let target: std::net::SocketAddr = cp
            .api_url()
            .trim_start_matches("https://")
            .parse()
            .context("API server address")?;
        // All addresses: the bridge (and so HOST_FROM_PODS) exists only once a pod ran.
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0))?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || relay(listener, target));
        Ok((HOST_FROM_PODS, *RELAY.get_or_init(|| port)).into())
    }

    fn import_images(&self) -> Result<()> {
        let images = self
            .bin_dir
            .parent()
            .context("node bin dir without a parent")?
            .join("images");
        for name in ["pause", "busybox"] {
            let archive = images.join(format!("{name}.tar"));
            self.ctr(&["images", "import", &archive.display().to_string()])
                .with_context(|| format!("importing {}", archive.display()))?;
        }
        Ok(())
    }

    fn start_kubelet(&self, cp: &ControlPlane) -> Result<()> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let [port] = free_ports::<1>()?;
        let kubeconfig = self.dir.join("kubelet.kubeconfig");
        cp.write_cert_kubeconfig(&kubeconfig, &cp.node_identity)?;
        fs::write(self.dir.join("ca.crt"), cp.ca_pem())?;
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "port": port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            // The API server reaches the kubelet (logs, exec) without a client certificate.
            "authentication": {
                "anonymous": {"enabled": true},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": d("ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}", self.cgroup),
            // From Kubernetes 1.35 the kubelet refuses cgroup v1 unless told otherwise.
            "failCgroupV1": false,
            "failSwapOn": false,
            "containerRuntimeEndpoint": format!("unix://{}", self.containerd_socket().display()),
            "syncFrequency": format!("{}s", SYNC_FREQUENCY.as_secs()),
            "podLogsDir": d("pod-logs"),
            "volumePluginDir": d("volume-plugins"),
            "resolvConf": "",
            "enforceNodeAllocatable": [],
            "localStorageCapacityIsolation": false,
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "memory.available": "0%", "nodefs.available": "0%",
                "imagefs.available": "0%", "nodefs.inodesFree": "0%",
            },
        });
        fs::write(
            self.dir.join("kubelet.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        let tools = self.dir.join("kubelet-path");
        fs::create_dir_all(&tools)?;
        for tool in KUBELET_TOOLS {
            if let Some(found) = which(tool) {
                let _ = std::os::unix::fs::symlink(found, tools.join(tool));
            }
        }
        self.spawn(
            "kubelet",
            Command::new(self.bin_dir.join("kubelet"))
                .args([
                    format!("--config={}", d("kubelet.json")),
                    format!("--kubeconfig={}", kubeconfig.display()),
                    format!("--root-dir={}", d("kubelet")),
                    format!("--cert-dir={}", d("kubelet-pki")),
                    format!("--hostname-override={NODE_NAME}"),
                    "--v=1".into(),
                ])
                .env("PATH", &tools),
        )
    }

    async fn wait_ready(&self, cp: &ControlPlane) -> Result<()> {
        let nodes: Api<NodeObject> = Api::all(cp.client().await?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for name in ["containerd", "kubelet", "kube-scheduler"] {
                if let Some(status) = self.exited(name) {
                    bail!("{name} exited ({status}):\n{}", self.log_tail(name, 30));
                }
            }
            if let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await {
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                // The node lifecycle controller lifts the not-ready taint once it sees Ready.
                let untainted = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| t.is_empty());
                if ready && untainted {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {NODE_NAME} not Ready and schedulable within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail("kubelet", 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

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
        if let Some(entry) = REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .find(|(d, _, _)| *d == self.dir)
        {
            entry.2.push(child.id());
        }
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, child);
        Ok(())
    }

    fn exited(&self, name: &str) -> Option<std::process::ExitStatus> {
        let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .get_mut(name)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines of a component's log (`containerd`, `kubelet`, `kube-scheduler`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The node's temporary directory (logs, configuration, the kubelet's root).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let mut children =
            std::mem::take(&mut *self.processes.lock().unwrap_or_else(|e| e.into_inner()));
        // The scheduler and the kubelet first, containerd last.
        for name in ["kube-scheduler", "kubelet", "containerd"] {
            if let Some(mut child) = children.remove(name) {
                terminate(child.id());
                if !wait_timeout(&mut child, Duration::from_secs(10)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        clean_up(&self.dir, &self.cgroup);
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(d, _, _)| *d != self.dir);
    }
}

/// Accepts connections on `listener` and copies bytes both ways to `target`, a thread each way.
fn relay(listener: std::net::TcpListener, target: std::net::SocketAddr) {
    for inbound in listener.incoming().flatten() {
        let Ok(outbound) = std::net::TcpStream::connect(target) else {
            continue;
        };
        let (Ok(mut in_read), Ok(mut out_read)) = (inbound.try_clone(), outbound.try_clone())
        else {
            continue;
        };
        let (mut in_write, mut out_write) = (inbound, outbound);
        std::thread::spawn(move || {
            let _ = io::copy(&mut in_read, &mut out_write);
            let _ = out_write.shutdown(std::net::Shutdown::Write);
        });
        std::thread::spawn(move || {
            let _ = io::copy(&mut out_read, &mut in_write);
            let _ = in_write.shutdown(std::net::Shutdown::Write);
        });
    }
}

/// The directory with the node binaries: `$PINGONE_NODE_BIN` if set, else what
/// `tests/node/build.sh` prints (it builds them once and caches them by version).
pub fn binaries() -> Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = BIN.get() {
        return Ok(dir.clone());
    }
    if let Ok(dir) = std::env::var("PINGONE_NODE_BIN") {
        return Ok(BIN.get_or_init(|| PathBuf::from(dir)).clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/build.sh");
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

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

fn runc() -> Result<PathBuf> {
    which("runc").ok_or_else(|| anyhow!("no runc (Debian package runc)"))
}

fn cni_bin_dir() -> Result<PathBuf> {
    ["/usr/lib/cni", "/opt/cni/bin"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").is_file() && d.join("host-local").is_file())
        .ok_or_else(|| anyhow!("no CNI plugins (Debian package containernetworking-plugins)"))
}

/// Binds ClusterRole `system:node` to the group `system:nodes` (the API server authorizes with
/// RBAC only; the default policy leaves that binding without subjects).
async fn bind_node_role(cp: &ControlPlane) -> Result<()> {
    let api: Api<ClusterRoleBinding> = Api::all(cp.client().await?);
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pingone-testbed:nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
    }))?;
    match api.create(&PostParams::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One node per machine: waits for the lock (held until the node is dropped or the process
/// ends).
fn lock_machine() -> Result<fs::File> {
    let path = std::env::temp_dir().join("pingone-testbed-node.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if Instant::now() > deadline {
            bail!("another node held {} for 10 minutes", path.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The mounted cgroup hierarchies: the v1 controllers' directories, or the v2 root.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// The kubelet's cgroup root: it must exist in every hierarchy before the kubelet starts.
fn create_cgroups(name: &str) -> Result<()> {
    for h in cgroup_hierarchies() {
        let dir = h.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        // A new cpuset cgroup (v1) has no CPUs and memory nodes until given its parent's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = fs::read_to_string(h.join(file))
                && dir.join(file).exists()
                && fs::read_to_string(dir.join(file)).is_ok_and(|v| v.trim().is_empty())
            {
                fs::write(dir.join(file), value.trim())
                    .with_context(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Kills whatever still runs for the node of `dir` (shims, containers), unmounts what it
/// mounted, removes its cgroups, bridge, CNI results and directory. The node's own processes
/// (containerd, kubelet, scheduler) must be stopped already.
fn clean_up(dir: &Path, cgroup: &str) {
    let dir_str = dir.display().to_string();
    // containerd's shims outlive it; they name its socket (in `dir`) on their command line.
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir_str) {
                // SAFETY: kill(2); the process names this node's directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    // The containers: every process in the node's cgroups.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = false;
        for h in cgroup_hierarchies() {
            let root = h.join(cgroup);
            if !root.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            collect_dirs(&root, &mut dirs);
            for d in &dirs {
                for pid in fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on a process in the node's own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            // Deepest first.
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            left |= root.exists();
        }
        if !left || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The kubelet's volume mounts, its root, containerd's rootfs, shm and netns mounts.
    for _ in 0..3 {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir_str))
            .collect();
        if points.is_empty() {
            break;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            if let Ok(c) = std::ffi::CString::new(point) {
                // SAFETY: umount2 with a valid C string.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "delete", BRIDGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // libcni caches results outside containerd's directories: by network name, and for the
    // loopback network that containerd adds by sandbox id.
    let sandboxes: Vec<String> =
        fs::read_dir(dir.join("containerd/state/io.containerd.grpc.v1.cri/sandboxes"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    if let Ok(entries) = fs::read_dir("/var/lib/cni/results") {
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(&format!("{CNI_NETWORK}-"))
                || sandboxes.iter().any(|id| name.contains(id.as_str()))
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn install_exit_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        extern "C" fn on_exit() {
            let entries = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
            for (dir, cgroup, pids) in &entries {
                crate::owned::stop_processes(pids);
                clean_up(dir, cgroup);
            }
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(on_exit);
        }
    });
}

/// Cleans up after nodes whose process no longer runs (killed outright). Called with the
/// machine lock held.
fn remove_stale() {
    for (dir, pid) in crate::owned::orphaned_dirs(DIR_PREFIX) {
        // Its containerd and kubelet died with it (parent-death signal).
        clean_up(&dir, &format!("{DIR_PREFIX}{pid}"));
    }
}
