//! The runtime shell of `pingone-operator run`: clients, health and metrics server, signals, and
//! the controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tracing::info;

use crate::cli::RunArgs;
use crate::controller::{self, Context, ControllerConfig, schedule::Timing};
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
    /// The health and metrics server failed.
    #[error("health and metrics server: {0}")]
    Server(std::io::Error),
}

async fn kube_client(args: &RunArgs) -> Result<Client, StartError> {
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
    Client::try_from(config).map_err(|e| StartError::KubeConfig(e.to_string()))
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
    let client = kube_client(&args).await?;
    let tokens = token_client(&args)?;
    let metrics = Arc::new(Metrics::new());
    let timing = Timing {
        min_interval: args.min_renewal_interval,
        backoff_cap: args.backoff_cap,
        stalled_recheck: args.stalled_recheck,
        ..Timing::default()
    };
    let ctx = Arc::new(Context::new(client, tokens, metrics.clone(), timing));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(server::serve(
        args.listen,
        ServerState {
            metrics,
            ready: ready.clone(),
        },
        stopped(),
    ));

    ready.store(true, Ordering::Relaxed);
    controller::run(
        ctx,
        ControllerConfig {
            namespaces: args.namespaces.clone(),
            concurrency: args.concurrency,
        },
        stopped(),
    )
    .await;
    match server.await {
        Ok(result) => result.map_err(StartError::Server),
        Err(_) => Ok(()),
    }
}
