//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Per-connection series carry `namespace` and `name` and are removed when the connection is
//! deleted. They are kept as one compact entry per connection (its gauges' values and its
//! counters), by namespace and name, encoded into their metric families at scrape time: one
//! entry per connection costs far less than a series per metric in each family, every one with its
//! own copy of the label strings. The request-duration histogram is labelled by result only: a
//! histogram per connection would multiply series by the bucket count for thousands of
//! connections.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    /// Every per-connection series (readiness, token timestamps and skew, per-connection
    /// counters), one entry per connection.
    per_connection: Arc<PerConnectionSeries>,
    /// Token request latency by result.
    pub token_request_duration: Family<OutcomeLabels, Histogram>,
    /// Writes to the Kubernetes API by kind.
    pub kubernetes_writes: Family<WriteLabels, Counter>,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Connections the operator holds state for.
    pub connections: Gauge,
    /// 1 while this replica runs the controller (it holds the leader election Lease, or leader
    /// election is off), 0 while it stands by.
    pub leader: Gauge,
    /// Reconciles that found their environment's request budget taken and were requeued at
    /// their slot.
    pub throttled: Counter,
    /// Watch failures (each is followed by a restart of the watch after a backoff).
    pub watch_errors: Family<WatchLabels, Counter>,
    /// When a reconcile last completed without error (Unix seconds).
    pub last_successful_reconcile: Gauge<f64, std::sync::atomic::AtomicU64>,
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
            per_connection: Arc::default(),
            token_request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            kubernetes_writes: Family::default(),
            reconciles: Counter::default(),
            connections: Gauge::default(),
            leader: Gauge::default(),
            throttled: Counter::default(),
            watch_errors: Family::default(),
            last_successful_reconcile: Gauge::default(),
        };
        registry.register(
            "token_request_duration_seconds",
            "Duration of token requests, by result",
            m.token_request_duration.clone(),
        );
        registry.register(
            "kubernetes_writes",
            "Writes to the Kubernetes API by kind (secret, status)",
            m.kubernetes_writes.clone(),
        );
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
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
            "leader",
            "1 while this replica runs the controller (holds the leader election Lease, or leader \
             election is off), 0 while it stands by",
            m.leader.clone(),
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
        registry.register_collector(Box::new(m.per_connection.clone()));
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    /// The skew between a token's `exp` and its `expires_in`.
    pub fn token_expiry_skew(&self, namespace: &str, name: &str, seconds: f64) {
        self.per_connection
            .update(namespace, name, |c, _| c.skew = Some(seconds));
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
        self.per_connection
            .count(namespace, name, Counted::TokenRequests, result);
        self.token_request_duration
            .get_or_create(&OutcomeLabels {
                result: result.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an error by reason.
    pub fn error(&self, namespace: &str, name: &str, reason: &str) {
        self.per_connection
            .count(namespace, name, Counted::ReconcileErrors, reason);
    }

    /// Counts a failed Kubernetes API call of connection `namespace/name`.
    pub fn kubernetes_error(&self, namespace: &str, name: &str, reason: &str) {
        self.per_connection
            .count(namespace, name, Counted::KubernetesErrors, reason);
    }

    /// The number of connections the operator holds state for.
    pub fn set_connections(&self, count: usize) {
        self.connections
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a write to the API.
    pub fn write(&self, kind: &str) {
        self.kubernetes_writes
            .get_or_create(&WriteLabels { kind: kind.into() })
            .inc();
    }

    /// Counts a rolling restart of a workload of `kind`.
    pub fn rollout_restart(&self, namespace: &str, name: &str, kind: &str) {
        self.per_connection
            .count(namespace, name, Counted::RolloutRestarts, kind);
    }

    /// Counts a client secret rotation attempt by result.
    pub fn secret_rotation(&self, namespace: &str, name: &str, result: &str) {
        self.per_connection
            .count(namespace, name, Counted::SecretRotations, result);
    }

    /// Sets the per-connection gauges. `None` removes that gauge's series.
    pub fn connection(
        &self,
        namespace: &str,
        name: &str,
        ready: bool,
        expires_at: Option<f64>,
        renew_at: Option<f64>,
    ) {
        self.per_connection.update(namespace, name, |c, _| {
            c.ready = Some(ready);
            c.expiration = expires_at;
            c.renewal = renew_at;
        });
    }

    /// Drops every series of a deleted connection.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.per_connection.forget(namespace, name);
    }
}

/// A per-connection counter metric; each has one label of its own besides the connection's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    TokenRequests,
    ReconcileErrors,
    KubernetesErrors,
    RolloutRestarts,
    SecretRotations,
}

impl Counted {
    /// Every kind, in the order of their families in the output.
    const ALL: [Counted; 5] = [
        Counted::TokenRequests,
        Counted::ReconcileErrors,
        Counted::KubernetesErrors,
        Counted::RolloutRestarts,
        Counted::SecretRotations,
    ];

    /// Name of the metric, without the prefix and the `_total` suffix.
    fn name(self) -> &'static str {
        match self {
            Counted::TokenRequests => "token_requests",
            Counted::ReconcileErrors => "reconcile_errors",
            Counted::KubernetesErrors => "kubernetes_errors",
            Counted::RolloutRestarts => "rollout_restarts",
            Counted::SecretRotations => "client_secret_rotations",
        }
    }

    /// HELP text; like every HELP text of this collector it ends in the full stop the registry
    /// adds to the HELP text of a registered metric.
    fn help(self) -> &'static str {
        match self {
            Counted::TokenRequests => "Token requests sent to PingOne, by result.",
            Counted::ReconcileErrors => {
                "Failed reconciles and token requests, by condition reason."
            }
            Counted::KubernetesErrors => {
                "Failed Kubernetes API calls of reconciles, by condition reason."
            }
            Counted::RolloutRestarts => {
                "Rolling restarts of spec.rolloutRestartTargets after token rotations."
            }
            Counted::SecretRotations => {
                "Client secret rotations through the Management API, by result."
            }
        }
    }

    /// Name of the label the counted value goes in.
    fn label(self) -> &'static str {
        match self {
            Counted::TokenRequests | Counted::SecretRotations => "result",
            Counted::ReconcileErrors | Counted::KubernetesErrors => "reason",
            Counted::RolloutRestarts => "kind",
        }
    }
}

/// One counter series of a connection.
#[derive(Debug)]
struct Count {
    counted: Counted,
    /// The value of the counter's own label (result, reason or kind), shared between
    /// connections.
    value: Arc<str>,
    count: u64,
}

/// Every series of one connection. `None` is a gauge without a series.
#[derive(Debug, Default)]
struct PerConnection {
    /// Whether the connection is Ready (`ready_status` 1 or 0).
    ready: Option<bool>,
    /// Expiry of the token in the connection's Secret (Unix seconds).
    expiration: Option<f64>,
    /// When the connection's token will be renewed (Unix seconds).
    renewal: Option<f64>,
    /// `exp` of the current token minus the expiry `expires_in` gave (JWTs only).
    skew: Option<f64>,
    /// Counters that have counted at least once.
    counters: Vec<Count>,
}

/// The per-connection series of every connection.
#[derive(Debug, Default)]
struct Series {
    /// By namespace, then name: searched with borrowed strings, and in the order of the output.
    connections: BTreeMap<Box<str>, BTreeMap<Box<str>, PerConnection>>,
    /// Label values of the per-connection counters, each allocated once.
    values: HashSet<Arc<str>>,
}

/// The per-connection series, encoded into their metric families on each scrape.
#[derive(Debug, Default)]
struct PerConnectionSeries(Mutex<Series>);

impl PerConnectionSeries {
    /// Applies `f` to the entry of a connection, creating it if there is none.
    fn update(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut PerConnection, &mut HashSet<Arc<str>>),
    ) {
        let mut series = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Series {
            connections,
            values,
        } = &mut *series;
        if let Some(connection) = connections
            .get_mut(namespace)
            .and_then(|names| names.get_mut(name))
        {
            f(connection, values);
            return;
        }
        let mut connection = PerConnection::default();
        f(&mut connection, values);
        connections
            .entry(namespace.into())
            .or_default()
            .insert(name.into(), connection);
    }

    /// Adds one to a counter of a connection.
    fn count(&self, namespace: &str, name: &str, counted: Counted, value: &str) {
        self.update(namespace, name, |connection, values| {
            if let Some(count) = connection
                .counters
                .iter_mut()
                .find(|c| c.counted == counted && *c.value == *value)
            {
                count.count += 1;
                return;
            }
            let value = match values.get(value) {
                Some(shared) => shared.clone(),
                None => {
                    let shared: Arc<str> = value.into();
                    values.insert(shared.clone());
                    shared
                }
            };
            // Most connections have one or two counters: no spare capacity.
            connection.counters.reserve_exact(1);
            connection.counters.push(Count {
                counted,
                value,
                count: 1,
            });
        });
    }

    /// Removes every series of a connection.
    fn forget(&self, namespace: &str, name: &str) {
        let mut series = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(names) = series.connections.get_mut(namespace) else {
            return;
        };
        let removed = names.remove(name).is_some();
        if names.is_empty() {
            series.connections.remove(namespace);
        }
        if removed {
            // Label values no connection counts any more.
            series.values.retain(|v| Arc::strong_count(v) > 1);
        }
    }
}

/// Every connection's series with its namespace and name, sorted by both.
type Sorted<'a> = [(&'a str, &'a str, &'a PerConnection)];

/// Encodes a per-connection gauge family; a family without series is left out, as
/// [`Family`] does.
fn encode_gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    connections: &Sorted,
    name: &str,
    help: &str,
    value: impl Fn(&PerConnection) -> Option<V>,
) -> Result<(), std::fmt::Error> {
    if !connections.iter().any(|(_, _, c)| value(c).is_some()) {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for &(namespace, name, connection) in connections {
        if let Some(v) = value(connection) {
            let labels = [("namespace", namespace), ("name", name)];
            metric.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// Encodes a per-connection counter family; a family without series is left out, as
/// [`Family`] does.
fn encode_counter(
    encoder: &mut DescriptorEncoder,
    connections: &Sorted,
    counted: Counted,
) -> Result<(), std::fmt::Error> {
    if !connections
        .iter()
        .any(|(_, _, c)| c.counters.iter().any(|count| count.counted == counted))
    {
        return Ok(());
    }
    let mut metric =
        encoder.encode_descriptor(counted.name(), counted.help(), None, MetricType::Counter)?;
    for &(namespace, name, connection) in connections {
        for count in connection.counters.iter().filter(|c| c.counted == counted) {
            let labels = [
                ("namespace", namespace),
                ("name", name),
                (counted.label(), &*count.value),
            ];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count.count, None)?;
        }
    }
    Ok(())
}

impl Collector for PerConnectionSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Sorted by namespace and name (the maps' order), for the same output from the same
        // series.
        let connections: Vec<_> = series
            .connections
            .iter()
            .flat_map(|(namespace, names)| {
                names
                    .iter()
                    .map(move |(name, connection)| (&**namespace, &**name, connection))
            })
            .collect();
        encode_gauge(
            &mut encoder,
            &connections,
            "token_expiration_timestamp_seconds",
            "Expiry of the token in the connection's Secret, as a Unix timestamp.",
            |c| c.expiration,
        )?;
        encode_gauge(
            &mut encoder,
            &connections,
            "token_renewal_timestamp_seconds",
            "When the operator will renew the connection's token, as a Unix timestamp.",
            |c| c.renewal,
        )?;
        encode_gauge(
            &mut encoder,
            &connections,
            "ready_status",
            "1 when the connection is Ready, 0 otherwise.",
            |c| c.ready.map(i64::from),
        )?;
        for counted in Counted::ALL {
            encode_counter(&mut encoder, &connections, counted)?;
        }
        encode_gauge(
            &mut encoder,
            &connections,
            "token_expiry_skew_seconds",
            "The token's exp minus the expiry its expires_in gave; over 60 s in either direction means a clock is off.",
            |c| c.skew,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Updates of three connections, one of them forgotten afterwards.
    fn scenario() -> Metrics {
        let m = Metrics::new();
        m.token_request("ns-a", "one", "success", Duration::from_millis(20));
        m.token_request("ns-a", "one", "success", Duration::from_millis(40));
        m.token_request("ns-a", "one", "InvalidClient", Duration::from_millis(300));
        m.error("ns-a", "one", "InvalidClient");
        m.kubernetes_error("ns-a", "one", "KubernetesConflict");
        m.error("ns-a", "one", "KubernetesConflict");
        m.rollout_restart("ns-a", "one", "Deployment");
        m.rollout_restart("ns-a", "one", "Deployment");
        m.rollout_restart("ns-a", "one", "StatefulSet");
        m.secret_rotation("ns-a", "one", "success");
        m.secret_rotation("ns-a", "one", "RotationFailed");
        m.connection(
            "ns-a",
            "one",
            true,
            Some(1_800_000_000.0),
            Some(1_799_999_100.5),
        );
        m.token_expiry_skew("ns-a", "one", -2.0);
        m.token_request("ns-b", "two", "success", Duration::from_millis(10));
        m.connection("ns-b", "two", false, Some(1.5e9), Some(1.4e9));
        m.connection("ns-b", "two", false, None, None);
        m.token_expiry_skew("ns-b", "two", 0.25);
        m.token_request("ns-c", "gone", "success", Duration::from_millis(10));
        m.error("ns-c", "gone", "TokenEndpointUnavailable");
        m.kubernetes_error("ns-c", "gone", "KubernetesError");
        m.rollout_restart("ns-c", "gone", "DaemonSet");
        m.secret_rotation("ns-c", "gone", "success");
        m.connection("ns-c", "gone", true, Some(1.9e9), Some(1.85e9));
        m.token_expiry_skew("ns-c", "gone", 1.0);
        m.forget("ns-c", "gone");
        m.connection("ns-d", "quote\"d", true, Some(1e9), None);
        m.write("secret");
        m.write("status");
        m.watch_error("secrets");
        m.reconciles.inc();
        m.throttled.inc();
        m.set_connections(3);
        m
    }

    /// What [`scenario`] encoded to with a `Family` per metric.
    const SCENARIO_TEXT: &str = r#"
# HELP pingone_operator_token_expiration_timestamp_seconds Expiry of the token in the connection's Secret, as a Unix timestamp.
# TYPE pingone_operator_token_expiration_timestamp_seconds gauge
pingone_operator_token_expiration_timestamp_seconds{namespace="ns-d",name="quote\"d"} 1000000000.0
pingone_operator_token_expiration_timestamp_seconds{namespace="ns-a",name="one"} 1800000000.0
# HELP pingone_operator_token_renewal_timestamp_seconds When the operator will renew the connection's token, as a Unix timestamp.
# TYPE pingone_operator_token_renewal_timestamp_seconds gauge
pingone_operator_token_renewal_timestamp_seconds{namespace="ns-a",name="one"} 1799999100.5
# HELP pingone_operator_ready_status 1 when the connection is Ready, 0 otherwise.
# TYPE pingone_operator_ready_status gauge
pingone_operator_ready_status{namespace="ns-a",name="one"} 1
pingone_operator_ready_status{namespace="ns-d",name="quote\"d"} 1
pingone_operator_ready_status{namespace="ns-b",name="two"} 0
# HELP pingone_operator_token_requests Token requests sent to PingOne, by result.
# TYPE pingone_operator_token_requests counter
pingone_operator_token_requests_total{namespace="ns-b",name="two",result="success"} 1
pingone_operator_token_requests_total{namespace="ns-a",name="one",result="InvalidClient"} 1
pingone_operator_token_requests_total{namespace="ns-a",name="one",result="success"} 2
# HELP pingone_operator_token_request_duration_seconds Duration of token requests, by result.
# TYPE pingone_operator_token_request_duration_seconds histogram
pingone_operator_token_request_duration_seconds_sum{result="InvalidClient"} 0.3
pingone_operator_token_request_duration_seconds_count{result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="0.005",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.01",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.02",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.04",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.08",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.16",result="InvalidClient"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.32",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="0.64",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="1.28",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="2.56",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="5.12",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="10.24",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="20.48",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="40.96",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_bucket{le="+Inf",result="InvalidClient"} 1
pingone_operator_token_request_duration_seconds_sum{result="success"} 0.07999999999999999
pingone_operator_token_request_duration_seconds_count{result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="0.005",result="success"} 0
pingone_operator_token_request_duration_seconds_bucket{le="0.01",result="success"} 2
pingone_operator_token_request_duration_seconds_bucket{le="0.02",result="success"} 3
pingone_operator_token_request_duration_seconds_bucket{le="0.04",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="0.08",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="0.16",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="0.32",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="0.64",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="1.28",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="2.56",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="5.12",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="10.24",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="20.48",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="40.96",result="success"} 4
pingone_operator_token_request_duration_seconds_bucket{le="+Inf",result="success"} 4
# HELP pingone_operator_reconcile_errors Failed reconciles and token requests, by condition reason.
# TYPE pingone_operator_reconcile_errors counter
pingone_operator_reconcile_errors_total{namespace="ns-a",name="one",reason="KubernetesConflict"} 1
pingone_operator_reconcile_errors_total{namespace="ns-a",name="one",reason="InvalidClient"} 1
# HELP pingone_operator_kubernetes_writes Writes to the Kubernetes API by kind (secret, status).
# TYPE pingone_operator_kubernetes_writes counter
pingone_operator_kubernetes_writes_total{kind="secret"} 1
pingone_operator_kubernetes_writes_total{kind="status"} 1
# HELP pingone_operator_reconciles Reconciles run.
# TYPE pingone_operator_reconciles counter
pingone_operator_reconciles_total 1
# HELP pingone_operator_kubernetes_errors Failed Kubernetes API calls of reconciles, by condition reason.
# TYPE pingone_operator_kubernetes_errors counter
pingone_operator_kubernetes_errors_total{namespace="ns-a",name="one",reason="KubernetesConflict"} 1
# HELP pingone_operator_throttled_reconciles Reconciles requeued at their slot of the environment's request budget.
# TYPE pingone_operator_throttled_reconciles counter
pingone_operator_throttled_reconciles_total 1
# HELP pingone_operator_connections Connections the operator holds state for.
# TYPE pingone_operator_connections gauge
pingone_operator_connections 3
# HELP pingone_operator_leader 1 while this replica runs the controller (holds the leader election Lease, or leader election is off), 0 while it stands by.
# TYPE pingone_operator_leader gauge
pingone_operator_leader 0
# HELP pingone_operator_rollout_restarts Rolling restarts of spec.rolloutRestartTargets after token rotations.
# TYPE pingone_operator_rollout_restarts counter
pingone_operator_rollout_restarts_total{namespace="ns-a",name="one",kind="Deployment"} 2
pingone_operator_rollout_restarts_total{namespace="ns-a",name="one",kind="StatefulSet"} 1
# HELP pingone_operator_client_secret_rotations Client secret rotations through the Management API, by result.
# TYPE pingone_operator_client_secret_rotations counter
pingone_operator_client_secret_rotations_total{namespace="ns-a",name="one",result="RotationFailed"} 1
pingone_operator_client_secret_rotations_total{namespace="ns-a",name="one",result="success"} 1
# HELP pingone_operator_token_expiry_skew_seconds The token's exp minus the expiry its expires_in gave; over 60 s in either direction means a clock is off.
# TYPE pingone_operator_token_expiry_skew_seconds gauge
pingone_operator_token_expiry_skew_seconds{namespace="ns-b",name="two"} 0.25
pingone_operator_token_expiry_skew_seconds{namespace="ns-a",name="one"} -2.0
# HELP pingone_operator_watch_errors Failures of the controller's watches, by watch; each watch restarts after a backoff.
# TYPE pingone_operator_watch_errors counter
pingone_operator_watch_errors_total{watch="secrets"} 1
# HELP pingone_operator_last_successful_reconcile_timestamp_seconds When a reconcile last completed without error, as a Unix timestamp.
# TYPE pingone_operator_last_successful_reconcile_timestamp_seconds gauge
pingone_operator_last_successful_reconcile_timestamp_seconds 0.0
# EOF
"#;

    /// The lines of each metric family (its HELP, TYPE and samples), sorted: the order of
    /// families and of series within a family is not part of the format.
    fn families(text: &str) -> BTreeMap<&str, Vec<&str>> {
        let mut families: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut family = "";
        for line in text.lines().filter(|l| !l.is_empty() && *l != "# EOF") {
            if let Some(help) = line.strip_prefix("# HELP ") {
                family = help.split(' ').next().unwrap_or_default();
                assert!(!families.contains_key(family), "{family} twice");
            }
            families.entry(family).or_default().push(line);
        }
        for lines in families.values_mut() {
            lines.sort_unstable();
        }
        families
    }

    /// Sample lines of metric `name` (without the prefix).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let full = format!("pingone_operator_{name}");
        text.lines()
            .filter(|l| {
                l.strip_prefix(full.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .collect()
    }

    #[test]
    fn the_text_is_the_same_as_with_a_family_per_metric() {
        let text = scenario().encode();
        assert_eq!(families(&text), families(SCENARIO_TEXT));
        assert!(text.ends_with("\n# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_text_is_the_same_for_the_same_series() {
        let m = scenario();
        assert_eq!(m.encode(), m.encode());
        let a = Metrics::new();
        let b = Metrics::new();
        for (ns, name) in [("ns-b", "x"), ("ns-a", "y"), ("ns-a", "x"), ("ns-c", "a")] {
            a.connection(ns, name, true, Some(1.0), Some(2.0));
            a.token_request(ns, name, "success", Duration::ZERO);
        }
        for (ns, name) in [("ns-a", "x"), ("ns-c", "a"), ("ns-a", "y"), ("ns-b", "x")] {
            b.connection(ns, name, true, Some(1.0), Some(2.0));
            b.token_request(ns, name, "success", Duration::ZERO);
        }
        assert_eq!(a.encode(), b.encode());
        assert_eq!(
            samples(&a.encode(), "ready_status"),
            [
                r#"pingone_operator_ready_status{namespace="ns-a",name="x"} 1"#,
                r#"pingone_operator_ready_status{namespace="ns-a",name="y"} 1"#,
                r#"pingone_operator_ready_status{namespace="ns-b",name="x"} 1"#,
                r#"pingone_operator_ready_status{namespace="ns-c",name="a"} 1"#,
            ]
        );
    }

    #[test]
    fn every_per_connection_metric_is_encoded() {
        let m = Metrics::new();
        m.connection(
            "ns",
            "conn",
            true,
            Some(1_800_000_000.0),
            Some(1_799_999_100.5),
        );
        m.token_expiry_skew("ns", "conn", -3.5);
        m.token_request("ns", "conn", "success", Duration::from_millis(5));
        m.token_request("ns", "conn", "success", Duration::from_millis(5));
        m.token_request("ns", "conn", "InvalidClient", Duration::from_millis(5));
        m.error("ns", "conn", "InvalidClient");
        m.kubernetes_error("ns", "conn", "KubernetesError");
        m.rollout_restart("ns", "conn", "Deployment");
        m.secret_rotation("ns", "conn", "success");
        m.secret_rotation("ns", "conn", "success");
        m.secret_rotation("ns", "conn", "success");
        let text = m.encode();
        let expected = [
            (
                "token_expiration_timestamp_seconds",
                vec![
                    r#"pingone_operator_token_expiration_timestamp_seconds{namespace="ns",name="conn"} 1800000000.0"#,
                ],
            ),
            (
                "token_renewal_timestamp_seconds",
                vec![
                    r#"pingone_operator_token_renewal_timestamp_seconds{namespace="ns",name="conn"} 1799999100.5"#,
                ],
            ),
            (
                "ready_status",
                vec![r#"pingone_operator_ready_status{namespace="ns",name="conn"} 1"#],
            ),
            (
                "token_expiry_skew_seconds",
                vec![
                    r#"pingone_operator_token_expiry_skew_seconds{namespace="ns",name="conn"} -3.5"#,
                ],
            ),
            (
                "token_requests_total",
                vec![
                    r#"pingone_operator_token_requests_total{namespace="ns",name="conn",result="success"} 2"#,
                    r#"pingone_operator_token_requests_total{namespace="ns",name="conn",result="InvalidClient"} 1"#,
                ],
            ),
            (
                "reconcile_errors_total",
                vec![
                    r#"pingone_operator_reconcile_errors_total{namespace="ns",name="conn",reason="InvalidClient"} 1"#,
                ],
            ),
            (
                "kubernetes_errors_total",
                vec![
                    r#"pingone_operator_kubernetes_errors_total{namespace="ns",name="conn",reason="KubernetesError"} 1"#,
                ],
            ),
            (
                "rollout_restarts_total",
                vec![
                    r#"pingone_operator_rollout_restarts_total{namespace="ns",name="conn",kind="Deployment"} 1"#,
                ],
            ),
            (
                "client_secret_rotations_total",
                vec![
                    r#"pingone_operator_client_secret_rotations_total{namespace="ns",name="conn",result="success"} 3"#,
                ],
            ),
        ];
        for (name, lines) in expected {
            assert_eq!(samples(&text, name), lines, "{name}");
        }
        for (name, kind) in [
            ("token_expiration_timestamp_seconds", "gauge"),
            ("ready_status", "gauge"),
            ("token_requests", "counter"),
            ("client_secret_rotations", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE pingone_operator_{name} {kind}\n")),
                "{name}"
            );
        }
        m.connection(
            "ns",
            "conn",
            false,
            Some(1_800_000_000.0),
            Some(1_799_999_100.5),
        );
        assert_eq!(
            samples(&m.encode(), "ready_status"),
            [r#"pingone_operator_ready_status{namespace="ns",name="conn"} 0"#]
        );
    }

    #[test]
    fn none_removes_the_expiration_and_renewal_series() {
        let m = Metrics::new();
        m.connection("ns", "conn", true, Some(1.8e9), Some(1.7e9));
        m.connection("ns", "conn", false, None, None);
        let text = m.encode();
        assert!(samples(&text, "token_expiration_timestamp_seconds").is_empty());
        assert!(samples(&text, "token_renewal_timestamp_seconds").is_empty());
        // A family without series has no HELP and TYPE either.
        assert!(!text.contains("token_expiration_timestamp_seconds"));
        assert!(!text.contains("token_renewal_timestamp_seconds"));
        assert_eq!(
            samples(&text, "ready_status"),
            [r#"pingone_operator_ready_status{namespace="ns",name="conn"} 0"#]
        );
        m.connection("ns", "conn", true, Some(1.8e9), None);
        let text = m.encode();
        assert_eq!(
            samples(&text, "token_expiration_timestamp_seconds").len(),
            1
        );
        assert!(samples(&text, "token_renewal_timestamp_seconds").is_empty());
    }

    #[test]
    fn forget_removes_every_series_of_the_connection_only() {
        let m = Metrics::new();
        for name in ["gone", "kept"] {
            m.connection("ns", name, true, Some(1.8e9), Some(1.7e9));
            m.token_expiry_skew("ns", name, 1.0);
            m.token_request("ns", name, "success", Duration::from_millis(5));
            m.token_request("ns", name, "InvalidClient", Duration::from_millis(5));
            m.error("ns", name, "InvalidClient");
            m.kubernetes_error("ns", name, "KubernetesError");
            m.rollout_restart("ns", name, "Deployment");
            m.secret_rotation("ns", name, "success");
        }
        m.forget("ns", "gone");
        let text = m.encode();
        assert!(!text.contains(r#"name="gone""#), "{text}");
        for name in [
            "token_expiration_timestamp_seconds",
            "token_renewal_timestamp_seconds",
            "ready_status",
            "token_expiry_skew_seconds",
            "reconcile_errors_total",
            "kubernetes_errors_total",
            "rollout_restarts_total",
            "client_secret_rotations_total",
        ] {
            let lines = samples(&text, name);
            assert_eq!(lines.len(), 1, "{name}");
            assert!(
                lines[0].contains(r#"{namespace="ns",name="kept""#),
                "{name}"
            );
        }
        assert_eq!(samples(&text, "token_requests_total").len(), 2);
        // The histogram is not per connection.
        assert!(text.contains(r#"token_request_duration_seconds_count{result="success"} 2"#));

        m.forget("ns", "kept");
        let text = m.encode();
        assert!(!text.contains(r#"namespace="ns""#), "{text}");
        assert!(!text.contains("ready_status"), "{text}");
        assert!(!text.contains("client_secret_rotations"), "{text}");
        // A connection counted again after forget starts from one.
        m.secret_rotation("ns", "kept", "success");
        assert_eq!(
            samples(&m.encode(), "client_secret_rotations_total"),
            [
                r#"pingone_operator_client_secret_rotations_total{namespace="ns",name="kept",result="success"} 1"#
            ]
        );
    }

    #[test]
    fn label_values_are_shared_and_dropped_with_their_last_connection() {
        let m = Metrics::new();
        m.token_request("ns", "a", "success", Duration::ZERO);
        m.token_request("ns", "b", "success", Duration::ZERO);
        m.error("ns", "b", "Unusual");
        {
            let series = m.per_connection.0.lock().unwrap();
            assert_eq!(series.values.len(), 2);
            let a = &series.connections["ns"]["a"].counters[0].value;
            let b = &series.connections["ns"]["b"].counters[0].value;
            assert!(Arc::ptr_eq(a, b));
        }
        m.forget("ns", "b");
        let series = m.per_connection.0.lock().unwrap();
        assert_eq!(series.values.len(), 1);
        assert!(series.values.contains("success"));
    }

    #[test]
    fn a_key_splits_namespace_and_name_exactly() {
        let m = Metrics::new();
        m.connection("ab", "c", true, None, None);
        m.connection("a", "bc", false, None, None);
        let text = m.encode();
        assert_eq!(
            samples(&text, "ready_status"),
            [
                r#"pingone_operator_ready_status{namespace="a",name="bc"} 0"#,
                r#"pingone_operator_ready_status{namespace="ab",name="c"} 1"#,
            ]
        );
    }
}
