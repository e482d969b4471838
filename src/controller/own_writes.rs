//! What the operator itself last wrote, so that the echoes of its own writes cost nothing: the
//! watch event of a token Secret write triggers no reconcile, and a status already written is not
//! written again because the watch cache has not caught up yet. Per connection; kept in its
//! [`ConnectionState`](super::state::ConnectionState).

use std::hash::{Hash, Hasher};

use super::fingerprint::fingerprint;
use crate::api::PingOneConnectionStatus;

/// The operator's latest write of a connection's token Secret.
#[derive(Debug, Clone)]
pub struct OwnWrite {
    /// Fingerprint of the Secret's name and of the digest of the token it wrote.
    written: u64,
    /// The resourceVersion it produced; `None` while the write is in flight.
    resource_version: Option<String>,
    /// Versions whose events were taken for its echo while it was in flight.
    skipped_in_flight: Vec<String>,
}

impl OwnWrite {
    /// Before the operator writes token Secret `secret` holding the token with `token_digest`.
    /// It is registered before the write because the watch event can arrive before the
    /// response does.
    pub fn begin(secret: &str, token_digest: &str) -> Self {
        OwnWrite {
            written: fingerprint((secret, token_digest)),
            resource_version: None,
            skipped_in_flight: Vec::new(),
        }
    }

    /// After a successful write that produced `resource_version`. True when an event taken for
    /// the write's echo while it was in flight was in fact another version (someone changed the
    /// Secret meanwhile): the caller must look again.
    pub fn end(&mut self, resource_version: Option<String>) -> bool {
        let Some(rv) = resource_version else {
            return false;
        };
        let missed = self.skipped_in_flight.iter().any(|s| *s != rv);
        // Freed, not cleared: the versions were recorded by the Secret watch's thread, and a
        // buffer kept for the connection's lifetime would pin that thread's allocator arena.
        self.skipped_in_flight = Vec::new();
        self.resource_version = Some(rv);
        missed
    }

    /// True when the watch event of Secret `secret` at `resource_version` carrying token digest
    /// `token_digest` is the echo of this write: the same Secret and token and the version the
    /// write produced, or the write is still in flight (the version is then checked by
    /// [`OwnWrite::end`]).
    pub fn is_echo(&mut self, secret: &str, token_digest: &str, resource_version: &str) -> bool {
        if self.written != fingerprint((secret, token_digest)) {
            return false;
        }
        match &self.resource_version {
            Some(own) => own == resource_version,
            None => {
                self.skipped_in_flight.push(resource_version.to_string());
                true
            }
        }
    }
}

/// A hash of the last status written for a connection, with the resourceVersion the write
/// produced (a hash, not a copy: the store already holds the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenStatus {
    resource_version: String,
    hash: u64,
}

fn status_hash(status: &PingOneConnectionStatus) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl WrittenStatus {
    /// After a status write that produced `resource_version`.
    pub fn new(resource_version: Option<String>, status: &PingOneConnectionStatus) -> Option<Self> {
        Some(WrittenStatus {
            resource_version: resource_version?,
            hash: status_hash(status),
        })
    }

    /// True when `status` is what was written and the copy at `resource_version` (from the
    /// watch cache) predates that write: the cache has not caught up, and writing the same
    /// status again would be a wasted write.
    pub fn is_current(
        &self,
        resource_version: Option<&str>,
        status: &PingOneConnectionStatus,
    ) -> bool {
        // resourceVersions are opaque, but the API server's are etcd revisions; when either does
        // not parse as one, the status is written again (harmless).
        let stale = match (
            resource_version.and_then(|rv| rv.parse::<u64>().ok()),
            self.resource_version.parse::<u64>().ok(),
        ) {
            (Some(seen), Some(written)) => seen < written,
            _ => false,
        };
        stale && self.hash == status_hash(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_of_a_completed_write_is_recognised_and_nothing_else() {
        let mut w = OwnWrite::begin("t", "d1");
        assert!(!w.end(Some("10".into())));
        assert!(w.is_echo("t", "d1", "10"));
        // Another version or another token: not ours.
        assert!(!w.is_echo("t", "d1", "11"));
        assert!(!w.is_echo("t", "d2", "10"));
        // The same token in another Secret: not ours.
        assert!(!w.is_echo("u", "d1", "10"));
    }

    #[test]
    fn an_echo_that_arrives_before_the_response_is_recognised() {
        let mut w = OwnWrite::begin("t", "d1");
        assert!(w.is_echo("t", "d1", "10"));
        // It was the write's own version: nothing was missed.
        assert!(!w.end(Some("10".into())));
        assert!(w.is_echo("t", "d1", "10"));
    }

    #[test]
    fn another_change_taken_for_the_echo_in_flight_is_reported_when_the_write_returns() {
        let mut w = OwnWrite::begin("t", "d1");
        assert!(w.is_echo("t", "d1", "10"));
        assert!(w.is_echo("t", "d1", "11"));
        assert!(w.end(Some("10".into())));
        // Reported once.
        let mut w = OwnWrite::begin("t", "d2");
        assert!(!w.end(Some("12".into())));
    }

    fn status(failed_attempts: u32) -> PingOneConnectionStatus {
        PingOneConnectionStatus {
            failed_attempts,
            ..Default::default()
        }
    }

    #[test]
    fn a_status_is_skipped_only_while_the_cache_predates_the_same_write() {
        assert!(WrittenStatus::new(None, &status(0)).is_none());
        let w = WrittenStatus::new(Some("10".into()), &status(0)).unwrap();
        // The cache still shows version 9: the write has not reached it, and it was this status.
        assert!(w.is_current(Some("9"), &status(0)));
        // Another status, or a cache that has caught up (or moved on): write.
        assert!(!w.is_current(Some("9"), &status(1)));
        assert!(!w.is_current(Some("10"), &status(0)));
        assert!(!w.is_current(Some("11"), &status(0)));
        // Versions that are not numbers, or none: write.
        assert!(!w.is_current(Some("abc"), &status(0)));
        assert!(!w.is_current(None, &status(0)));
    }
}
