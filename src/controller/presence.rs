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
//!
//! At the operator's start, a reconcile waits for the first list of its namespace's Secrets
//! before it decides whether to read its token Secret (as a controller waits for its caches to
//! sync), at most [`FIRST_LIST_WAIT`] after the watch started: without the wait, every
//! reconcile that runs while the list is still coming in reads a token Secret that, at a first
//! start, does not exist, and those reads slow the list down in turn.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::fingerprint::fingerprint;
use super::secret_meta::SecretMeta;

/// How long after a watch of every Secret starts reconciles wait, at most, for its first list.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(30);

/// The Secrets the watches have seen.
#[derive(Default)]
pub struct SecretNames {
    inner: Mutex<Inner>,
    /// Told when a scope's list completes.
    listed_now: Notify,
}

#[derive(Default)]
struct Inner {
    /// Hashes of the Secrets seen and not seen deleted.
    known: HashSet<u64>,
    /// Scopes (a namespace, or `None` for all) whose first list is complete.
    listed: HashSet<Option<String>>,
    /// Scopes watched in full, and until when reconciles wait for their first list.
    watched: HashSet<Option<String>>,
    wait_until: Option<Instant>,
}

impl Inner {
    fn listed(&self, namespace: &str) -> bool {
        self.listed.contains(&None) || self.listed.iter().flatten().any(|ns| ns == namespace)
    }

    fn watched(&self, namespace: &str) -> bool {
        self.watched.contains(&None) || self.watched.iter().flatten().any(|ns| ns == namespace)
    }
}

impl SecretNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch of every Secret in `scope` starts: until its first list is complete (or
    /// [`FIRST_LIST_WAIT`] has passed), [`SecretNames::first_list`] waits for it.
    pub fn watching(&self, scope: Option<&str>) {
        let mut inner = self.lock();
        inner.watched.insert(scope.map(str::to_string));
        inner
            .wait_until
            .get_or_insert_with(|| Instant::now() + FIRST_LIST_WAIT);
    }

    /// Returns once the Secrets of `namespace` are listed, at once when no watch of every
    /// Secret covers the namespace, and at the latest [`FIRST_LIST_WAIT`] after the watches
    /// started.
    pub async fn first_list(&self, namespace: &str) {
        loop {
            let listed_now = self.listed_now.notified();
            tokio::pin!(listed_now);
            // Registered before the check, so that a list completing in between is not missed.
            listed_now.as_mut().enable();
            let deadline = {
                let inner = self.lock();
                match inner.wait_until {
                    Some(until) if inner.watched(namespace) && !inner.listed(namespace) => until,
                    _ => return,
                }
            };
            if tokio::time::timeout_at(deadline, listed_now).await.is_err() {
                return;
            }
        }
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
                self.listed_now.notify_waiters();
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
        inner.listed(namespace) && !inner.known.contains(&key)
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

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_waits_for_the_first_list_of_a_watched_scope() {
        let names = std::sync::Arc::new(SecretNames::default());
        let t0 = Instant::now();
        // No watch of every Secret (a credentials selector): nothing to wait for.
        names.first_list("a").await;
        assert_eq!(t0.elapsed(), Duration::ZERO);

        names.watching(None);
        let waiter = tokio::spawn({
            let names = names.clone();
            async move {
                names.first_list("a").await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "returned before the list completed");
        names.saw(None, &Ok(watcher::Event::Init));
        names.saw(None, &Ok(watcher::Event::InitDone));
        let done = waiter.await.unwrap();
        assert_eq!(done - t0, Duration::from_secs(3));
        // Listed: no more waiting, here or in any other namespace.
        names.first_list("b").await;
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_list_the_wait_ends_thirty_seconds_after_the_watch_started() {
        let names = SecretNames::default();
        let t0 = Instant::now();
        names.watching(Some("a"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        names.first_list("a").await;
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        // Past the limit nobody waits, and a namespace no watch covers never did.
        names.first_list("a").await;
        names.first_list("b").await;
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert!(
            !names.absent("a", "token"),
            "nothing is known absent without a list"
        );
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
