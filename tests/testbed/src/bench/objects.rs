//! What the bench puts in the cluster: namespaces, credentials Secrets with connections, and
//! unrelated Secrets; and the API server's request counters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::prom;
use super::{AUTH_DOMAIN, ENV_ID};

/// Field manager of the bench's own writes.
pub const BENCH_MANAGER: &str = "pingone-bench";
/// Label on every credentials Secret the bench creates.
pub const CREDENTIALS_LABEL: &str = "bench.pingone.tokenops.dev/credentials";

/// The `PingOneConnection` resource, without the operator's Rust types.
pub fn connection_resource() -> ApiResource {
    ApiResource {
        group: "pingone.tokenops.dev".into(),
        version: "v1alpha1".into(),
        api_version: "pingone.tokenops.dev/v1alpha1".into(),
        kind: "PingOneConnection".into(),
        plural: "pingoneconnections".into(),
    }
}

/// Connections of a namespace.
pub fn connections(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &connection_resource())
}

/// One connection the bench created, with what the floor needs to serve it.
#[derive(Clone, Debug)]
pub struct Created {
    /// Position in its batch.
    pub index: usize,
    pub namespace: String,
    /// The connection's name; its credentials Secret is `NAME-creds`, its token Secret
    /// `NAME-token`.
    pub name: String,
    pub uid: String,
    pub client_id: String,
    pub client_secret: String,
    /// When the create of the connection returned.
    pub created_at: Instant,
}

impl Created {
    pub fn credentials_secret(&self) -> String {
        format!("{}-creds", self.name)
    }

    pub fn token_secret(&self) -> String {
        format!("{}-token", self.name)
    }
}

/// What to create: the connection's name, client id and secret.
#[derive(Clone, Debug)]
pub struct Spec {
    pub index: usize,
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
}

/// `count` connection specs named `PREFIX-00000`…, client ids `NS-PREFIX-00000`….
pub fn specs(ns: &str, prefix: &str, start: usize, count: usize) -> Vec<Spec> {
    (start..start + count)
        .map(|i| {
            let name = format!("{prefix}-{i:05}");
            Spec {
                index: i,
                client_id: format!("{ns}-{name}"),
                client_secret: random_secret(),
                name,
            }
        })
        .collect()
}

/// A high-entropy client secret of PingOne's shape.
pub fn random_secret() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let mut rng = rand::thread_rng();
    (0..64)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// The credentials Secret of a connection.
pub fn credentials_secret(name: &str, client_id: &str, client_secret: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(CREDENTIALS_LABEL.into(), "true".into())])),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("clientId".into(), client_id.into()),
            ("clientSecret".into(), client_secret.into()),
        ])),
        ..Default::default()
    }
}

/// A connection referring to Secret `NAME-creds`, its token going to `NAME-token`.
pub fn connection(name: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "pingone.tokenops.dev/v1alpha1",
        "kind": "PingOneConnection",
        "metadata": {"name": name},
        "spec": {
            "authDomain": AUTH_DOMAIN,
            "environmentId": ENV_ID,
            "credentialsSecretRef": {"name": format!("{name}-creds")},
        },
    }))?)
}

/// Creates the credentials Secret, then the connection.
pub async fn create_one(client: &Client, ns: &str, spec: &Spec) -> Result<Created> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &credentials_secret(
                &format!("{}-creds", spec.name),
                &spec.client_id,
                &spec.client_secret,
            ),
        )
        .await
        .with_context(|| format!("creating Secret {ns}/{}-creds", spec.name))?;
    let created = connections(client, ns)
        .create(&PostParams::default(), &connection(&spec.name)?)
        .await
        .with_context(|| format!("creating connection {ns}/{}", spec.name))?;
    Ok(Created {
        index: spec.index,
        namespace: ns.to_string(),
        name: spec.name.clone(),
        uid: created
            .uid()
            .ok_or_else(|| anyhow!("created without uid"))?,
        client_id: spec.client_id.clone(),
        client_secret: spec.client_secret.clone(),
        created_at: Instant::now(),
    })
}

/// Creates every spec's Secret and connection, `concurrency` at a time, handing each created
/// connection to `notify` as soon as it exists.
pub async fn burst(
    client: &Client,
    ns: &str,
    specs: &[Spec],
    concurrency: usize,
    notify: Option<mpsc::UnboundedSender<Created>>,
) -> Result<Vec<Created>> {
    let mut created: Vec<Created> = stream::iter(specs)
        .map(|spec| {
            let notify = notify.clone();
            async move {
                let c = create_one(client, ns, spec).await?;
                if let Some(tx) = &notify {
                    let _ = tx.send(c.clone());
                }
                Ok::<_, anyhow::Error>(c)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    created.sort_by_key(|c| c.index);
    Ok(created)
}

/// Creates a namespace.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Deletes a namespace and waits until it is gone (the namespace controller deletes what is in
/// it). Connections and Secrets are deleted by collection first, which is faster.
pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let dp = DeleteParams::background();
    let lp = Default::default();
    // The Secrets go first: a token Secret deleted after its connection is left to the garbage
    // collector, which then checks each of them, thousands at a few dozen per second, long
    // after the namespace is gone, into the next timed window.
    let _ = Api::<Secret>::namespaced(client.clone(), name)
        .delete_collection(&dp, &lp)
        .await;
    let _ = connections(client, name).delete_collection(&dp, &lp).await;
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + timeout;
    while api.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {name} not deleted within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// `count` Opaque Secrets of `size` bytes each, unrelated to any connection.
pub async fn unrelated_secrets(
    client: &Client,
    ns: &str,
    count: usize,
    size: usize,
    concurrency: usize,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let payload = random_bytes(size);
    stream::iter(0..count)
        .map(|i| {
            let secrets = secrets.clone();
            let payload = payload.clone();
            async move {
                let s = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("unrelated-{i:05}")),
                        labels: Some(BTreeMap::from([("app".into(), "unrelated".into())])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "payload".into(),
                        k8s_openapi::ByteString(payload),
                    )])),
                    ..Default::default()
                };
                secrets
                    .patch(
                        &format!("unrelated-{i:05}"),
                        &PatchParams::apply(BENCH_MANAGER).force(),
                        &Patch::Apply(&s),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await?;
    Ok(())
}

fn random_bytes(size: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// The API server's request counters, by verb, resource and subresource.
#[derive(Clone, Debug, Default)]
pub struct ApiCounters(pub BTreeMap<(String, String, String), f64>);

impl ApiCounters {
    /// Reads `apiserver_request_total` from the API server's `/metrics`.
    pub async fn read(client: &Client) -> Result<ApiCounters> {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(req).await?;
        let mut map = BTreeMap::new();
        for s in prom::parse(&text) {
            if s.name != "apiserver_request_total" {
                continue;
            }
            let key = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            *map.entry((key("verb"), key("resource"), key("subresource")))
                .or_insert(0.0) += s.value;
        }
        Ok(ApiCounters(map))
    }

    /// `self - earlier`, keeping non-zero entries.
    pub fn since(&self, earlier: &ApiCounters) -> ApiCounters {
        ApiCounters(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v != 0.0)
                .collect(),
        )
    }

    /// Requests with `verb` on `resource` (and `subresource`, "" for none). The API server
    /// counts server-side apply as verb `APPLY`; `PATCH` here includes it.
    pub fn get(&self, verb: &str, resource: &str, subresource: &str) -> f64 {
        let one = |v: &str| {
            self.0
                .get(&(v.into(), resource.into(), subresource.into()))
                .copied()
                .unwrap_or(0.0)
        };
        if verb == "PATCH" {
            one("PATCH") + one("APPLY")
        } else {
            one(verb)
        }
    }

    /// Writes (POST, PUT, PATCH, APPLY, DELETE) on `resource`, any subresource.
    pub fn writes(&self, resource: &str) -> f64 {
        self.0
            .iter()
            .filter(|((verb, r, _), _)| {
                r == resource
                    && matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE")
            })
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0
    }

    /// A compact `VERB resource[/sub]=n` list of the entries for the bench's resources.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .filter(|((_, r, _), _)| {
                matches!(r.as_str(), "secrets" | "pingoneconnections" | "events")
            })
            .map(|((verb, r, sub), v)| {
                let sub = if sub.is_empty() {
                    String::new()
                } else {
                    format!("/{sub}")
                };
                format!("{verb} {r}{sub}={v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
