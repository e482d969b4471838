//! Connections whose token could not be checked because their environment's JWKS was
//! unreachable wait here, per environment, instead of rechecking one by one.
//!
//! A recheck of one connection is a reconcile: two Secret reads and a status write, for a JWKS
//! fetch that the environment's cache makes at most once a minute anyway. At 10,000 connections
//! that is hundreds of reads a second for nothing. So one task per environment fetches the JWKS
//! (the first time after [`TokenClient::jwks_min_refetch`], doubling up to [`RECHECK_CAP`]),
//! and only once keys come does it reconcile the connections waiting for them. Each
//! connection's own schedule (its renewal, whose new token is checked anyway) goes on as
//! before; nothing is read or written for it while it waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info};

use crate::api::PingOneConnection;
use crate::pingone::TokenClient;

/// Longest wait between two fetches of an unreachable JWKS.
pub const RECHECK_CAP: Duration = Duration::from_secs(15 * 60);

type Environment = (String, String);

/// The waiting connections of each environment whose JWKS is being rechecked; an environment
/// is in the map while its recheck task runs.
#[derive(Default)]
pub struct JwksWaits {
    waiting: Mutex<HashMap<Environment, HashSet<ObjectRef<PingOneConnection>>>>,
    /// Where the connections to reconcile go (the controller's trigger stream), once the
    /// controller runs.
    trigger: Mutex<Option<UnboundedSender<ObjectRef<PingOneConnection>>>>,
}

impl JwksWaits {
    /// Connects the waits to the controller: a connection sent here is reconciled.
    pub fn set_trigger(&self, trigger: UnboundedSender<ObjectRef<PingOneConnection>>) {
        *self.trigger.lock().unwrap_or_else(|e| e.into_inner()) = Some(trigger);
    }

    /// Whether `conn` waits for its environment's JWKS.
    pub fn is_waiting(&self, conn: &ObjectRef<PingOneConnection>) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|w| w.contains(conn))
    }

    /// Makes `conn` wait for the JWKS of its environment, starting the environment's recheck
    /// when none runs.
    pub fn wait(
        self: &Arc<Self>,
        tokens: &TokenClient,
        auth_domain: &str,
        environment_id: &str,
        conn: ObjectRef<PingOneConnection>,
    ) {
        let key = (auth_domain.to_string(), environment_id.to_string());
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = waiting.get_mut(&key) {
            set.insert(conn);
            return;
        }
        waiting.insert(key.clone(), HashSet::from([conn]));
        drop(waiting);
        let waits = self.clone();
        let tokens = tokens.clone();
        tokio::spawn(async move { waits.recheck(tokens, key).await });
    }

    /// Fetches the environment's JWKS with backoff until keys come, then reconciles the
    /// connections that waited.
    async fn recheck(self: Arc<Self>, tokens: TokenClient, key: Environment) {
        let (auth_domain, environment_id) = (&key.0, &key.1);
        let mut wait = tokens.jwks_min_refetch();
        loop {
            tokio::time::sleep(wait).await;
            if tokens.refresh_jwks(auth_domain, environment_id).await {
                break;
            }
            debug!(%auth_domain, %environment_id, ?wait, "the JWKS is still unreachable");
            wait = wait
                .saturating_mul(2)
                .min(RECHECK_CAP.max(tokens.jwks_min_refetch()));
        }
        let waited = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .unwrap_or_default();
        info!(
            %auth_domain,
            %environment_id,
            connections = waited.len(),
            "the JWKS is reachable again; checking the tokens that waited for it"
        );
        let trigger = self
            .trigger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(trigger) = trigger {
            for conn in waited {
                let _ = trigger.send(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_waits_once_per_environment() {
        let waits = JwksWaits::default();
        let a = ObjectRef::<PingOneConnection>::new("a").within("ns");
        let b = ObjectRef::<PingOneConnection>::new("b").within("ns");
        {
            let mut w = waits.waiting.lock().unwrap();
            w.insert(("d".into(), "e".into()), HashSet::from([a.clone()]));
        }
        assert!(waits.is_waiting(&a));
        assert!(!waits.is_waiting(&b));
    }
}
