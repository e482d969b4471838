//! Leader election on a coordination.k8s.io Lease, so that of several replicas only one
//! reconciles. Built on `kube-lease-manager` (server-side apply on the Lease, so two replicas
//! can never both hold it).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

/// Where the Lease lives and how long it lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal; another replica takes over after it.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or created.
    #[error("leader election lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// Marks `health` as a standby while the Lease has another, unexpired holder; checks every
/// third of the lease duration until aborted (when this replica leads).
pub fn watch_standby(
    client: Client,
    config: LeaseConfig,
    health: std::sync::Arc<crate::health::Health>,
) -> tokio::task::JoinHandle<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, &config.namespace);
    tokio::spawn(async move {
        let mut every = tokio::time::interval((config.duration / 3).max(Duration::from_secs(1)));
        loop {
            every.tick().await;
            let Ok(Some(lease)) = leases.get_opt(&config.name).await else {
                continue;
            };
            let Some(spec) = lease.spec else { continue };
            let other = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h != config.identity);
            let fresh = match (spec.renew_time, spec.lease_duration_seconds) {
                // Checked: a Lease is input anyone with access may write (a renewTime near
                // the end of time must not panic the operator).
                (Some(t), Some(secs)) => {
                    t.0.checked_add(jiff::SignedDuration::from_secs(i64::from(secs)))
                        .is_ok_and(|until| jiff::Timestamp::now() < until)
                }
                _ => false,
            };
            if other && fresh {
                health.set_role(crate::health::Role::Standby);
            }
        }
    })
}

/// Holds (or waits for) the Lease in a background task.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Leadership {
    /// Starts competing for the Lease.
    pub async fn start(client: Client, config: &LeaseConfig) -> Result<Leadership, LeaderError> {
        let secs = |d: Duration| d.as_secs().max(1);
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(secs(config.duration))
            .with_grace(secs(config.grace).min(secs(config.duration) - 1).max(1))
            .build()
            .await
            .map_err(|source| LeaderError::Lease {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                source,
            })?;
        let (state, task) = manager.watch().await;
        Ok(Leadership { state, task })
    }

    /// Waits until this replica leads. Returns false if `stop` completes first.
    pub async fn acquired(&mut self, stop: impl std::future::Future<Output = ()>) -> bool {
        tokio::select! {
            r = self.state.wait_for(|leading| *leading) => r.is_ok(),
            _ = stop => false,
        }
    }

    /// Completes when leadership is lost.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut state = self.state.clone();
        async move {
            let _ = state.wait_for(|leading| !*leading).await;
        }
    }

    /// Gives the Lease up so that another replica takes over at once.
    pub async fn release(self) {
        let Leadership { state, task } = self;
        // Closing the channel makes the background task release the Lease and end.
        drop(state);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => info!("leader election lease released"),
            Ok(Ok(Err(e))) => warn!(error = %e, "releasing the leader election lease failed"),
            Ok(Err(e)) => warn!(error = %e, "leader election task failed"),
            Err(_) => warn!("releasing the leader election lease timed out"),
        }
    }
}
