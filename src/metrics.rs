//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Per-connection series carry `namespace` and `name` and are removed when the connection is
//! deleted. The request-duration histogram is labelled by result only: a histogram per
//! connection would multiply series by the bucket count for thousands of connections.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `namespace` and `name` of a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Namespace of the connection.
    pub namespace: String,
    /// Name of the connection.
    pub name: String,
}

/// A connection and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Namespace of the connection.
    pub namespace: String,
    /// Name of the connection.
    pub name: String,
    /// `success` or the failure's condition reason.
    pub result: String,
}

/// A connection and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Namespace of the connection.
    pub namespace: String,
    /// Name of the connection.
    pub name: String,
    /// The error's condition reason.
    pub reason: String,
}

/// A connection and a workload kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// Namespace of the connection.
    pub namespace: String,
    /// Name of the connection.
    pub name: String,
    /// Kind of the restarted workload.
    pub kind: String,
}

/// Outcome only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or the failure's condition reason.
    pub result: String,
}

/// Kind of Kubernetes write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `secret` or `status`.
    pub kind: String,
}

/// A watch of the controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `connections` or `secrets`.
    pub watch: String,
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Expiry of the token in each connection's Secret (Unix seconds).
    pub token_expiration: Family<ConnectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// When each connection's token will be renewed (Unix seconds).
    pub token_renewal: Family<ConnectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 when the connection is Ready, else 0.
    pub ready: Family<ConnectionLabels, Gauge>,
    /// Token requests by result.
    pub token_requests: Family<ResultLabels, Counter>,
    /// Token request latency by result.
    pub token_request_duration: Family<OutcomeLabels, Histogram>,
    /// Reconcile errors by reason (token failures and Kubernetes API errors).
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    /// Writes to the Kubernetes API by kind.
    pub kubernetes_writes: Family<WriteLabels, Counter>,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Failed Kubernetes API calls per connection, by condition reason.
    pub kubernetes_errors: Family<ReasonLabels, Counter>,
    /// Connections the operator holds state for.
    pub connections: Gauge,
    /// Reconciles that found their environment's request budget taken and were requeued at
    /// their slot.
    pub throttled: Counter,
    /// Rolling restarts of workloads after rotations.
    pub rollout_restarts: Family<RolloutLabels, Counter>,
    /// Client secret rotations by result (`success` or the condition reason).
    pub secret_rotations: Family<ResultLabels, Counter>,
    /// `exp` of the current token minus the expiry `expires_in` gave (JWTs only).
    pub token_expiry_skew: Family<ConnectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Watch failures (each is followed by a restart of the watch after a backoff).
    pub watch_errors: Family<WatchLabels, Counter>,
    /// When a reconcile last completed without error (Unix seconds).
    pub last_successful_reconcile: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Results and reasons seen per connection, so that `forget` can remove their series.
    seen: Mutex<HashMap<ConnectionLabels, BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pingone_operator");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            token_expiration: Family::default(),
            token_renewal: Family::default(),
            ready: Family::default(),
            token_requests: Family::default(),
            token_request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            reconcile_errors: Family::default(),
            kubernetes_writes: Family::default(),
            reconciles: Counter::default(),
            kubernetes_errors: Family::default(),
            connections: Gauge::default(),
            throttled: Counter::default(),
            rollout_restarts: Family::default(),
            secret_rotations: Family::default(),
            watch_errors: Family::default(),
            token_expiry_skew: Family::default(),
            last_successful_reconcile: Gauge::default(),
            seen: Mutex::default(),
        };
        registry.register(
            "token_expiration_timestamp_seconds",
            "Expiry of the token in the connection's Secret, as a Unix timestamp",
            m.token_expiration.clone(),
        );
        registry.register(
            "token_renewal_timestamp_seconds",
            "When the operator will renew the connection's token, as a Unix timestamp",
            m.token_renewal.clone(),
        );
        registry.register(
            "ready_status",
            "1 when the connection is Ready, 0 otherwise",
            m.ready.clone(),
        );
        registry.register(
            "token_requests",
            "Token requests sent to PingOne, by result",
            m.token_requests.clone(),
        );
        registry.register(
            "token_request_duration_seconds",
            "Duration of token requests, by result",
            m.token_request_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles and token requests, by condition reason",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "kubernetes_writes",
            "Writes to the Kubernetes API by kind (secret, status)",
            m.kubernetes_writes.clone(),
        );
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
        registry.register(
            "kubernetes_errors",
            "Failed Kubernetes API calls of reconciles, by condition reason",
            m.kubernetes_errors.clone(),
        );
        registry.register(
            "throttled_reconciles",
            "Reconciles requeued at their slot of the environment's request budget",
            m.throttled.clone(),
        );
        registry.register(
            "connections",
            "Connections the operator holds state for",
            m.connections.clone(),
        );
        registry.register(
            "rollout_restarts",
            "Rolling restarts of spec.rolloutRestartTargets after token rotations",
            m.rollout_restarts.clone(),
        );
        registry.register(
            "client_secret_rotations",
            "Client secret rotations through the Management API, by result",
            m.secret_rotations.clone(),
        );
        registry.register(
            "token_expiry_skew_seconds",
            "The token's exp minus the expiry its expires_in gave; over 60 s in either direction means a clock is off",
            m.token_expiry_skew.clone(),
        );
        registry.register(
            "watch_errors",
            "Failures of the controller's watches, by watch; each watch restarts after a backoff",
            m.watch_errors.clone(),
        );
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "When a reconcile last completed without error, as a Unix timestamp",
            m.last_successful_reconcile.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    /// The skew between a token's `exp` and its `expires_in`.
    pub fn token_expiry_skew(&self, namespace: &str, name: &str, seconds: f64) {
        self.token_expiry_skew
            .get_or_create(&ConnectionLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .set(seconds);
    }

    /// A watch failed.
    pub fn watch_error(&self, watch: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                watch: watch.to_string(),
            })
            .inc();
    }

    /// A reconcile completed without error now.
    pub fn reconciled(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_successful_reconcile.set(now);
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// Records one token request.
    pub fn token_request(&self, namespace: &str, name: &str, result: &str, elapsed: Duration) {
        self.remember(namespace, name, result);
        self.token_requests
            .get_or_create(&ResultLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: result.into(),
            })
            .inc();
        self.token_request_duration
            .get_or_create(&OutcomeLabels {
                result: result.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an error by reason.
    pub fn error(&self, namespace: &str, name: &str, reason: &str) {
        self.remember(namespace, name, reason);
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a write to the API.
    /// Counts a failed Kubernetes API call of connection `namespace/name`.
    pub fn kubernetes_error(&self, namespace: &str, name: &str, reason: &str) {
        self.remember(namespace, name, &format!("kube:{reason}"));
        self.kubernetes_errors
            .get_or_create(&ReasonLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The number of connections the operator holds state for.
    pub fn set_connections(&self, count: usize) {
        self.connections
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn write(&self, kind: &str) {
        self.kubernetes_writes
            .get_or_create(&WriteLabels { kind: kind.into() })
            .inc();
    }

    /// Counts a rolling restart of a workload of `kind`.
    pub fn rollout_restart(&self, namespace: &str, name: &str, kind: &str) {
        self.remember(namespace, name, &format!("rollout:{kind}"));
        self.rollout_restarts
            .get_or_create(&RolloutLabels {
                namespace: namespace.into(),
                name: name.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Counts a client secret rotation attempt by result.
    pub fn secret_rotation(&self, namespace: &str, name: &str, result: &str) {
        self.remember(namespace, name, &format!("rotation:{result}"));
        self.secret_rotations
            .get_or_create(&ResultLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Sets the per-connection gauges.
    pub fn connection(
        &self,
        namespace: &str,
        name: &str,
        ready: bool,
        expires_at: Option<f64>,
        renew_at: Option<f64>,
    ) {
        let labels = ConnectionLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.ready.get_or_create(&labels).set(i64::from(ready));
        match expires_at {
            Some(t) => {
                self.token_expiration.get_or_create(&labels).set(t);
            }
            None => {
                self.token_expiration.remove(&labels);
            }
        }
        match renew_at {
            Some(t) => {
                self.token_renewal.get_or_create(&labels).set(t);
            }
            None => {
                self.token_renewal.remove(&labels);
            }
        }
    }

    /// Drops every series of a deleted connection.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = ConnectionLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.ready.remove(&labels);
        self.token_expiration.remove(&labels);
        self.token_renewal.remove(&labels);
        self.token_expiry_skew.remove(&labels);
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&labels)
            .unwrap_or_default();
        for value in seen {
            if let Some(reason) = value.strip_prefix("kube:") {
                self.kubernetes_errors.remove(&ReasonLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    reason: reason.into(),
                });
                continue;
            }
            if let Some(result) = value.strip_prefix("rotation:") {
                self.secret_rotations.remove(&ResultLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    result: result.into(),
                });
                continue;
            }
            if let Some(kind) = value.strip_prefix("rollout:") {
                self.rollout_restarts.remove(&RolloutLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    kind: kind.into(),
                });
                continue;
            }
            self.token_requests.remove(&ResultLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: value.clone(),
            });
            self.reconcile_errors.remove(&ReasonLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: value,
            });
        }
    }

    fn remember(&self, namespace: &str, name: &str, value: &str) {
        let labels = ConnectionLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let values = seen.entry(labels).or_default();
        if !values.contains(value) {
            values.insert(value.to_string());
        }
    }
}
