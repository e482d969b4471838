//! `pingone-demo`: the operator's main job, end to end, on this machine (`make demo`).
//!
//! 1. start a local control plane (etcd, kube-apiserver, kube-controller-manager, built from Go
//!    modules by `tests/controlplane/build.sh`) and install the CRD from `crds/`;
//! 2. start the PingOne token endpoint stand-in and register the worker application of
//!    `examples/` (environment id from `connection.yaml`, client id and secret from
//!    `credentials-secret.yaml`);
//! 3. run the `pingone-operator` binary as a process, reaching `auth.pingone.eu` at the stand-in
//!    through `--host-override` and trusting the stand-in's test CA through `--extra-ca-file`;
//! 4. `kubectl apply` the examples and `kubectl wait --for=condition=Ready`;
//! 5. show what a user sees: the printer columns, the conditions, the token Secret (the token
//!    shortened) and the operator's metrics for the connection;
//! 6. when a node can run here (root, runc, the CNI plugins; see `tests/node/build.sh`), start
//!    one (containerd, kubelet, kube-scheduler), run examples/token-reader.yaml and show what its
//!    pod read from the mounted token Secret, before and after a rotation (a renew request);
//!    otherwise say so in one line;
//! 7. stop the operator with SIGTERM (it must exit 0) and tear everything down.
//!
//! Exits 0 on success; on failure prints what went wrong and the tail of the operator's log and
//! exits 1. `--hold` keeps everything running until Ctrl-C for exploring with kubectl.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use clap::Parser;
use pingone_testbed::controlplane::ControlPlane;
use pingone_testbed::node::Node;
use pingone_testbed::standin::{AuthMethod, ClientRegistration, StandIn, StandInConfig};
use serde_json::Value;

/// The operator's namespace in deploy/base; in a pod, `POD_NAMESPACE` comes from the downward API.
const OPERATOR_NAMESPACE: &str = "pingone-operator";

/// Runs the PingOne operator end to end against a local control plane and a PingOne stand-in.
#[derive(Debug, Parser)]
#[command(name = "pingone-demo", version)]
struct Args {
    /// The operator binary. Default: `pingone-operator` next to this binary (same target
    /// profile directory, e.g. target/release).
    #[arg(long, value_name = "FILE")]
    operator_bin: Option<PathBuf>,

    /// Directory with credentials-secret.yaml, connection.yaml and deployment.yaml.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))]
    examples: PathBuf,

    /// The CRD to install.
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/pingoneconnections.pingone.tokenops.dev.yaml"))]
    crd: PathBuf,

    /// How long `kubectl wait` waits for Ready.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    wait_timeout: String,

    /// Keep the control plane, stand-in and operator running until Ctrl-C after the demo, and
    /// print how to reach them with kubectl.
    #[arg(long)]
    hold: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The operator's log goes to a file here, so that a failure can show its tail.
    let work = match tempfile::Builder::new().prefix("pingone-demo-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("demo failed: creating a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let operator_log = work.path().join("operator.log");
    let started = Instant::now();
    match run(&args, &operator_log) {
        Ok(()) => {
            println!("\ndemo finished in {:.1}s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            if let Ok(log) = fs::read_to_string(&operator_log) {
                eprintln!(
                    "\n--- last lines of the operator's log ({}) ---",
                    operator_log.display()
                );
                eprintln!("{}", tail(&log, 40));
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, operator_log: &Path) -> Result<()> {
    let example = Example::load(&args.examples)?;
    println!(
        "example: PingOneConnection {ns}/{name} -> https://{domain}/{env}/as/token, \
         credentials from Secret {ns}/{creds} (client id {id}), token to Secret {ns}/{target}",
        ns = example.namespace,
        name = example.name,
        domain = example.auth_domain,
        env = example.environment_id,
        creds = example.credentials_secret,
        id = example.client_id,
        target = example.token_secret,
    );

    // The stand-in serves on this runtime's worker threads while the main thread runs kubectl.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let cp = step(
        "starting the local control plane",
        ControlPlane::start_blocking,
    )?;
    println!("    API server {}", cp.api_url());
    let crd =
        fs::read_to_string(&args.crd).with_context(|| format!("reading {}", args.crd.display()))?;
    let crds = step("installing the CRD", || rt.block_on(cp.install_crds(&crd)))?;
    println!("    {}", crds.join(", "));

    let standin = step("starting the PingOne stand-in", || {
        rt.block_on(StandIn::start(StandInConfig::default()))
    })?;
    standin.add_client(
        ClientRegistration::new(
            &example.environment_id,
            &example.client_id,
            &example.client_secret,
        )
        .with_auth_method(example.auth_method),
    );
    println!(
        "    {} serves {} (certificate from a test CA); client {} registered in environment {}",
        standin.addr(),
        example.auth_domain,
        example.client_id,
        example.environment_id
    );

    // A node, when one can run here: the token reader's pod shows the mounted files at the end.
    let node = match Node::check() {
        Ok(_) => match step(
            "starting a node (containerd, kubelet, kube-scheduler; CNI bridge network)",
            || Node::start_blocking(&cp),
        ) {
            Ok(node) => Some(node),
            Err(e) => {
                println!("    no node: {e:#}; pods do not run, the demo goes on without them");
                None
            }
        },
        Err(e) => {
            println!("==> no node can run here ({e:#}): pods do not run in this demo");
            None
        }
    };

    let kubectl = Kubectl { cp: &cp };
    // The operator's own namespace, as deploy/base installs it (it keeps its leader-election
    // Lease there), and the namespace of the example.
    kubectl.run(&["create", "namespace", OPERATOR_NAMESPACE])?;
    kubectl.run(&["create", "namespace", &example.namespace])?;

    let operator_bin = match &args.operator_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("pingone-operator"),
    };
    let mut operator = step("starting the operator", || {
        Operator::start(&operator_bin, &cp, &standin, &example, operator_log)
    })?;
    println!(
        "    pid {}, health and metrics on http://{}",
        operator.child.id(),
        operator.listen
    );

    // Credentials first, so that the operator's first reconcile finds them.
    let mut files = vec![
        "credentials-secret.yaml",
        "connection.yaml",
        "deployment.yaml",
    ];
    if node.is_some() {
        files.push(TOKEN_READER_FILE);
    }
    let mut apply = vec!["apply".to_string()];
    for file in files {
        apply.push("-f".into());
        apply.push(shown_path(&args.examples.join(file)));
    }
    let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
    print!("{}", kubectl.run(&apply)?);

    let ns = example.namespace.as_str();
    let connection = format!("pingoneconnection/{}", example.name);
    let timeout = format!("--timeout={}", args.wait_timeout);
    let waited = Instant::now();
    let wait = kubectl.run(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        &connection,
        &timeout,
    ]);
    match wait {
        Ok(out) => print!("{out}"),
        Err(e) => {
            // What the operator says about it is the most useful thing to show.
            if let Ok(status) = kubectl.json(&["-n", ns, "get", &connection]) {
                print!("{}", format_conditions(&status));
            }
            return Err(e.context(format!("{connection} did not become Ready")));
        }
    }
    println!(
        "    Ready {:.1}s after apply",
        waited.elapsed().as_secs_f64()
    );

    println!();
    print!("{}", kubectl.run(&["-n", ns, "get", "pingoneconnection"])?);

    println!();
    let status = kubectl.json(&["-n", ns, "get", &connection])?;
    print!("{}", format_conditions(&status));
    for field in ["issuedAt", "expiresAt", "renewalTime", "tokenType"] {
        let value = status["status"][field].as_str().unwrap_or("-");
        println!("    status.{field}: {value}");
    }

    println!();
    let secret = kubectl.json(&["-n", ns, "get", "secret", &example.token_secret])?;
    let data = secret["data"]
        .as_object()
        .context("token Secret without data")?;
    let mut access_token = None;
    for (key, value) in data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .with_context(|| format!("decoding key {key} of the token Secret"))?;
        let text = String::from_utf8(bytes).with_context(|| format!("key {key} is not UTF-8"))?;
        if key == "access_token" {
            // Never print a whole token, not even a stand-in's.
            println!("    {key}: {}…", text.chars().take(12).collect::<String>());
            access_token = Some(text);
        } else {
            println!("    {key}: {text}");
        }
    }
    let token = access_token.context("the token Secret has no access_token")?;
    let claims = standin
        .verify_token(&token)
        .map_err(|e| anyhow!("the access token does not verify with the stand-in's key: {e:?}"))?;
    println!(
        "    (an RS256 JWT signed by the stand-in: iss {}, client_id {}; {} token request(s) so far)",
        claims["iss"].as_str().unwrap_or("?"),
        claims["client_id"].as_str().unwrap_or("?"),
        standin.token_request_count()
    );

    println!();
    println!(
        "$ curl -s http://{}/metrics   (this connection's series; histogram buckets left out)",
        operator.listen
    );
    let metrics = operator.metrics()?;
    let ours = [
        format!("namespace=\"{}\"", example.namespace),
        format!("name=\"{}\"", example.name),
    ];
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
        .filter(|l| ours.iter().all(|label| l.contains(label.as_str())))
        .collect();
    ensure!(
        !lines.is_empty(),
        "/metrics has no series for the connection:\n{metrics}"
    );
    for line in lines {
        println!("{line}");
    }

    if node.is_some() {
        show_token_reader(&kubectl, ns, &connection, &example.token_secret)?;
    }

    if args.hold {
        println!();
        println!("everything keeps running; in another shell:");
        println!("    export KUBECONFIG={}", cp.kubeconfig().display());
        println!(
            "    {} -n {ns} get pingoneconnection,secret",
            cp.bin_dir().join("kubectl").display()
        );
        println!("operator log: {}", operator_log.display());
        println!("press Ctrl-C to stop");
        rt.block_on(tokio::signal::ctrl_c())?;
    }

    println!();
    let status = step("stopping the operator (SIGTERM)", || {
        operator.terminate(Duration::from_secs(15))
    })?;
    ensure!(
        status.success(),
        "the operator exited with {status} after SIGTERM"
    );
    println!("    exited with {status}");

    step("stopping the stand-in and the control plane", || {
        rt.block_on(standin.shutdown());
        drop(node);
        drop(cp);
        Ok(())
    })
}

/// The example workload that prints what it reads from the mounted token Secret.
const TOKEN_READER_FILE: &str = "token-reader.yaml";
const TOKEN_READER: &str = "deploy/token-reader";

/// Shows what the token reader's pod read from its mounted files, then asks for a new token
/// and shows the running pod reading it.
fn show_token_reader(kubectl: &Kubectl, ns: &str, connection: &str, secret: &str) -> Result<()> {
    println!();
    println!("==> the token reader's pod reads the token Secret mounted as files");
    // The reads the pod has printed so far.
    let reads = || -> usize {
        kubectl
            .quiet(&["-n", ns, "logs", TOKEN_READER])
            .map_or(0, |logs| {
                logs.lines()
                    .filter(|l| l.contains(" read expires_at="))
                    .count()
            })
    };
    let show_reads = || -> Result<()> {
        print!("{}", kubectl.run(&["-n", ns, "logs", TOKEN_READER])?);
        Ok(())
    };
    let token = || {
        kubectl.quiet(&[
            "-n",
            ns,
            "get",
            "secret",
            secret,
            "-o=jsonpath={.data.access_token}",
        ])
    };
    if !poll_until(Duration::from_secs(90), Duration::from_millis(250), || {
        Ok(reads() > 0)
    })? {
        let pods = kubectl.run(&["-n", ns, "get", "pods", "-o", "wide"])?;
        bail!("the token reader's pod printed nothing within 90s:\n{pods}");
    }
    print!(
        "{}",
        kubectl.run(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=token-reader"
        ])?
    );
    show_reads()?;
    let before = token()?;

    println!();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    print!(
        "{}",
        kubectl.run(&[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            connection,
            &format!("pingone.tokenops.dev/renew-requested-at={now}"),
        ])?
    );
    ensure!(
        poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            Ok(token()? != before)
        })?,
        "no new token within 30s of the renew request"
    );
    let rotated = Instant::now();
    println!(
        "    the Secret's access_token: sha256:{} before, sha256:{} now; the kubelet refreshes \
         the pod's files at its next sync",
        fingerprint(&before)?,
        fingerprint(&token()?)?
    );
    let seen = reads();
    ensure!(
        poll_until(Duration::from_secs(120), Duration::from_millis(250), || {
            Ok(reads() > seen)
        })?,
        "the running pod did not read the new token within 120s"
    );
    println!(
        "    the running pod read the new token {:.1}s after the Secret changed",
        rotated.elapsed().as_secs_f64()
    );
    show_reads()
}

/// Polls `done` every `every` until it holds (true) or `within` passes (false).
fn poll_until(
    within: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(every);
    }
}

/// The first 12 hex digits of the SHA-256 of a base64-encoded Secret value, as the token
/// reader prints it for the token it read.
fn fingerprint(encoded: &str) -> Result<String> {
    use sha2::Digest as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex[..12].to_string())
}

/// Runs one step, printing what it does and how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {what}");
    let started = Instant::now();
    let result = f().with_context(|| format!("{what} failed"))?;
    println!("    done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(result)
}

/// What the demo needs to know from `examples/`: read from the YAML, so the stand-in accepts
/// exactly the credentials that the example Secret holds.
struct Example {
    namespace: String,
    name: String,
    auth_domain: String,
    environment_id: String,
    auth_method: AuthMethod,
    credentials_secret: String,
    client_id: String,
    client_secret: String,
    token_secret: String,
}

impl Example {
    fn load(dir: &Path) -> Result<Example> {
        let read = |file: &str| -> Result<Value> {
            let path = dir.join(file);
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let connection = read("connection.yaml")?;
        let secret = read("credentials-secret.yaml")?;
        let str_at = |doc: &Value, pointer: &str| -> Option<String> {
            doc.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let required = |doc: &Value, file: &str, pointer: &str| {
            str_at(doc, pointer).with_context(|| format!("{file} has no {pointer}"))
        };

        let name = required(&connection, "connection.yaml", "/metadata/name")?;
        let namespace = required(&connection, "connection.yaml", "/metadata/namespace")?;
        let credentials_secret = required(
            &connection,
            "connection.yaml",
            "/spec/credentialsSecretRef/name",
        )?;
        let id_key = str_at(&connection, "/spec/credentialsSecretRef/clientIdKey")
            .unwrap_or_else(|| "clientId".into());
        let secret_key = str_at(&connection, "/spec/credentialsSecretRef/clientSecretKey")
            .unwrap_or_else(|| "clientSecret".into());
        let auth_method = match str_at(&connection, "/spec/tokenEndpointAuthMethod").as_deref() {
            None | Some("client_secret_post") => AuthMethod::ClientSecretPost,
            Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
            Some(other) => bail!("connection.yaml: unknown tokenEndpointAuthMethod {other:?}"),
        };

        ensure!(
            str_at(&secret, "/metadata/name").as_deref() == Some(credentials_secret.as_str())
                && str_at(&secret, "/metadata/namespace").as_deref() == Some(namespace.as_str()),
            "credentials-secret.yaml is not the Secret {namespace}/{credentials_secret} that \
             connection.yaml refers to"
        );
        // stringData as in the example; data (base64) works too.
        let value = |key: &str| -> Result<String> {
            if let Some(v) = str_at(&secret, &format!("/stringData/{key}")) {
                return Ok(v);
            }
            let encoded = str_at(&secret, &format!("/data/{key}"))
                .with_context(|| format!("credentials-secret.yaml has no key {key}"))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
            Ok(String::from_utf8(bytes)?)
        };

        Ok(Example {
            token_secret: str_at(&connection, "/spec/target/secretName")
                .unwrap_or_else(|| format!("{name}-token")),
            auth_domain: required(&connection, "connection.yaml", "/spec/authDomain")?,
            environment_id: required(&connection, "connection.yaml", "/spec/environmentId")?,
            client_id: value(&id_key)?,
            client_secret: value(&secret_key)?,
            auth_method,
            credentials_secret,
            namespace,
            name,
        })
    }
}

/// kubectl of the control plane, as admin. Prints each command as a user would type it.
struct Kubectl<'a> {
    cp: &'a ControlPlane,
}

impl Kubectl<'_> {
    /// Runs kubectl and returns its standard output; fails with its standard error.
    fn run(&self, args: &[&str]) -> Result<String> {
        println!("$ kubectl {}", args.join(" "));
        self.quiet(args)
    }

    /// Like [`Kubectl::run`], without printing the command (for polling).
    fn quiet(&self, args: &[&str]) -> Result<String> {
        let out = self
            .cp
            .kubectl()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl ... -o json`, parsed.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut args = args.to_vec();
        args.push("-o=json");
        Ok(serde_json::from_str(&self.run(&args)?)?)
    }
}

/// The conditions of a PingOneConnection as a table.
fn format_conditions(connection: &Value) -> String {
    let empty = Vec::new();
    let conditions = connection["status"]["conditions"]
        .as_array()
        .unwrap_or(&empty);
    let mut out = format!(
        "    {:<12} {:<8} {:<26} MESSAGE\n",
        "TYPE", "STATUS", "REASON"
    );
    for c in conditions {
        let field = |f: &str| c[f].as_str().unwrap_or("").to_owned();
        out.push_str(&format!(
            "    {:<12} {:<8} {:<26} {}\n",
            field("type"),
            field("status"),
            field("reason"),
            field("message")
        ));
    }
    out
}

/// The operator binary, running as a child process; killed if dropped while running.
struct Operator {
    child: Child,
    listen: SocketAddr,
}

impl Operator {
    fn start(
        bin: &Path,
        cp: &ControlPlane,
        standin: &StandIn,
        example: &Example,
        log: &Path,
    ) -> Result<Operator> {
        ensure!(
            bin.is_file(),
            "no operator binary at {} (build it with `cargo build --release --bin \
             pingone-operator`, or pass --operator-bin)",
            bin.display()
        );
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
            .arg(format!("--namespaces={}", example.namespace))
            // The stand-in's certificate comes from a test CA; trust it besides the system roots.
            .arg(format!("--extra-ca-file={}", standin.ca_path().display()))
            // Connect to the stand-in for auth.pingone.eu; TLS is still verified for that name.
            .arg(format!(
                "--host-override={}={}",
                example.auth_domain,
                standin.addr()
            ))
            .arg(format!("--listen={listen}"))
            .arg("--log-format=text")
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            // The log goes to a file: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The operator
        // dies with the demo even if the demo is killed outright.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut operator = Operator { child, listen };
        operator.wait_ready(Duration::from_secs(20))?;
        Ok(operator)
    }

    /// Waits until `/readyz` answers 200.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited with {status} during start-up");
            }
            if let Ok((200, _)) = http_get(self.listen, "/readyz") {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the operator's /readyz did not answer 200 within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The OpenMetrics text of `/metrics`.
    fn metrics(&self) -> Result<String> {
        match http_get(self.listen, "/metrics")? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after `timeout`).
    fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sending SIGTERM");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the operator did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port (another process could take it before the operator binds it; unlikely).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP/1.0 GET (no chunked encoding, the server closes the connection): status and
/// body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("HTTP response without a header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP response without a status")?;
    Ok((status, body.to_owned()))
}

/// `path` as a user would type it: relative to the current directory when inside it.
fn shown_path(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative.unwrap_or(path).display().to_string()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
