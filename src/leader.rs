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

/// Until when this replica may act as the leader: the renewal of the Lease it last saw
/// confirmed, plus the lease duration less a margin. Another replica takes over only after the
/// whole duration has passed without a renewal, so a leader that could not renew (the API
/// server unreachable, the process paused) stops acting before anyone else starts: two leaders
/// never reconcile at once, whatever the Lease library believes meanwhile.
#[derive(Clone, Debug, Default)]
pub struct Fence(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Fence {
    /// Whether this replica may act now.
    pub fn holds(&self) -> bool {
        jiff::Timestamp::now().as_millisecond() < self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn extend_to(&self, until: jiff::Timestamp) {
        self.0
            .store(until.as_millisecond(), std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long before the Lease would expire the leader stops acting without a confirmed renewal:
/// a fifth of the duration, at least a second (3 s of the default 15 s; the Lease library
/// renews a third before expiry, so a confirmed renewal comes well before).
fn fence_margin(duration: Duration) -> Duration {
    (duration / 5).max(Duration::from_secs(1))
}

/// Keeps `fence` at the last confirmed renewal of the Lease (held by `config.identity`) plus
/// the duration less [`fence_margin`], reading the Lease every fifteenth of its duration; says
/// on `lost` when the Lease has another holder.
fn watch_fence(
    client: Client,
    config: LeaseConfig,
    fence: Fence,
    lost: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, &config.namespace);
    let keep = jiff::SignedDuration::try_from(
        config
            .duration
            .saturating_sub(fence_margin(config.duration)),
    )
    .unwrap_or_default();
    fence.extend_to(jiff::Timestamp::now().checked_add(keep).unwrap_or_default());
    let every = (config.duration / 15).max(Duration::from_millis(200));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let read = tokio::time::timeout(every, leases.get_opt(&config.name)).await;
            let Ok(Ok(Some(lease))) = read else { continue };
            let Some(spec) = lease.spec else { continue };
            match spec.holder_identity.as_deref() {
                Some(h) if h == config.identity => {
                    // Checked: a Lease is input anyone with access may write.
                    if let Some(until) = spec.renew_time.and_then(|t| t.0.checked_add(keep).ok()) {
                        fence.extend_to(until);
                    }
                }
                Some(h) if !h.is_empty() => {
                    fence.extend_to(jiff::Timestamp::UNIX_EPOCH);
                    let _ = lost.send(true);
                    return;
                }
                _ => {}
            }
        }
    })
}

/// Holds (or waits for) the Lease in a background task.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    /// Set once this replica leads.
    fenced: Option<(tokio::task::JoinHandle<()>, watch::Receiver<bool>)>,
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
        Ok(Leadership {
            state,
            task,
            fenced: None,
        })
    }

    /// Waits until this replica leads, then keeps `fence` (see [`Fence`]). Returns false if
    /// `stop` completes first.
    pub async fn acquired(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
        client: Client,
        config: &LeaseConfig,
        fence: &Fence,
    ) -> bool {
        let leading = tokio::select! {
            r = self.state.wait_for(|leading| *leading) => r.is_ok(),
            _ = stop => false,
        };
        if leading {
            let (tx, rx) = watch::channel(false);
            let task = watch_fence(client, config.clone(), fence.clone(), tx);
            self.fenced = Some((task, rx));
        }
        leading
    }

    /// Completes when leadership is lost: the Lease library says so, or the Lease shows
    /// another holder.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut state = self.state.clone();
        let mut other = self.fenced.as_ref().map(|(_, rx)| rx.clone());
        async move {
            let by_lease = async {
                match other.as_mut() {
                    Some(rx) => {
                        let _ = rx.wait_for(|lost| *lost).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = state.wait_for(|leading| !*leading) => {}
                _ = by_lease => {}
            }
        }
    }

    /// Gives the Lease up so that another replica takes over at once.
    pub async fn release(self) {
        let Leadership {
            state,
            task,
            fenced,
        } = self;
        if let Some((watcher, _)) = fenced {
            watcher.abort();
        }
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
