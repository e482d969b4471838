//! Watches that record, per object, a state and the moment it was first seen: whether a
//! connection is Ready, and which inputs digest a token Secret carries. The operator and the
//! floor are measured through the same watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::objects::connections;
use super::{INPUTS_DIGEST, MANAGED_SELECTOR};

/// A state per object name, with when it was first seen in that state.
#[derive(Default)]
struct Seen {
    states: HashMap<String, (String, Instant)>,
    /// Objects whose state is "ready" (for connections).
    ready: usize,
}

/// A running watch of one namespace.
pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

const READY: &str = "ready";

impl Observer {
    /// Watches the connections of `ns`: state `ready` once condition Ready is True.
    pub async fn connections(client: &Client, ns: &str) -> Result<Observer> {
        let stream = watcher::watcher(connections(client, ns), watcher::Config::default());
        Self::start(stream, |c: &DynamicObject| {
            let ready = c.data["status"]["conditions"]
                .as_array()
                .is_some_and(|conds| {
                    conds
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            (c.name_any(), if ready { READY } else { "" }.to_string())
        })
        .await
    }

    /// Watches the token Secrets of `ns` (metadata only): state = the inputs digest.
    pub async fn token_secrets(client: &Client, ns: &str) -> Result<Observer> {
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
        // `Api<PartialObjectMeta<_>>` makes metadata-only requests.
        let stream = watcher::watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR));
        Self::start(stream, |s: &PartialObjectMeta<Secret>| {
            (
                s.name_any(),
                s.annotations()
                    .get(INPUTS_DIGEST)
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .await
    }

    async fn start<K, S>(stream: S, state: fn(&K) -> (String, String)) -> Result<Observer>
    where
        K: Send + 'static,
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, changes) = watch::channel(0u64);
        let (init_tx, mut init_rx) = watch::channel(false);
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let obj = match event {
                    Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => o,
                    Ok(Event::InitDone) => {
                        let _ = init_tx.send(true);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (name, new) = state(&obj);
                let mut seen = task_seen.lock().unwrap_or_else(|e| e.into_inner());
                let old = seen.states.get(&name).map(|(s, _)| s.clone());
                if old.as_deref() != Some(new.as_str()) {
                    if old.as_deref() == Some(READY) {
                        seen.ready -= 1;
                    }
                    if new == READY {
                        seen.ready += 1;
                    }
                    seen.states.insert(name, (new, now));
                    drop(seen);
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), init_rx.wait_for(|d| *d))
            .await
            .map_err(|_| anyhow::anyhow!("watch did not list within 60 s"))??;
        Ok(Observer {
            seen,
            changes,
            task,
        })
    }

    /// Number of Ready connections.
    pub fn ready(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// The state of `name` and when it was first seen.
    pub fn state(&self, name: &str) -> Option<(String, Instant)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .states
            .get(name)
            .cloned()
    }

    /// When each Ready connection was first seen Ready.
    pub fn ready_times(&self) -> HashMap<String, Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .states
            .iter()
            .filter(|(_, (s, _))| s == READY)
            .map(|(n, (_, t))| (n.clone(), *t))
            .collect()
    }

    /// Waits until `check` holds, at most `timeout`.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T> {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(v) = check(self) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the watch ended"),
                Err(_) => bail!("not within {timeout:?}"),
            }
        }
    }

    /// Waits until `n` connections are Ready; returns when the last became Ready.
    pub async fn wait_ready(&self, n: usize, timeout: Duration) -> Result<Instant> {
        self.wait(timeout, |o| {
            (o.ready() >= n).then(|| {
                o.ready_times()
                    .values()
                    .copied()
                    .max()
                    .unwrap_or_else(Instant::now)
            })
        })
        .await
    }

    /// Waits until connection `name` is Ready; returns when it became Ready.
    pub async fn wait_name_ready(&self, name: &str, timeout: Duration) -> Result<Instant> {
        self.wait(timeout, |o| {
            o.state(name).filter(|(s, _)| s == READY).map(|(_, t)| t)
        })
        .await
    }

    /// Waits until `name`'s state differs from `old` (and is not empty); returns when it changed.
    pub async fn wait_changed(&self, name: &str, old: &str, timeout: Duration) -> Result<Instant> {
        self.wait(timeout, |o| {
            o.state(name)
                .filter(|(s, _)| s != old && !s.is_empty())
                .map(|(_, t)| t)
        })
        .await
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
