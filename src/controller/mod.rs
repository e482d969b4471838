//! The reconciler: gathers facts (the connection, its credentials Secret, its token Secret),
//! asks the pure modules what to do, does it, and reports it in status, Events and metrics.

pub mod credentials;
pub mod digest_key;
mod index;
mod own_writes;
pub mod plan;
mod reconcile;
pub mod rollout;
pub mod schedule;
pub mod status;
pub mod token_secret;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

pub use index::SecretIndex;
pub use reconcile::reconcile;
pub use watch::{ControllerConfig, run};

use crate::metrics::Metrics;
use crate::pingone::{SecretString, TokenClient};
use own_writes::{OwnWrites, WrittenStatus};
use plan::Failure;
use schedule::Timing;

/// Field manager of every write, so server-side apply knows which fields are the operator's.
pub const FIELD_MANAGER: &str = "pingone-operator";

/// Reason when the target Secret exists and is not owned by the connection.
pub const REASON_TARGET_CONFLICT: &str = "TargetSecretConflict";
/// Reason when the spec holds a value the schema could not reject.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason when a Kubernetes API call failed.
pub const REASON_KUBERNETES_ERROR: &str = "KubernetesApiError";
/// Reason when a write lost a race with another writer (409); retried with fresh state.
pub const REASON_KUBERNETES_CONFLICT: &str = "KubernetesConflict";

/// Errors that end a reconcile early; it is retried by the error policy. Failures to get a
/// token are not errors here: they are outcomes, reported in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a namespace or UID (never for objects from the API server).
    #[error("object is missing {0}")]
    MissingField(&'static str),
}

impl Error {
    /// Stable reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => {
                REASON_KUBERNETES_CONFLICT
            }
            Error::Kube(_) => REASON_KUBERNETES_ERROR,
            Error::MissingField(_) => REASON_INVALID_SPEC,
        }
    }
}

/// A token PingOne issued whose Secret write failed.
struct UnwrittenToken {
    token: token_secret::IssuedToken,
    access_token: SecretString,
}

/// State shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// PingOne client.
    pub tokens: TokenClient,
    /// Event recorder, shared so that repeated Events aggregate.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Renewal and retry policy.
    pub timing: Timing,
    /// Last failure per connection UID.
    failures: Mutex<HashMap<String, Failure>>,
    /// Tokens obtained but not yet written (the Secret write failed), per connection UID, so
    /// that a retry writes them instead of asking PingOne again.
    unwritten: Mutex<HashMap<String, UnwrittenToken>>,
    /// Which connections a Secret matters to.
    pub index: SecretIndex,
    /// The latest token Secret write per (namespace, name), to recognise the watch event that
    /// echoes it.
    pub own_writes: OwnWrites,
    /// A hash of the last status written per connection UID, with the resourceVersion the write
    /// produced (a hash, not a copy: the store already holds the status).
    pub written_status: WrittenStatus,
    /// Jitter for first tokens and for renewals, each evenly spread over the tokens issued.
    first_jitter: schedule::Spread,
    renewal_jitter: schedule::Spread,
    /// Key of the inputs digest in token Secrets.
    pub digest_key: digest_key::DigestKey,
}

impl Context {
    /// A context with the given clients, policy and inputs digest key.
    pub fn new(
        client: Client,
        tokens: TokenClient,
        metrics: Arc<Metrics>,
        timing: Timing,
        digest_key: digest_key::DigestKey,
    ) -> Self {
        let reporter = Reporter {
            controller: "pingone-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tokens,
            metrics,
            timing,
            failures: Mutex::default(),
            unwritten: Mutex::default(),
            index: SecretIndex::default(),
            own_writes: OwnWrites::default(),
            written_status: WrittenStatus::default(),
            first_jitter: schedule::Spread::new(rand::random()),
            renewal_jitter: schedule::Spread::new(rand::random()),
            digest_key,
        }
    }

    /// A unit in [0, 1) for the jitter of a new token (see [`schedule::choose_jitter`]).
    fn jitter_unit(&self, renewal: bool) -> f64 {
        if renewal {
            self.renewal_jitter.next()
        } else {
            self.first_jitter.next()
        }
    }

    fn failure(&self, uid: &str) -> Option<Failure> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    fn set_failure(&self, uid: &str, failure: Option<Failure>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failure {
            Some(f) => failures.insert(uid.to_string(), f),
            None => failures.remove(uid),
        };
    }

    fn take_unwritten(&self, uid: &str) -> Option<UnwrittenToken> {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid)
    }

    fn put_unwritten(&self, uid: &str, token: UnwrittenToken) {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), token);
    }

    /// Forgets everything about a deleted connection.
    pub fn forget(&self, namespace: &str, name: &str, uid: Option<&str>) {
        if let Some(uid) = uid {
            self.set_failure(uid, None);
            self.take_unwritten(uid);
            self.written_status.forget(uid);
        }
        for secret in self.index.remove(namespace, name) {
            self.own_writes.forget(namespace, &secret);
        }
        self.metrics.forget(namespace, name);
    }
}
