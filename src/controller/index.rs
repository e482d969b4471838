//! Which connections a Secret matters to: as credentials, or as the token Secret name (owned or
//! not yet). Kept up to date by the reconciler, read by the Secret watch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

type Key = (String, String);

/// A map from `(namespace, secret name)` to the names of connections that reference it.
#[derive(Default)]
pub struct SecretIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_secret: HashMap<Key, BTreeSet<String>>,
    by_connection: HashMap<Key, Vec<String>>,
}

impl SecretIndex {
    /// Records that connection `namespace/name` references `secrets`, replacing what it
    /// referenced before.
    pub fn set(&self, namespace: &str, name: &str, secrets: &[&str]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let conn_key = (namespace.to_string(), name.to_string());
        let new: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        if inner.by_connection.get(&conn_key) == Some(&new) {
            return;
        }
        if let Some(old) = inner.by_connection.remove(&conn_key) {
            for secret in old {
                Self::unlink(&mut inner, namespace, &secret, name);
            }
        }
        for secret in &new {
            inner
                .by_secret
                .entry((namespace.to_string(), secret.clone()))
                .or_default()
                .insert(name.to_string());
        }
        inner.by_connection.insert(conn_key, new);
    }

    fn unlink(inner: &mut Inner, namespace: &str, secret: &str, name: &str) {
        let key = (namespace.to_string(), secret.to_string());
        if let Some(names) = inner.by_secret.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                inner.by_secret.remove(&key);
            }
        }
    }

    /// Forgets connection `namespace/name`; returns the Secrets it referenced.
    pub fn remove(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let old = inner
            .by_connection
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default();
        for secret in &old {
            Self::unlink(&mut inner, namespace, secret, name);
        }
        old
    }

    /// Names of the connections in `namespace` that reference Secret `secret`.
    pub fn connections(&self, namespace: &str, secret: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_references_and_their_changes() {
        let index = SecretIndex::default();
        index.set("ns", "a", &["creds", "a-token"]);
        index.set("ns", "b", &["creds", "b-token"]);
        assert_eq!(index.connections("ns", "creds"), vec!["a", "b"]);
        assert_eq!(index.connections("other", "creds"), Vec::<String>::new());
        index.set("ns", "a", &["creds2", "a-token"]);
        assert_eq!(index.connections("ns", "creds"), vec!["b"]);
        assert_eq!(index.connections("ns", "creds2"), vec!["a"]);
        index.remove("ns", "b");
        assert!(index.connections("ns", "creds").is_empty());
        assert!(index.connections("ns", "b-token").is_empty());
        assert_eq!(index.connections("ns", "a-token"), vec!["a"]);
    }
}
