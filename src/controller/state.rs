//! Everything the operator remembers about a connection between reconciles, in one place keyed by
//! the connection's UID, with one way to forget it: on delete, and when a re-list no longer
//! contains the connection.
//!
//! The memory is a cache, never the record: failures are also in status, tokens in the Secret.
//! Losing it (a restart, a forget of a live connection) costs at most a repeated write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::fingerprint::fingerprint;
use super::own_writes::{OwnWrite, WrittenStatus};
use super::policy::Failure;
use super::token_check::{self, TokenCheck};
use super::token_secret::IssuedToken;
use crate::api::PingOneConnectionStatus;
use crate::pingone::SecretString;

/// A token PingOne issued whose Secret write failed, kept so that the retry writes it instead
/// of asking PingOne again.
pub struct UnwrittenToken {
    /// What is known of it.
    pub token: IssuedToken,
    /// The token itself.
    pub access_token: SecretString,
}

/// A failed Kubernetes API call of the last reconcile, retried on its own backoff.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeFailure {
    /// Condition reason.
    pub reason: &'static str,
    /// Human message (the API server's words, no secrets).
    pub message: String,
    /// Failures in a row.
    pub attempts: u32,
    /// Only a person can fix it (RBAC, an admission policy).
    pub stalled: bool,
    /// When it was first seen in this run of failures.
    pub since: Timestamp,
}

/// The last Event published for a connection, so that an identical repeat is folded into a
/// series while any other Event is published as it is.
#[derive(Clone, Debug)]
pub struct LastEvent {
    /// Hash of type, reason and note.
    pub key: u64,
    /// When the Event was first published: its name is the connection's and this time's
    /// (see `events::event_name`), so the name need not be kept.
    pub first: Timestamp,
    /// Occurrences so far.
    pub count: i32,
    /// When it last occurred.
    pub at: Timestamp,
}

/// What the operator remembers of one connection. What only a failure or an unfinished write
/// leaves behind is boxed, so that the state of a healthy connection stays small.
#[derive(Default)]
pub struct ConnectionState {
    /// The connection's namespace.
    pub namespace: String,
    /// The connection's name.
    pub name: String,
    /// The Secrets it references (credentials, target), as indexed.
    secrets: Vec<String>,
    /// The last failed token request, while unresolved.
    pub failure: Option<Box<Failure>>,
    /// A token obtained but not yet written.
    pub unwritten: Option<Box<UnwrittenToken>>,
    /// The latest write of its token Secret, to recognise the watch event that echoes it.
    pub own_write: Option<OwnWrite>,
    /// The last status written.
    pub written_status: Option<WrittenStatus>,
    /// The last failed Kubernetes API call, while unresolved.
    pub kube_failure: Option<Box<KubeFailure>>,
    /// A reserved slot of its environment's request budget.
    pub slot: Option<tokio::time::Instant>,
    /// The last Event published.
    pub last_event: Option<LastEvent>,
    /// The credentials Secret's name and resourceVersion as the last reconcile read them: a
    /// watch event for that very version (a re-list, a list that arrives late) changes nothing.
    /// Kept as a fingerprint of both (see `credentials_seen`).
    credentials_seen: Option<u64>,
    /// The last failed client secret rotation, while unresolved.
    pub rotation_failure: Option<Box<super::rotation::RotationFailure>>,
    /// Whether `rotation_failure` was taken from status already: only the first reconcile of
    /// a process does, so that a copy of the connection older than the status that cleared a
    /// failure cannot bring it back.
    pub rotation_failure_read: bool,
    /// The check of the token issued at this time (`None` inside: an opaque token). Status
    /// shows it too, but the copy of the connection a reconcile gets may predate that write;
    /// kept until the watch brings a status that shows it (see `States::status_seen`).
    pub token_check: Option<(jiff::Timestamp, Option<TokenCheck>)>,
    /// The last renew-requested-at value a token was issued for (as for `token_check`).
    pub renew_served: Option<String>,
    /// The last renew-requested-at value a token request was sent for, served or not: a
    /// request lifts a backoff once.
    pub renew_attempted: Option<String>,
    /// What of the connection last started a reconcile (see `States::trigger`).
    trigger: Option<u64>,
}

impl ConnectionState {
    /// A reconcile read the credentials Secret `name` at `resource_version` (`None`: it is
    /// not there).
    pub fn credentials_seen(&mut self, name: &str, resource_version: Option<&str>) {
        self.credentials_seen = resource_version.map(|rv| fingerprint((name, rv)));
    }
}

/// The states are boxed: a map's slots hold their value inline and a hash map keeps a share of
/// its slots empty, so inline states (several hundred bytes each) would cost that much again in
/// empty slots at ten thousand connections. A UID is held once, shared by both maps.
#[derive(Default)]
struct Inner {
    by_uid: HashMap<Arc<str>, Box<ConnectionState>>,
    /// Namespace → Secret name → UIDs of the connections that reference it: nearly always one,
    /// so a plain vector (a one-element B-tree set would allocate a whole node). Keyed by
    /// namespace first, so that a Secret event looks its name up without building a key.
    by_secret: HashMap<String, HashMap<String, Vec<Arc<str>>>>,
}

impl Inner {
    fn referencing(&self, namespace: &str, secret: &str) -> &[Arc<str>] {
        self.by_secret
            .get(namespace)
            .and_then(|names| names.get(secret))
            .map_or(&[], Vec::as_slice)
    }
}

/// The states of all connections.
#[derive(Default)]
pub struct States(Mutex<Inner>);

impl States {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records connection `uid` (`namespace/name`) and the Secrets it references, creating its
    /// state on first sight.
    pub fn register(&self, uid: &str, namespace: &str, name: &str, secrets: &[&str]) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let uid: Arc<str> = inner
            .by_uid
            .get_key_value(uid)
            .map_or_else(|| Arc::from(uid), |(key, _)| key.clone());
        let state = inner.by_uid.entry(uid.clone()).or_default();
        if state.namespace == namespace
            && state.name == name
            && state
                .secrets
                .iter()
                .map(String::as_str)
                .eq(secrets.iter().copied())
        {
            return;
        }
        for old in std::mem::take(&mut state.secrets) {
            unlink(&mut inner.by_secret, &state.namespace, &old, &uid);
        }
        state.namespace = namespace.to_string();
        state.name = name.to_string();
        state.secrets = secrets.iter().map(|s| s.to_string()).collect();
        let names = match inner.by_secret.get_mut(namespace) {
            Some(names) => names,
            None => inner.by_secret.entry(namespace.to_string()).or_default(),
        };
        for secret in secrets {
            let uids = match names.get_mut(*secret) {
                Some(uids) => uids,
                None => names.entry(secret.to_string()).or_default(),
            };
            if !uids.contains(&uid) {
                uids.push(uid.clone());
            }
        }
    }

    /// True when the watch brings connection `uid` with a `trigger` (a hash of what starts a
    /// reconcile) other than the last one: its first sight, a spec change, a renew request. The
    /// state is made here for a connection not seen before; its reconcile fills it in.
    pub fn trigger(&self, uid: &str, trigger: u64) -> bool {
        let mut inner = self.lock();
        if let Some(state) = inner.by_uid.get_mut(uid) {
            return state.trigger.replace(trigger) != Some(trigger);
        }
        inner.by_uid.insert(
            Arc::from(uid),
            Box::new(ConnectionState {
                trigger: Some(trigger),
                ..Default::default()
            }),
        );
        true
    }

    /// Runs `f` on the state of connection `uid`, if it has one.
    pub fn with<R>(&self, uid: &str, f: impl FnOnce(&mut ConnectionState) -> R) -> Option<R> {
        self.lock().by_uid.get_mut(uid).map(|s| f(s))
    }

    /// Names of the connections in `namespace` that reference Secret `secret`.
    /// Names of the connections in `namespace` that reference Secret `secret` and have not
    /// already read it at `resource_version`.
    pub fn connections_for(
        &self,
        namespace: &str,
        secret: &str,
        resource_version: Option<&str>,
    ) -> Vec<String> {
        let inner = self.lock();
        inner
            .referencing(namespace, secret)
            .iter()
            .filter_map(|uid| inner.by_uid.get(uid))
            .filter(|s| {
                !matches!((s.credentials_seen, resource_version),
                    (Some(seen), Some(rv)) if seen == fingerprint((secret, rv)))
            })
            .map(|s| s.name.clone())
            .collect()
    }

    /// True when the watch event of Secret `namespace/secret` at `resource_version`, carrying
    /// token digest `token_digest`, is the echo of the operator's own latest write of it.
    pub fn is_echo(
        &self,
        namespace: &str,
        secret: &str,
        token_digest: Option<&str>,
        resource_version: Option<&str>,
    ) -> bool {
        let (Some(digest), Some(rv)) = (token_digest, resource_version) else {
            return false;
        };
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(uids) = inner
            .by_secret
            .get(namespace)
            .and_then(|names| names.get(secret))
        else {
            return false;
        };
        uids.iter().any(|uid| {
            inner
                .by_uid
                .get_mut(uid)
                .and_then(|s| s.own_write.as_mut())
                .is_some_and(|w| w.is_echo(secret, digest, rv))
        })
    }

    /// Forgets connection `uid`; returns its namespace and name when it was known.
    pub fn forget(&self, uid: &str) -> Option<(String, String)> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let state = *inner.by_uid.remove(uid)?;
        for secret in &state.secrets {
            unlink(&mut inner.by_secret, &state.namespace, secret, uid);
        }
        Some((state.namespace, state.name))
    }

    /// Forgets every connection whose UID `alive` rejects; returns their namespaces and names.
    pub fn retain(&self, alive: impl Fn(&str, &str, &str) -> bool) -> Vec<(String, String)> {
        let dead: Vec<String> = {
            let inner = self.lock();
            inner
                .by_uid
                .iter()
                .filter(|(uid, s)| !alive(uid, &s.namespace, &s.name))
                .map(|(uid, _)| uid.to_string())
                .collect()
        };
        dead.iter().filter_map(|uid| self.forget(uid)).collect()
    }

    /// The watch brought connection `uid` with `status` (the store holds it already): the
    /// token check kept only because a reconcile's copy could predate the status write goes
    /// once `status` shows that very check for that very token. A reconcile that started
    /// before, with an older copy, then finds the check in the store's newest copy (see
    /// `Reconcile::known_check`), which is never older than this one.
    pub fn status_seen(&self, uid: &str, status: Option<&PingOneConnectionStatus>) {
        let Some(status) = status else { return };
        let mut inner = self.lock();
        let Some(state) = inner.by_uid.get_mut(uid) else {
            return;
        };
        let Some((issued_at, own)) = &state.token_check else {
            return;
        };
        let shown = status.issued_at.as_ref().is_some_and(|t| t.0 == *issued_at)
            && match (own, token_check::from_status(Some(status))) {
                (Some(own), Some(recorded)) => own.same_outcome(&recorded),
                // An opaque token has no check, and status shows none.
                (None, None) => true,
                _ => false,
            };
        if shown {
            state.token_check = None;
        }
    }

    /// Connections with a state.
    pub fn len(&self) -> usize {
        self.lock().by_uid.len()
    }
}

fn unlink(
    by_secret: &mut HashMap<String, HashMap<String, Vec<Arc<str>>>>,
    ns: &str,
    secret: &str,
    uid: &str,
) {
    let Some(names) = by_secret.get_mut(ns) else {
        return;
    };
    if let Some(uids) = names.get_mut(secret) {
        uids.retain(|u| &**u != uid);
        if uids.is_empty() {
            names.remove(secret);
        }
    }
    if names.is_empty() {
        by_secret.remove(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_references_and_their_changes() {
        let states = States::default();
        states.register("ua", "ns", "a", &["creds", "a-token"]);
        states.register("ub", "ns", "b", &["creds", "b-token"]);
        let mut names = states.connections_for("ns", "creds", None);
        names.sort();
        assert_eq!(names, vec!["a", "b"]);
        assert!(states.connections_for("other", "creds", None).is_empty());
        states.register("ua", "ns", "a", &["creds2", "a-token"]);
        assert_eq!(states.connections_for("ns", "creds", None), vec!["b"]);
        assert_eq!(states.connections_for("ns", "creds2", None), vec!["a"]);
        assert_eq!(states.forget("ub"), Some(("ns".into(), "b".into())));
        assert!(states.connections_for("ns", "creds", None).is_empty());
        assert!(states.connections_for("ns", "b-token", None).is_empty());
        assert_eq!(states.connections_for("ns", "a-token", None), vec!["a"]);
        assert_eq!(states.len(), 1);
        // A version of the credentials the connection has already read triggers nothing.
        states.with("ua", |s| s.credentials_seen("creds2", Some("7")));
        assert!(states.connections_for("ns", "creds2", Some("7")).is_empty());
        assert_eq!(states.connections_for("ns", "creds2", Some("8")), vec!["a"]);
    }

    #[test]
    fn a_reconcile_is_triggered_by_a_first_sight_and_by_each_change_only() {
        let states = States::default();
        assert!(states.trigger("ua", 1), "first sight");
        assert!(
            !states.trigger("ua", 1),
            "the same spec again (a status write)"
        );
        // The reconcile fills in the state the trigger made.
        states.register("ua", "ns", "a", &["creds"]);
        assert_eq!(states.connections_for("ns", "creds", None), vec!["a"]);
        assert!(!states.trigger("ua", 1));
        assert!(states.trigger("ua", 2), "a spec change");
        assert!(!states.trigger("ua", 2));
        // Deleted and created again: a new UID, a new first sight.
        states.forget("ua");
        assert!(states.trigger("ub", 2));
        assert_eq!(states.len(), 1);
    }

    #[test]
    fn forgetting_drops_everything_of_a_connection() {
        let states = States::default();
        states.register("ua", "ns", "a", &["creds", "a-token"]);
        states.with("ua", |s| {
            let mut w = OwnWrite::begin("a-token", "d1");
            w.end(Some("10".into()));
            s.own_write = Some(w);
        });
        assert!(states.is_echo("ns", "a-token", Some("d1"), Some("10")));
        // Another Secret of the same connection is not its token Secret.
        assert!(!states.is_echo("ns", "creds", Some("d1"), Some("10")));
        let removed = states.retain(|uid, _, _| uid != "ua");
        assert_eq!(removed, vec![("ns".to_string(), "a".to_string())]);
        assert!(!states.is_echo("ns", "a-token", Some("d1"), Some("10")));
        assert!(states.with("ua", |_| ()).is_none());
        assert_eq!(states.len(), 0);
    }
}
