//! Which Secrets exist, as the watch of every Secret's metadata has seen them, so that a
//! reconcile can skip reading a token Secret that does not exist yet: the first reconcile of
//! every new connection, which at an operator's first start is every connection.
//!
//! A name is kept as a 64-bit hash of namespace and name (about 16 bytes per Secret in the
//! cluster, not the names). The answer may be stale, and either way is safe:
//! - "exists" for a Secret that is gone costs the read it would have made anyway;
//! - "absent" for a Secret created a moment ago makes the create fail with AlreadyExists, and the
//!   reconcile then reads it and goes on as if it had read it first.
//!
//! Only a watch of every Secret in its scope can say "absent": with a credentials selector the
//! operator sees only some Secrets, and every token Secret is read.

use std::collections::HashSet;
use std::sync::Mutex;

use kube::runtime::watcher;

use super::own_writes::fingerprint;
use super::secret_meta::SecretMeta;

/// The Secrets the watches have seen.
#[derive(Default)]
pub struct SecretNames {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Hashes of the Secrets seen and not seen deleted.
    known: HashSet<u64>,
    /// Scopes (a namespace, or `None` for all) whose first list is complete.
    listed: HashSet<Option<String>>,
}

impl SecretNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event of the watch of every Secret in `scope`.
    pub fn saw(
        &self,
        scope: Option<&str>,
        event: &Result<watcher::Event<SecretMeta>, watcher::Error>,
    ) {
        let (secret, deleted) = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (s, false),
            Ok(watcher::Event::Delete(s)) => (s, true),
            Ok(watcher::Event::InitDone) => {
                self.lock().listed.insert(scope.map(str::to_string));
                return;
            }
            Ok(watcher::Event::Init) | Err(_) => return,
        };
        let (Some(namespace), Some(name)) = (
            secret.metadata.namespace.as_deref(),
            secret.metadata.name.as_deref(),
        ) else {
            return;
        };
        let key = fingerprint((namespace, name));
        let mut inner = self.lock();
        if deleted {
            inner.known.remove(&key);
        } else {
            inner.known.insert(key);
        }
    }

    /// True when Secret `namespace/name` is known not to exist: a complete list of its scope
    /// did not have it, and no event since has brought it.
    pub fn absent(&self, namespace: &str, name: &str) -> bool {
        let key = fingerprint((namespace, name));
        let inner = self.lock();
        let listed = inner.listed.contains(&None) || inner.listed.contains(&Some(namespace.into()));
        listed && !inner.known.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn secret(ns: &str, name: &str) -> SecretMeta {
        SecretMeta {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn absent_only_after_a_complete_list_and_until_an_event_brings_it() {
        let names = SecretNames::default();
        // Nothing listed yet: nothing is known to be absent.
        assert!(!names.absent("a", "token"));
        names.saw(None, &Ok(watcher::Event::Init));
        names.saw(None, &Ok(watcher::Event::InitApply(secret("a", "creds"))));
        assert!(!names.absent("a", "token"), "the list is not complete");
        names.saw(None, &Ok(watcher::Event::InitDone));
        assert!(names.absent("a", "token"));
        assert!(!names.absent("a", "creds"));
        // The same name in another namespace is another Secret.
        assert!(names.absent("b", "creds"));
        names.saw(None, &Ok(watcher::Event::Apply(secret("a", "token"))));
        assert!(!names.absent("a", "token"));
        names.saw(None, &Ok(watcher::Event::Delete(secret("a", "token"))));
        assert!(names.absent("a", "token"));
    }

    #[test]
    fn a_namespace_watch_answers_for_its_namespace_only() {
        let names = SecretNames::default();
        names.saw(Some("a"), &Ok(watcher::Event::Init));
        names.saw(Some("a"), &Ok(watcher::Event::InitDone));
        assert!(names.absent("a", "token"));
        assert!(!names.absent("b", "token"));
    }
}
