//! The runtime shell of `pingone-operator run`: clients, health and metrics server, signals, and
//! the controller.

use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tracing::info;

use crate::cli::RunArgs;
use crate::controller::digest_key::{self, DigestKeyError};
use crate::controller::{self, Context, ControllerConfig, schedule::Timing};
use crate::health::{Health, Role};
use crate::leader::{LeaderError, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::pingone::{TokenClient, TokenClientConfig};
use crate::server::{self, ServerState};

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Kubernetes configuration could not be loaded.
    #[error("Kubernetes configuration: {0}")]
    KubeConfig(String),
    /// The PingOne client could not be built (allowed domains, CA bundle).
    #[error("PingOne client: {0}")]
    TokenClient(#[from] crate::pingone::ClientBuildError),
    /// The extra CA file could not be read.
    #[error("reading {path}: {source}")]
    ReadCa {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key of the inputs digest could not be read or created.
    #[error(transparent)]
    DigestKey(#[from] DigestKeyError),
    /// Leader election failed.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// Another replica took the lead; the process exits so that it restarts as a standby.
    #[error("leadership lost")]
    LeadershipLost,
    /// The health and metrics server failed.
    #[error("health and metrics server: {0}")]
    Server(std::io::Error),
}

async fn kube_config(args: &RunArgs) -> Result<Config, StartError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| StartError::KubeConfig(e.to_string()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| StartError::KubeConfig(e.to_string()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| StartError::KubeConfig(e.to_string()))?,
    };
    Ok(config)
}

/// Builds the PingOne client from the flags.
pub fn token_client(args: &RunArgs) -> Result<TokenClient, StartError> {
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| StartError::ReadCa {
            path: path.display().to_string(),
            source,
        })?),
        None => None,
    };
    Ok(TokenClient::new(TokenClientConfig {
        extra_allowed_domains: args.allowed_auth_domains.clone(),
        extra_ca_pem,
        host_overrides: args.host_overrides.clone(),
        request_timeout: args.request_timeout,
        max_requests_per_second: args.max_requests_per_second,
        environment_max_requests_per_second: args.environment_max_requests_per_second.clone(),
        ..TokenClientConfig::default()
    })?)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), StartError> {
    let kube_config = kube_config(&args).await?;
    let client =
        Client::try_from(kube_config.clone()).map_err(|e| StartError::KubeConfig(e.to_string()))?;
    let tokens = token_client(&args)?;
    let metrics = Arc::new(Metrics::new());
    let timing = Timing {
        min_interval: args.min_renewal_interval,
        backoff_cap: args.backoff_cap,
        stalled_recheck: args.stalled_recheck,
        rollout_debounce: args.rollout_restart_debounce,
        ..Timing::default()
    };
    // Before anything reconciles: every digest written or compared depends on it.
    let key = digest_key::load_or_create(
        client.clone(),
        &args.leader_election_namespace,
        &args.digest_key_secret,
    )
    .await?;
    let health = Arc::new(Health::new(args.watch_failure_threshold));
    let ctx = Arc::new(
        Context::new(client, tokens, metrics.clone(), timing, key).with_health(health.clone()),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let stop_tx_for_server = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let server = tokio::spawn(server::serve(
        args.listen,
        ServerState {
            metrics,
            health: health.clone(),
        },
        stopped(),
    ));

    let config = ControllerConfig {
        namespaces: args.namespaces.clone(),
        concurrency: args.concurrency,
        credentials_secret_selector: args.credentials_secret_selector.clone(),
        kube_config: Some(kube_config),
    };
    let mut outcome = Ok(());
    if args.leader_election {
        let lease = LeaseConfig {
            namespace: args.leader_election_namespace.clone(),
            name: args.leader_election_lease.clone(),
            identity: identity(),
            duration: args.lease_duration,
            grace: args.lease_duration / 3,
        };
        let mut leadership = Leadership::start(ctx.client.clone(), &lease).await?;
        info!(lease = %lease.name, identity = %lease.identity, "waiting for leadership");
        // Ready as a standby once the Lease shows another live holder; standbys serve metrics
        // and take over when needed.
        let standby =
            crate::leader::watch_standby(ctx.client.clone(), lease.clone(), health.clone());
        let acquired = leadership
            .acquired(stopped(), ctx.client.clone(), &lease, ctx.fence())
            .await;
        standby.abort();
        if acquired {
            health.set_role(Role::Active);
            let metrics = ctx.metrics.clone();
            metrics.leader.set(1);
            info!(identity = %lease.identity, "leading; starting the controller");
            let lost = leadership.lost();
            let stop = stopped();
            let (lost_tx, mut lost_rx) = watch::channel(false);
            controller::run(ctx, config, async move {
                tokio::select! {
                    _ = stop => {}
                    _ = lost => {
                        let _ = lost_tx.send(true);
                    }
                }
            })
            .await;
            metrics.leader.set(0);
            if *lost_rx.borrow_and_update() {
                outcome = Err(StartError::LeadershipLost);
            }
        }
        leadership.release().await;
    } else {
        health.set_role(Role::Active);
        ctx.metrics.leader.set(1);
        controller::run(ctx, config, stopped()).await;
    }
    let _ = stop_tx_for_server.send(true);
    if let Ok(result) = server.await {
        result.map_err(StartError::Server)?;
    }
    outcome
}

/// This replica's name: the pod name, else the host name, plus the process id.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "pingone-operator".into());
    format!("{base}-{}", std::process::id())
}
