//! The operator binary as a separate process: its flags, `/metrics`, and what `/proc` says about
//! its memory and CPU time.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::AUTH_DOMAIN;
use super::prom::{self, Sample};

/// How to start the operator.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// The `pingone-operator` binary.
    pub bin: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The stand-in's CA (`--extra-ca-file`).
    pub extra_ca: PathBuf,
    /// Where `auth.pingone.eu` is served (`--host-override`).
    pub standin: SocketAddr,
    /// `--concurrency`.
    pub concurrency: u16,
    /// `--max-requests-per-second`, when not the default.
    pub max_requests_per_second: Option<u32>,
    /// Further flags.
    pub extra_args: Vec<String>,
    /// Where its standard output and error go (appended).
    pub log: PathBuf,
}

/// A running operator process; killed on drop.
pub struct Operator {
    child: Child,
    port: u16,
    /// When the process was spawned.
    pub started: Instant,
    http: reqwest::Client,
}

/// Memory figures of a process, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Peak resident set size (`VmHWM`).
    pub hwm_kib: u64,
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
}

impl Operator {
    /// Spawns `pingone-operator run` with `--leader-election=false`, watching every namespace.
    pub fn start(config: &OperatorConfig) -> Result<Operator> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)
            .with_context(|| format!("opening {}", config.log.display()))?;
        let mut cmd = Command::new(&config.bin);
        cmd.arg("run")
            .arg(format!("--kubeconfig={}", config.kubeconfig.display()))
            .arg("--leader-election=false")
            // Where its digest key Secret lives; `default` exists in every cluster.
            .arg("--operator-namespace=default")
            .arg(format!("--extra-ca-file={}", config.extra_ca.display()))
            .arg(format!("--host-override={AUTH_DOMAIN}={}", config.standin))
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--concurrency={}", config.concurrency));
        if let Some(rate) = config.max_requests_per_second {
            cmd.arg(format!("--max-requests-per-second={rate}"));
        }
        cmd.args(&config.extra_args)
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            // As the image sets it (Dockerfile): one glibc malloc arena.
            .env("MALLOC_ARENA_MAX", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the operator dies with the bench.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", config.bin.display()))?;
        Ok(Operator {
            child,
            port,
            started,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/metrics` answers.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited with {status} at start");
            }
            if self.metrics_text().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the operator's /metrics did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// The operator's counters that the bench reads.
    pub async fn counters(&self) -> Result<OperatorCounters> {
        let samples = prom::parse(&self.metrics_text().await?);
        Ok(OperatorCounters::from_samples(&samples))
    }

    /// [`Operator::settled_counters`] at a later such moment than `earlier`, offset by what was
    /// in between then.
    pub async fn settled_after(&self, earlier: &OperatorCounters) -> Result<OperatorCounters> {
        self.settled_counters(Some((
            earlier.token_successes - earlier.secret_writes,
            earlier.token_successes - earlier.status_writes,
        )))
        .await
    }

    /// Counters read at a moment when no reconcile is between its token request and its writes:
    /// the first of several scrapes in which Secret and status writes both equal successful
    /// token requests minus `offset` (what they were at the previous such moment), or the last
    /// scrape after two seconds.
    pub async fn settled_counters(&self, offset: Option<(f64, f64)>) -> Result<OperatorCounters> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let c = self.counters().await?;
            let (a, b) = offset.unwrap_or((0.0, 0.0));
            if (c.token_successes - c.secret_writes == a
                && c.token_successes - c.status_writes == b)
                || Instant::now() > deadline
            {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `VmHWM` and `VmRSS` from `/proc/PID/status`.
    pub fn memory(&self) -> Result<Memory> {
        proc_memory(self.pid())
    }

    /// User plus system CPU seconds so far, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Result<f64> {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the operator did not exit within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counters from the operator's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OperatorCounters {
    /// `pingone_operator_kubernetes_writes_total{kind="secret"}`.
    pub secret_writes: f64,
    /// `pingone_operator_kubernetes_writes_total{kind="status"}`.
    pub status_writes: f64,
    /// `pingone_operator_reconciles_total`.
    pub reconciles: f64,
    /// `pingone_operator_token_requests_total`, every result.
    pub token_requests: f64,
    /// `pingone_operator_token_requests_total{result="success"}`.
    pub token_successes: f64,
}

impl OperatorCounters {
    /// Reads the counters from parsed samples.
    pub fn from_samples(samples: &[Sample]) -> Self {
        OperatorCounters {
            secret_writes: prom::sum(
                samples,
                "pingone_operator_kubernetes_writes_total",
                &[("kind", "secret")],
            ),
            status_writes: prom::sum(
                samples,
                "pingone_operator_kubernetes_writes_total",
                &[("kind", "status")],
            ),
            reconciles: prom::sum(samples, "pingone_operator_reconciles_total", &[]),
            token_requests: prom::sum(samples, "pingone_operator_token_requests_total", &[]),
            token_successes: prom::sum(
                samples,
                "pingone_operator_token_requests_total",
                &[("result", "success")],
            ),
        }
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Self) -> Self {
        OperatorCounters {
            secret_writes: self.secret_writes - earlier.secret_writes,
            status_writes: self.status_writes - earlier.status_writes,
            reconciles: self.reconciles - earlier.reconciles,
            token_requests: self.token_requests - earlier.token_requests,
            token_successes: self.token_successes - earlier.token_successes,
        }
    }
}

/// `VmHWM` and `VmRSS` of a process. A figure that cannot be read is an error, never 0.
pub fn proc_memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {path}"))?;
        if kib == 0 {
            bail!("{name} in {path} is 0");
        }
        Ok(kib)
    };
    Ok(Memory {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// User plus system CPU seconds of a `/proc/.../stat` file (process or thread).
pub fn proc_cpu_seconds(stat_path: &str) -> Result<f64> {
    let text = fs::read_to_string(stat_path)?;
    let (_, comm_and_rest) = text.split_once(' ').context("stat without fields")?;
    let rest = comm_and_rest
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("stat without command")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// CPU seconds of this process's threads whose name starts with `prefix`; an error when no
/// such thread exists or one cannot be read (never 0 for a figure that was not read).
pub fn threads_cpu_seconds(prefix: &str) -> Result<f64> {
    let mut total = 0.0;
    let mut threads = 0;
    for t in fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let t = t?;
        // A thread that ended meanwhile has nothing left to count.
        let Ok(comm) = fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        if comm.trim().starts_with(prefix) {
            total += proc_cpu_seconds(&t.path().join("stat").display().to_string())?;
            threads += 1;
        }
    }
    if threads == 0 {
        bail!("no thread named {prefix}* in /proc/self/task");
    }
    Ok(total)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux's USER_HZ is 100 on every architecture when sysconf cannot say.
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The operator binary next to this executable (same profile directory), or `explicit`.
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("pingone-operator"),
    };
    if !path.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release --bin pingone-operator`",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let m = proc_memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        assert!(proc_cpu_seconds("/proc/self/stat").unwrap() >= 0.0);
    }

    #[test]
    fn unreadable_figures_are_errors() {
        assert!(proc_memory(u32::MAX).is_err());
        assert!(threads_cpu_seconds("no-such-thread").is_err());
        assert!(proc_cpu_seconds("/proc/0/stat").is_err());
    }
}
