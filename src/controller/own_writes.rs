//! What the operator itself last wrote, so that the echoes of its own writes cost nothing: the
//! watch event of a token Secret write triggers no reconcile, and a status already written is not
//! written again because the watch cache has not caught up yet.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::api::PingOneConnectionStatus;

/// The operator's latest write of each token Secret, by (namespace, name).
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<(String, String), OwnWrite>>);

#[derive(Debug)]
struct OwnWrite {
    /// Digest of the token it wrote.
    token_digest: String,
    /// The resourceVersion it produced; `None` while the write is in flight.
    resource_version: Option<String>,
    /// Versions whose events were taken for its echo while it was in flight.
    skipped_in_flight: Vec<String>,
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

impl OwnWrites {
    /// Before the operator writes token Secret `namespace/name` holding the token with
    /// `token_digest`. It is registered before the write because the watch event can arrive
    /// before the response does.
    pub fn begin(&self, namespace: &str, name: &str, token_digest: Option<&str>) {
        let mut writes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match token_digest {
            Some(digest) => writes.insert(
                key(namespace, name),
                OwnWrite {
                    token_digest: digest.to_string(),
                    resource_version: None,
                    skipped_in_flight: Vec::new(),
                },
            ),
            None => writes.remove(&key(namespace, name)),
        };
    }

    /// After the write: the resourceVersion it produced, or `None` if it failed. True when an
    /// event taken for the write's echo while it was in flight was in fact another version
    /// (someone changed the Secret meanwhile): the caller must look again.
    pub fn end(&self, namespace: &str, name: &str, resource_version: Option<String>) -> bool {
        let mut writes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rv) = resource_version else {
            writes.remove(&key(namespace, name));
            return false;
        };
        let Some(write) = writes.get_mut(&key(namespace, name)) else {
            return false;
        };
        let missed = write.skipped_in_flight.iter().any(|s| *s != rv);
        write.skipped_in_flight.clear();
        write.resource_version = Some(rv);
        missed
    }

    /// True when the watch event of Secret `namespace/name` at `resource_version`, carrying the
    /// token digest `token_digest`, is the echo of the operator's latest write of it: the same
    /// token and the version that write produced, or the write is still in flight (the version
    /// is then checked by [`OwnWrites::end`]).
    pub fn is_echo(
        &self,
        namespace: &str,
        name: &str,
        token_digest: Option<&str>,
        resource_version: Option<&str>,
    ) -> bool {
        let (Some(digest), Some(rv)) = (token_digest, resource_version) else {
            return false;
        };
        let mut writes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(write) = writes.get_mut(&key(namespace, name)) else {
            return false;
        };
        if write.token_digest != digest {
            return false;
        }
        match &write.resource_version {
            Some(own) => own == rv,
            None => {
                write.skipped_in_flight.push(rv.to_string());
                true
            }
        }
    }

    /// Forgets Secret `namespace/name`.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.begin(namespace, name, None);
    }
}

/// A hash of the last status written per connection UID, with the resourceVersion the write
/// produced (a hash, not a copy: the store already holds the status).
#[derive(Debug, Default)]
pub struct WrittenStatus(Mutex<HashMap<String, (String, u64)>>);

fn status_hash(status: &PingOneConnectionStatus) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl WrittenStatus {
    /// True when `status` is what the operator last wrote for connection `uid` and the copy at
    /// `resource_version` (from the watch cache) predates that write: the cache has not caught
    /// up, and writing the same status again would be a wasted write.
    pub fn is_current(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        status: &PingOneConnectionStatus,
    ) -> bool {
        let written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some((written_rv, written_hash)) = written.get(uid) else {
            return false;
        };
        // resourceVersions are opaque, but the API server's are etcd revisions; when either does
        // not parse as one, the status is written again (harmless).
        let stale = match (
            resource_version.and_then(|rv| rv.parse::<u64>().ok()),
            written_rv.parse::<u64>().ok(),
        ) {
            (Some(seen), Some(written)) => seen < written,
            _ => false,
        };
        stale && *written_hash == status_hash(status)
    }

    /// After a status write that produced `resource_version`.
    pub fn remember(
        &self,
        uid: &str,
        resource_version: Option<String>,
        status: &PingOneConnectionStatus,
    ) {
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match resource_version {
            Some(rv) => written.insert(uid.to_string(), (rv, status_hash(status))),
            None => written.remove(uid),
        };
    }

    /// Forgets connection `uid`.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_of_a_completed_write_is_recognised_and_nothing_else() {
        let w = OwnWrites::default();
        w.begin("ns", "t", Some("d1"));
        assert!(!w.end("ns", "t", Some("10".into())));
        assert!(w.is_echo("ns", "t", Some("d1"), Some("10")));
        // Another version, another token, another Secret, a missing digest or version: not ours.
        assert!(!w.is_echo("ns", "t", Some("d1"), Some("11")));
        assert!(!w.is_echo("ns", "t", Some("d2"), Some("10")));
        assert!(!w.is_echo("ns", "u", Some("d1"), Some("10")));
        assert!(!w.is_echo("other", "t", Some("d1"), Some("10")));
        assert!(!w.is_echo("ns", "t", None, Some("10")));
        assert!(!w.is_echo("ns", "t", Some("d1"), None));
        w.forget("ns", "t");
        assert!(!w.is_echo("ns", "t", Some("d1"), Some("10")));
    }

    #[test]
    fn an_echo_that_arrives_before_the_response_is_recognised() {
        let w = OwnWrites::default();
        w.begin("ns", "t", Some("d1"));
        assert!(w.is_echo("ns", "t", Some("d1"), Some("10")));
        // It was the write's own version: nothing was missed.
        assert!(!w.end("ns", "t", Some("10".into())));
        assert!(w.is_echo("ns", "t", Some("d1"), Some("10")));
    }

    #[test]
    fn another_change_taken_for_the_echo_in_flight_is_reported_when_the_write_returns() {
        let w = OwnWrites::default();
        w.begin("ns", "t", Some("d1"));
        assert!(w.is_echo("ns", "t", Some("d1"), Some("10")));
        assert!(w.is_echo("ns", "t", Some("d1"), Some("11")));
        assert!(w.end("ns", "t", Some("10".into())));
        // Reported once.
        w.begin("ns", "t", Some("d2"));
        assert!(!w.end("ns", "t", Some("12".into())));
    }

    #[test]
    fn a_failed_write_has_no_echo() {
        let w = OwnWrites::default();
        w.begin("ns", "t", Some("d1"));
        assert!(!w.end("ns", "t", None));
        assert!(!w.is_echo("ns", "t", Some("d1"), Some("10")));
        // A write without a token (nothing to recognise it by) is never taken for an echo.
        w.begin("ns", "t", None);
        assert!(!w.is_echo("ns", "t", Some("d1"), Some("10")));
        assert!(!w.end("ns", "t", Some("10".into())));
    }

    fn status(failed_attempts: u32) -> PingOneConnectionStatus {
        PingOneConnectionStatus {
            failed_attempts,
            ..Default::default()
        }
    }

    #[test]
    fn a_status_is_skipped_only_while_the_cache_predates_the_same_write() {
        let w = WrittenStatus::default();
        assert!(!w.is_current("u", Some("5"), &status(0)));
        w.remember("u", Some("10".into()), &status(0));
        // The cache still shows version 9: the write has not reached it, and it was this status.
        assert!(w.is_current("u", Some("9"), &status(0)));
        // Another status, or a cache that has caught up (or moved on): write.
        assert!(!w.is_current("u", Some("9"), &status(1)));
        assert!(!w.is_current("u", Some("10"), &status(0)));
        assert!(!w.is_current("u", Some("11"), &status(0)));
        // Versions that are not numbers, or none: write.
        assert!(!w.is_current("u", Some("abc"), &status(0)));
        assert!(!w.is_current("u", None, &status(0)));
        assert!(!w.is_current("v", Some("9"), &status(0)));
        w.forget("u");
        assert!(!w.is_current("u", Some("9"), &status(0)));
    }
}
