//! What `/readyz` and `/healthz` report: ready once the role is known and, for the replica that
//! reconciles, every watch has listed its objects; unhealthy once a watch has been failing for
//! longer than a threshold (a process that cannot watch should be restarted).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// This replica's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (leader election has not answered).
    Unknown,
    /// Another replica leads; this one waits and serves metrics.
    Standby,
    /// This replica reconciles (it leads, or there is no leader election).
    Active,
}

#[derive(Clone, Copy, Debug, Default)]
struct WatchState {
    synced: bool,
    failing_since: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    role: Role,
    watches: BTreeMap<String, WatchState>,
}

/// Shared between the controller's watches and the health server.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<Inner>,
    failure_threshold: Duration,
}

impl Health {
    /// A replica whose role is not known yet; `/healthz` fails after a watch has failed for
    /// `failure_threshold` without a success.
    pub fn new(failure_threshold: Duration) -> Self {
        Health {
            inner: Mutex::new(Inner {
                role: Role::Unknown,
                watches: BTreeMap::new(),
            }),
            failure_threshold,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets this replica's role.
    pub fn set_role(&self, role: Role) {
        self.inner().role = role;
    }

    /// A watch that must list its objects before the replica is ready.
    pub fn register_watch(&self, name: &str) {
        self.inner().watches.entry(name.to_string()).or_default();
    }

    /// The watch listed its objects (its first list, or a re-list).
    pub fn watch_synced(&self, name: &str) {
        let mut inner = self.inner();
        let w = inner.watches.entry(name.to_string()).or_default();
        w.synced = true;
        w.failing_since = None;
    }

    /// The watch delivered an event.
    pub fn watch_ok(&self, name: &str) {
        if let Some(w) = self.inner().watches.get_mut(name) {
            w.failing_since = None;
        }
    }

    /// The watch failed (it retries with backoff).
    pub fn watch_failed(&self, name: &str) {
        let mut inner = self.inner();
        let w = inner.watches.entry(name.to_string()).or_default();
        w.failing_since.get_or_insert_with(Instant::now);
    }

    /// `Ok` when the replica is ready to serve: its role is known and, when it reconciles,
    /// every watch has synced. Otherwise what it waits for.
    pub fn ready(&self) -> Result<(), String> {
        let inner = self.inner();
        match inner.role {
            Role::Unknown => Err("waiting for leader election".into()),
            Role::Standby => Ok(()),
            Role::Active => {
                let waiting: Vec<&str> = inner
                    .watches
                    .iter()
                    .filter(|(_, w)| !w.synced)
                    .map(|(n, _)| n.as_str())
                    .collect();
                if inner.watches.is_empty() {
                    Err("the controller has not started its watches".into())
                } else if waiting.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "waiting for watches to sync: {}",
                        waiting.join(", ")
                    ))
                }
            }
        }
    }

    /// `Ok` unless a watch has been failing for longer than the threshold.
    pub fn healthy(&self) -> Result<(), String> {
        self.healthy_at(Instant::now())
    }

    fn healthy_at(&self, now: Instant) -> Result<(), String> {
        let inner = self.inner();
        let failing: Vec<String> = inner
            .watches
            .iter()
            .filter_map(|(n, w)| {
                let since = w.failing_since?;
                let for_ = now.saturating_duration_since(since);
                (for_ > self.failure_threshold).then(|| format!("{n} for {}s", for_.as_secs()))
            })
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(format!("watch failing: {}", failing.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_known_role_and_synced_watches() {
        let h = Health::new(Duration::from_secs(120));
        assert!(h.ready().is_err(), "role unknown");
        h.set_role(Role::Standby);
        assert_eq!(h.ready(), Ok(()), "a standby has nothing to sync");
        h.set_role(Role::Active);
        assert!(h.ready().is_err(), "no watches yet");
        h.register_watch("connections");
        h.register_watch("secrets");
        h.watch_synced("connections");
        let e = h.ready().unwrap_err();
        assert!(e.contains("secrets") && !e.contains("connections"), "{e}");
        h.watch_synced("secrets");
        assert_eq!(h.ready(), Ok(()));
    }

    #[test]
    fn healthz_fails_only_after_the_threshold_of_continuous_failure() {
        let h = Health::new(Duration::from_secs(120));
        h.register_watch("secrets");
        let start = Instant::now();
        h.watch_failed("secrets");
        assert_eq!(h.healthy_at(start + Duration::from_secs(119)), Ok(()));
        // Failing again does not restart the clock.
        h.watch_failed("secrets");
        let e = h.healthy_at(start + Duration::from_secs(121)).unwrap_err();
        assert!(e.contains("secrets"), "{e}");
        // One success and the clock starts over.
        h.watch_ok("secrets");
        assert_eq!(h.healthy_at(start + Duration::from_secs(500)), Ok(()));
    }
}
