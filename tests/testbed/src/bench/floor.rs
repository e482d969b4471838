//! The floor: a plain client doing the operator's unavoidable work for a connection, and nothing
//! else: one read of its credentials Secret (its input), one token request to the stand-in
//! (reqwest + rustls, pooled connections, trusting the stand-in's CA), one server-side apply of
//! the token Secret, then one server-side apply of the status together with the `TokenIssued`
//! Event the product's contract asks for, at the operator's concurrency and under the same
//! per-environment request cap. It is told about each connection in-process (no watch, no other
//! read: it knows that no token Secret exists yet), so it is a lower bound.
//!
//! It runs on a Tokio runtime of its own whose threads are named `bench-floor`, so that its CPU
//! time can be read from `/proc/self/task`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::objects::{Created, connections};
use super::operator::threads_cpu_seconds;
use super::{AUTH_DOMAIN, ENV_ID};
use crate::controlplane::client_from_kubeconfig;
use crate::standin::StandIn;

const THREAD_NAME: &str = "bench-floor";
const MANAGER: &str = "pingone-bench-floor";

/// The plain client.
pub struct Floor {
    rt: Option<Runtime>,
    inner: Arc<Inner>,
}

struct Inner {
    kube: Client,
    http: reqwest::Client,
    token_url: String,
    concurrency: usize,
    interval: Option<Duration>,
    next_slot: Mutex<tokio::time::Instant>,
}

#[derive(Deserialize)]
struct TokenJson {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

impl Floor {
    /// A floor with its own runtime, Kubernetes client and HTTP client.
    pub async fn new(
        kubeconfig: &Path,
        standin: &StandIn,
        concurrency: usize,
        max_requests_per_second: u32,
    ) -> Result<Floor> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let tls = standin.client_tls_config()?;
        let addr = standin.addr();
        let kubeconfig = kubeconfig.to_path_buf();
        // Clients are made on the floor's runtime, so their connections and tasks live there.
        let inner = rt
            .spawn(async move {
                let kube = client_from_kubeconfig(&kubeconfig).await?;
                let http = reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .resolve(AUTH_DOMAIN, addr)
                    .no_proxy()
                    .timeout(Duration::from_secs(15))
                    .build()?;
                Ok::<_, anyhow::Error>((kube, http))
            })
            .await??;
        Ok(Floor {
            rt: Some(rt),
            inner: Arc::new(Inner {
                kube: inner.0,
                http: inner.1,
                token_url: format!("https://{AUTH_DOMAIN}/{ENV_ID}/as/token"),
                concurrency: concurrency.max(1),
                interval: (max_requests_per_second > 0)
                    .then(|| Duration::from_secs(1) / max_requests_per_second),
                next_slot: Mutex::new(tokio::time::Instant::now()),
            }),
        })
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime present until drop")
    }

    /// CPU seconds used by the floor's threads so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        threads_cpu_seconds(THREAD_NAME)
    }

    /// Serves every connection sent on `rx` until it closes, `concurrency` at a time. Returns
    /// how many it served.
    pub fn serve(
        &self,
        rx: mpsc::UnboundedReceiver<Created>,
    ) -> tokio::task::JoinHandle<Result<usize>> {
        let inner = self.inner.clone();
        self.rt().spawn(async move {
            let stream = tokio_stream_from(rx);
            stream
                .map(|c| {
                    let inner = inner.clone();
                    async move { inner.issue(&c).await }
                })
                .buffer_unordered(inner.concurrency)
                .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
                .await
        })
    }

    /// What a restarted controller must at least read: the connections of `ns`, then each one's
    /// credentials and token Secret, at the floor's concurrency. Returns how long it took.
    pub async fn restart_reads(&self, ns: &str) -> Result<Duration> {
        let inner = self.inner.clone();
        let ns = ns.to_string();
        self.rt()
            .spawn(async move {
                let start = Instant::now();
                let list = connections(&inner.kube, &ns)
                    .list(&ListParams::default())
                    .await?;
                let secrets: Api<Secret> = Api::namespaced(inner.kube.clone(), &ns);
                stream::iter(list.items)
                    .map(|c| {
                        let secrets = secrets.clone();
                        async move {
                            let name = c.name_any();
                            let creds = format!("{name}-creds");
                            let token = format!("{name}-token");
                            tokio::try_join!(secrets.get_opt(&creds), secrets.get_opt(&token))?;
                            Ok::<_, anyhow::Error>(())
                        }
                    })
                    .buffer_unordered(inner.concurrency)
                    .try_collect::<()>()
                    .await?;
                Ok(start.elapsed())
            })
            .await?
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The floor's stand-in for the operator's inputs digest.
pub fn floor_digest(client_id: &str, client_secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(client_id.as_bytes());
    h.update([0]);
    h.update(client_secret.as_bytes());
    let d = h.finalize();
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Inner {
    async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = tokio::time::Instant::now();
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Token request, token Secret apply, status apply.
    async fn issue(&self, c: &Created) -> Result<()> {
        // Its input: the credentials, read from their Secret as the operator must.
        let creds = Api::<Secret>::namespaced(self.kube.clone(), &c.namespace)
            .get(&c.credentials_secret())
            .await
            .context("floor credentials read")?;
        let field = |key: &str| {
            creds
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .with_context(|| format!("credentials Secret of {} lacks {key}", c.name))
        };
        let (client_id, client_secret) = (field("clientId")?, field("clientSecret")?);
        // A 429 (a rate-limited stand-in) is waited out and asked again, as any client would.
        let mut attempts = 0;
        let (issued, response) = loop {
            self.acquire().await;
            let issued = jiff::Timestamp::now();
            let response = self
                .http
                .post(&self.token_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                ])
                .send()
                .await
                .context("floor token request")?;
            attempts += 1;
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || attempts >= 10 {
                break (issued, response);
            }
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        let token: TokenJson = response.error_for_status()?.json().await?;
        let expires = issued + jiff::SignedDuration::from_secs(token.expires_in as i64);
        let renew = issued + jiff::SignedDuration::from_secs((token.expires_in * 6 / 10) as i64);
        let ts = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(c.token_secret()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".into(),
                        "pingone-operator".into(),
                    ),
                    ("pingone.tokenops.dev/connection".into(), c.name.clone()),
                ])),
                annotations: Some(BTreeMap::from([
                    (
                        super::INPUTS_DIGEST.into(),
                        floor_digest(&client_id, &client_secret),
                    ),
                    ("pingone.tokenops.dev/issued-at".into(), ts(issued)),
                    ("pingone.tokenops.dev/expires-at".into(), ts(expires)),
                    ("pingone.tokenops.dev/renew-at".into(), ts(renew)),
                ])),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "pingone.tokenops.dev/v1alpha1".into(),
                        kind: "PingOneConnection".into(),
                        name: c.name.clone(),
                        uid: c.uid.clone(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    },
                ]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([
                ("access_token".into(), token.access_token),
                ("token_type".into(), token.token_type.clone()),
                ("expires_at".into(), ts(expires)),
            ])),
            ..Default::default()
        };
        let pp = PatchParams::apply(MANAGER).force();
        Api::<Secret>::namespaced(self.kube.clone(), &c.namespace)
            .patch(&c.token_secret(), &pp, &Patch::Apply(&secret))
            .await
            .context("floor Secret apply")?;
        let now = ts(jiff::Timestamp::now());
        let cond = |type_: &str, status: &str, reason: &str, message: &str| {
            serde_json::json!({
                "type": type_, "status": status, "reason": reason, "message": message,
                "observedGeneration": 1, "lastTransitionTime": now,
            })
        };
        let status = serde_json::json!({
            "apiVersion": "pingone.tokenops.dev/v1alpha1",
            "kind": "PingOneConnection",
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    cond("Ready", "True", "TokenIssued", &format!("Secret {} holds a token valid until {}", c.token_secret(), ts(expires))),
                    cond("Reconciling", "False", "TokenIssued", "Nothing to do until renewal"),
                    cond("Stalled", "False", "TokenIssued", "No problem"),
                ],
                "tokenSecretName": c.token_secret(),
                "issuedAt": ts(issued),
                "expiresAt": ts(expires),
                "renewalTime": ts(renew),
                "failedAttempts": 0,
                "tokenType": token.token_type,
            },
        });
        // The Event the product's contract asks for, sent with the status write as the
        // operator sends it.
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.floor.{}", c.name, issued.as_nanosecond())),
                namespace: Some(c.namespace.clone()),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some("TokenIssued".into()),
            note: Some(format!(
                "Issued the first token, in Secret {}, valid until {}",
                c.token_secret(),
                ts(expires)
            )),
            event_time: Some(MicroTime(issued)),
            regarding: Some(ObjectReference {
                api_version: Some("pingone.tokenops.dev/v1alpha1".into()),
                kind: Some("PingOneConnection".into()),
                name: Some(c.name.clone()),
                namespace: Some(c.namespace.clone()),
                uid: Some(c.uid.clone()),
                ..Default::default()
            }),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(MANAGER.into()),
            type_: Some("Normal".into()),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.kube.clone(), &c.namespace);
        let conns = connections(&self.kube, &c.namespace);
        let patch = Patch::Apply(&status);
        let post = PostParams::default();
        let (written, posted) = tokio::join!(
            conns.patch_status(&c.name, &pp, &patch),
            events.create(&post, &event)
        );
        written.context("floor status apply")?;
        posted.context("floor Event")?;
        Ok(())
    }
}

const WATCH_THREAD_NAME: &str = "bench-watch";

/// The floor of Secret churn: a bare metadata-only watch of every Secret in the cluster (what
/// the operator's Secret trigger must at least do without a label selector), on a runtime of its
/// own whose threads are named `bench-watch`. It counts the events and does nothing else.
pub struct MetadataWatch {
    rt: Option<Runtime>,
    events: Arc<std::sync::atomic::AtomicU64>,
}

impl MetadataWatch {
    /// Starts the watch and waits until its initial list is done.
    pub async fn start(kubeconfig: &Path) -> Result<MetadataWatch> {
        use kube::api::PartialObjectMeta;
        use kube::runtime::watcher;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(WATCH_THREAD_NAME)
            .enable_all()
            .build()?;
        let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let kubeconfig = kubeconfig.to_path_buf();
        let counter = events.clone();
        rt.spawn(async move {
            let Ok(kube) = client_from_kubeconfig(&kubeconfig).await else {
                return;
            };
            let api: Api<PartialObjectMeta<Secret>> = Api::all(kube);
            let mut listed = Some(listed_tx);
            let mut stream = std::pin::pin!(watcher::watcher(
                api,
                watcher::Config::default().any_semantic()
            ));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), listed_rx)
            .await
            .context("the bare Secret watch did not list within 120 s")?
            .context("the bare Secret watch ended before listing")?;
        Ok(MetadataWatch {
            rt: Some(rt),
            events,
        })
    }

    /// CPU seconds of the watch's threads so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        threads_cpu_seconds(WATCH_THREAD_NAME)
    }

    /// Events received so far (initial list included).
    pub fn events(&self) -> u64 {
        self.events.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for MetadataWatch {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
