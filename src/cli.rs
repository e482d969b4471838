//! Command line: `pingone-operator run` and `pingone-operator crd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps PingOne worker application access tokens fresh in Kubernetes Secrets.
#[derive(Debug, Parser)]
#[command(name = "pingone-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once at start-up; the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the PingOneConnection CustomResourceDefinition as YAML.
    Crd,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `run`. Every flag can also be set through the environment variable shown.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config or the in-cluster configuration.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespaces to watch (comma separated); all when empty.
    #[arg(long, env = "PINGONE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Custom auth domains that connections may use besides the six regional PingOne domains
    /// (comma separated).
    #[arg(long, env = "PINGONE_ALLOWED_AUTH_DOMAINS", value_delimiter = ',')]
    pub allowed_auth_domains: Vec<String>,

    /// PEM file of CA certificates to trust in addition to the system roots.
    #[arg(long, env = "PINGONE_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// Send requests for HOST to ADDR instead of resolving it (HOST=IP:PORT, repeatable; for
    /// tests and air-gapped setups). TLS is still verified for HOST.
    #[arg(long = "host-override", env = "PINGONE_HOST_OVERRIDES", value_delimiter = ',', value_parser = parse_host_override)]
    pub host_overrides: Vec<(String, SocketAddr)>,

    /// Address of the health and metrics server (/healthz, /readyz, /metrics).
    #[arg(long, env = "PINGONE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "PINGONE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Reconciles running at once.
    #[arg(long, env = "PINGONE_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Never request a new token for unchanged inputs sooner than this after the last one.
    #[arg(long, env = "PINGONE_MIN_RENEWAL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub min_renewal_interval: Duration,

    /// Longest retry delay after a retryable failure.
    #[arg(long, env = "PINGONE_BACKOFF_CAP", default_value = "5m", value_parser = parse_duration)]
    pub backoff_cap: Duration,

    /// After a failure that needs a person (e.g. invalid_client), try again this often anyway.
    #[arg(long, env = "PINGONE_STALLED_RECHECK", default_value = "1h", value_parser = parse_duration)]
    pub stalled_recheck: Duration,

    /// `/healthz` fails once a watch of the API server has been failing this long without a
    /// success (the kubelet then restarts the process).
    #[arg(long, env = "PINGONE_WATCH_FAILURE_THRESHOLD", default_value = "2m", value_parser = parse_duration)]
    pub watch_failure_threshold: Duration,

    /// At most one rolling restart of a spec.rolloutRestartTargets workload per this interval.
    #[arg(long, env = "PINGONE_ROLLOUT_RESTART_DEBOUNCE", default_value = "30s", value_parser = parse_duration)]
    pub rollout_restart_debounce: Duration,

    /// Elect a leader among replicas with a Lease; only the leader reconciles.
    #[arg(long, env = "PINGONE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// The operator's own namespace: where the leader election Lease and the digest key Secret
    /// live.
    #[arg(
        long,
        visible_alias = "operator-namespace",
        env = "POD_NAMESPACE",
        default_value = "pingone-operator"
    )]
    pub leader_election_namespace: String,

    /// Secret in the operator's namespace that holds the key of the inputs digest in token
    /// Secrets; created with a random key on first start. Deleting it costs one new token per
    /// connection.
    #[arg(
        long,
        env = "PINGONE_DIGEST_KEY_SECRET",
        default_value = crate::controller::digest_key::DEFAULT_SECRET_NAME
    )]
    pub digest_key_secret: String,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "PINGONE_LEADER_ELECTION_LEASE",
        default_value = "pingone-operator"
    )]
    pub leader_election_lease: String,

    /// How long a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "PINGONE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// At most this many token requests per second per auth domain and environment; more wait
    /// their turn (0: no limit). PingOne's rate limits are shared by the whole license.
    #[arg(long, env = "PINGONE_MAX_REQUESTS_PER_SECOND", default_value_t = crate::pingone::DEFAULT_MAX_REQUESTS_PER_SECOND)]
    pub max_requests_per_second: u32,

    /// A request rate of its own for one environment, as ENVIRONMENT_ID=N (repeatable, or
    /// comma-separated): e.g. a lower rate for an environment whose license has a smaller
    /// limit. Other environments keep --max-requests-per-second.
    #[arg(long = "environment-max-requests-per-second", env = "PINGONE_ENVIRONMENT_MAX_REQUESTS_PER_SECOND", value_delimiter = ',', value_parser = parse_environment_rate)]
    pub environment_max_requests_per_second: Vec<(String, u32)>,

    /// Watch only the credentials Secrets this label selector matches (e.g.
    /// `pingone.tokenops.dev/credentials=true`), and the operator's own token Secrets, instead of
    /// the metadata of every Secret. Cheaper where Secrets change often; a change to an
    /// unlabelled credentials Secret is then not noticed until the connection's next reconcile
    /// (its renewal), though every reconcile still reads it.
    #[arg(long, env = "PINGONE_CREDENTIALS_SECRET_SELECTOR")]
    pub credentials_secret_selector: Option<String>,

    /// Timeout of a whole token request.
    #[arg(long, env = "PINGONE_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::api::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 10s, 5m or 1h"))
}

fn parse_environment_rate(text: &str) -> Result<(String, u32), String> {
    let (env, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ENVIRONMENT_ID=REQUESTS_PER_SECOND"))?;
    if !crate::pingone::is_environment_id(env) {
        return Err(format!(
            "{env:?} in {text:?} is not an environment id (a lowercase UUID)"
        ));
    }
    let rate = rate
        .parse::<u32>()
        .map_err(|_| format!("{rate:?} in {text:?} is not a number of requests per second"))?;
    Ok((env.to_string(), rate))
}

fn parse_host_override(text: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not HOST=IP:PORT"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} in {text:?} is not IP:PORT"))?;
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok((host.to_ascii_lowercase(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "pingone-operator",
            "run",
            "--namespaces=a,b",
            "--allowed-auth-domains=login.example.com",
            "--host-override=auth.pingone.eu=127.0.0.1:8443",
            "--log-format=json",
            "--min-renewal-interval=30s",
            "--environment-max-requests-per-second=cd91070f-c371-480e-80b2-753c735f8aa1=1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.namespaces, vec!["a", "b"]);
        assert_eq!(args.allowed_auth_domains, vec!["login.example.com"]);
        assert_eq!(
            args.host_overrides,
            vec![(
                "auth.pingone.eu".to_string(),
                "127.0.0.1:8443".parse().unwrap()
            )]
        );
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.min_renewal_interval, Duration::from_secs(30));
        assert_eq!(args.backoff_cap, Duration::from_secs(300));
        assert_eq!(
            args.environment_max_requests_per_second,
            vec![("cd91070f-c371-480e-80b2-753c735f8aa1".to_string(), 1)]
        );
        assert_eq!(args.digest_key_secret, "pingone-operator-digest-key");
    }

    #[test]
    fn the_operator_namespace_has_two_names() {
        for flag in [
            "--leader-election-namespace=ops",
            "--operator-namespace=ops",
        ] {
            let cli = Cli::try_parse_from(["pingone-operator", "run", flag]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run");
            };
            assert_eq!(args.leader_election_namespace, "ops");
        }
    }

    #[test]
    fn bad_flags_are_explained() {
        let err = Cli::try_parse_from(["pingone-operator", "run", "--host-override=nonsense"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOST=IP:PORT"), "{err}");
        let err = Cli::try_parse_from(["pingone-operator", "run", "--backoff-cap=soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
        let err = Cli::try_parse_from([
            "pingone-operator",
            "run",
            "--environment-max-requests-per-second=prod=5",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an environment id"), "{err}");
    }
}
