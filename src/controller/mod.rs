//! The reconciler: gathers facts (the connection, its credentials Secret, its token Secret),
//! asks the pure modules what to do, does it, and reports it in status, Events and metrics.

pub mod credentials;
pub mod digest_key;
mod events;
mod fingerprint;
pub mod jwks_wait;
pub mod layout;
mod own_writes;
pub mod plan;
pub mod policy;
mod presence;
mod reconcile;
pub mod rollout;
pub mod rotation;
pub mod schedule;
mod secret_meta;
mod state;
pub mod status;
pub mod token_check;
pub mod token_secret;
mod watch;

use std::sync::Arc;

use kube::Client;

pub use reconcile::reconcile;
pub use watch::{ControllerConfig, run};

use crate::metrics::Metrics;
use crate::pingone::TokenClient;
use schedule::Timing;
use state::States;

/// Field manager of every write, so server-side apply knows which fields are the operator's.
pub const FIELD_MANAGER: &str = "pingone-operator";

/// Reason when the token Secret was written by another installation of the operator that
/// keeps it fresh.
pub const REASON_INSTALLATION_CONFLICT: &str = "InstallationConflict";
/// Reason (Reconciling) while a renew request waits for the floor.
pub const REASON_RENEW_REQUEST_WAITING: &str = "RenewRequestWaiting";
/// Reason when the target Secret exists and is not owned by the connection.
pub const REASON_TARGET_CONFLICT: &str = "TargetSecretConflict";
/// Reason when spec.target's keys or extra entries are wrong (a template the schema could not
/// check, or a data key used twice).
pub const REASON_TARGET_TEMPLATE_INVALID: &str = "TargetTemplateInvalid";
/// Reason when the spec holds a value the schema could not reject.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason when a Kubernetes API call failed.
pub const REASON_KUBERNETES_ERROR: &str = "KubernetesApiError";
/// Reason when a write lost a race with another writer (409); retried with fresh state.
pub const REASON_KUBERNETES_CONFLICT: &str = "KubernetesConflict";
/// Reason when the operator may not read the credentials Secret (RBAC).
pub const REASON_CREDENTIALS_FORBIDDEN: &str = "CredentialsForbidden";
/// Reason when the operator may not read the target Secret (RBAC).
pub const REASON_TARGET_FORBIDDEN: &str = "TargetSecretForbidden";
/// Reason when the API server refused the token Secret write (admission policy, RBAC).
pub const REASON_TARGET_REJECTED: &str = "TargetSecretRejected";

/// Errors that end a reconcile early; it is retried by the error policy. Failures to get a
/// token, and Kubernetes API failures the reconcile can attribute, are not errors here: they
/// are outcomes, reported in status and retried on their own schedule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a namespace or UID (never for objects from the API server).
    #[error("object is missing {0}")]
    MissingField(&'static str),
}

impl Error {
    /// Stable reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingField(_) => REASON_INVALID_SPEC,
        }
    }
}

/// How long a watch may fail without a success before `/healthz` fails.
pub const DEFAULT_WATCH_FAILURE_THRESHOLD: std::time::Duration =
    std::time::Duration::from_secs(120);

/// State shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// PingOne client.
    pub tokens: TokenClient,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Renewal and retry policy.
    pub timing: Timing,
    /// Key of the inputs digest in token Secrets.
    pub digest_key: digest_key::DigestKey,
    /// What the operator remembers of each connection.
    states: States,
    /// Which Secrets exist, as the Secret watch has seen them.
    secret_names: presence::SecretNames,
    /// `reportingInstance` of Events: the pod name.
    reporting_instance: String,
    /// Jitter for first tokens and for renewals, each evenly spread over the tokens issued.
    first_jitter: schedule::Spread,
    renewal_jitter: schedule::Spread,
    /// What `/readyz` and `/healthz` report; the watches keep it current.
    pub health: Arc<crate::health::Health>,
    /// The connections as the watch last brought them (the running controller's store).
    connections:
        std::sync::Mutex<Option<kube::runtime::reflector::Store<crate::api::PingOneConnection>>>,
    /// What this process knows of client secret rotations under way, per credentials Secret:
    /// two connections sharing a Secret never rotate it at the same time, and a secret PingOne
    /// returned is kept here until it is in the Secret.
    rotations: rotation::Registry,
    /// Connections whose token waits for an unreachable JWKS, per environment.
    jwks_waits: Arc<jwks_wait::JwksWaits>,
    /// With leader election: until when this replica may act (see [`crate::leader::Fence`]).
    fence: std::sync::OnceLock<crate::leader::Fence>,
}

impl Context {
    /// A context with the given clients and policy.
    pub fn new(
        client: Client,
        tokens: TokenClient,
        metrics: Arc<Metrics>,
        timing: Timing,
        digest_key: digest_key::DigestKey,
    ) -> Self {
        Context {
            digest_key,
            reporting_instance: std::env::var("POD_NAME")
                .unwrap_or_else(|_| events::REPORTING_CONTROLLER.to_string()),
            client,
            tokens,
            metrics,
            timing,
            states: States::default(),
            secret_names: Default::default(),
            first_jitter: schedule::Spread::new(rand::random()),
            renewal_jitter: schedule::Spread::new(rand::random()),
            rotations: Default::default(),
            jwks_waits: Default::default(),
            fence: Default::default(),
            connections: Default::default(),
            health: Arc::new(crate::health::Health::new(DEFAULT_WATCH_FAILURE_THRESHOLD)),
        }
    }

    /// The same context, reporting to `health` (the server's).
    pub fn with_health(mut self, health: Arc<crate::health::Health>) -> Self {
        self.health = health;
        self
    }

    /// The fence of leader election: reconciles act only while it holds. Without leader
    /// election nobody asks for it and every reconcile acts.
    pub fn fence(&self) -> &crate::leader::Fence {
        self.fence.get_or_init(Default::default)
    }

    /// Whether this replica may act now.
    fn may_act(&self) -> bool {
        self.fence.get().is_none_or(|f| f.holds())
    }

    /// A unit in [0, 1) for the jitter of a new token (see [`schedule::choose_jitter`]).
    fn jitter_unit(&self, renewal: bool) -> f64 {
        if renewal {
            self.renewal_jitter.next()
        } else {
            self.first_jitter.next()
        }
    }

    /// The store's newest copy of connection `namespace/name`, once the controller runs.
    fn newest(&self, namespace: &str, name: &str) -> Option<Arc<crate::api::PingOneConnection>> {
        let store = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }

    /// Forgets everything about connection `uid`, its metrics series included.
    pub fn forget(&self, uid: &str) {
        if let Some((namespace, name)) = self.states.forget(uid) {
            self.metrics.forget(&namespace, &name);
        }
        self.metrics.set_connections(self.states.len());
    }

    /// Forgets every connection `alive(uid, namespace, name)` rejects (after a re-list).
    pub fn forget_all_but(&self, alive: impl Fn(&str, &str, &str) -> bool) {
        for (namespace, name) in self.states.retain(alive) {
            self.metrics.forget(&namespace, &name);
        }
        self.metrics.set_connections(self.states.len());
    }
}
