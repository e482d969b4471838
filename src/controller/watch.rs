//! Wiring: the watches that trigger reconciles, and the controller loop.
//!
//! - Connections: a full watch (they are small), through a reflector whose store the Secret
//!   mapping and the controller share; only spec changes (generation) and renew requests (an
//!   annotation) trigger, so the operator's own status writes never start a reconcile.
//! - Secrets: one metadata-only watch (no data, nothing cached). A Secret event triggers the
//!   connections that reference it as credentials or as token Secret, found through the
//!   connection states the reconciler keeps, or through the connection label
//!   on the operator's own Secrets.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, error, info, warn};

use super::secret_meta::SecretMeta;
use super::token_secret::{self, CONNECTION_LABEL};
use super::{Context, Error, reconcile};
use crate::api::{PingOneConnection, RENEW_REQUESTED_AT};

/// What the controller watches and how hard it works.
#[derive(Clone, Debug, Default)]
pub struct ControllerConfig {
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once (0: unlimited).
    pub concurrency: u16,
    /// Watch only credentials Secrets with these labels (and the operator's own token Secrets)
    /// instead of every Secret's metadata.
    pub credentials_secret_selector: Option<String>,
    /// How to reach the API server: given, the Secret watches run on a thread and a client of
    /// their own (see `secret_triggers`).
    pub kube_config: Option<kube::Config>,
}

/// The Secret watches: every Secret's metadata, or, with a credentials selector, the
/// operator's token Secrets and the selected credentials Secrets.
fn secret_watch_configs(credentials_selector: Option<&str>) -> Vec<watcher::Config> {
    let config = watcher::Config::default().any_semantic();
    match credentials_selector {
        None => vec![config],
        Some(selector) => vec![
            config.clone().labels(token_secret::MANAGED_SELECTOR),
            config.labels(selector),
        ],
    }
}

/// The scopes of the watches, in the order `apis` makes them: each namespace, or `None` for
/// all.
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    }
}

fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// Runs the controller until `shutdown` completes, then lets running reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store::<PingOneConnection>();
    // Reconciles look up the newest copy of their connection (see `Reconcile::known_check`).
    *ctx.connections.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader.clone());

    let forget_ctx = ctx.clone();
    let trigger_ctx = ctx.clone();
    let scopes = scopes(&config.namespaces);
    // The store starts out ready and empty: each watch fills it with plain changes (see
    // `relists_as_changes`), so its own re-list handling, which would replace the whole store,
    // never runs.
    let store_ready = stream::iter([Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)]);
    let connections = store_ready
        .chain(stream::select_all(
            apis::<PingOneConnection>(&client, &config.namespaces)
                .into_iter()
                .zip(scopes)
                .map(|(api, scope)| {
                    let name = watch_name("connections", scope.as_deref());
                    relists_as_changes(
                        reported(
                            watcher(api, watcher::Config::default()),
                            name,
                            "connections",
                            ctx.clone(),
                        )
                        .default_backoff(),
                        scope,
                        reader.clone(),
                        ctx.clone(),
                    )
                    .boxed()
                }),
        ))
        // The store keeps every connection: without managedFields and kubectl's last-applied copy
        // they take a fraction of the memory.
        .modify(|conn: &mut PingOneConnection| {
            conn.managed_fields_mut().clear();
            conn.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Delete(conn)) => {
                if let Some(uid) = conn.uid() {
                    forget_ctx.forget(&uid);
                }
            }
            Ok(watcher::Event::Apply(conn) | watcher::Event::InitApply(conn)) => {
                if let Some(uid) = conn.metadata.uid.as_deref() {
                    forget_ctx.states.status_seen(uid, conn.status.as_ref());
                }
            }
            _ => {}
        })
        .filter_map(move |event| {
            // What starts a reconcile: a connection's first sight, a spec change and a renew
            // request (see `spec_or_renew_request`), remembered in the connection's state
            // rather than in a cache of its own (a predicate filter keeps three strings of
            // every object). A deleted connection needs none.
            let out = match event {
                Ok(watcher::Event::Apply(conn) | watcher::Event::InitApply(conn)) => {
                    let changed = match (conn.metadata.uid.as_deref(), spec_or_renew_request(&conn))
                    {
                        (Some(uid), Some(trigger)) => trigger_ctx.states.trigger(uid, trigger),
                        _ => true,
                    };
                    changed.then_some(Ok(conn))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        });

    let secrets = secret_triggers(
        &client,
        config.kube_config.clone(),
        &config.namespaces,
        config.credentials_secret_selector.as_deref(),
        ctx.clone(),
        reader.clone(),
    );

    // The debounce folds the events of one change (a Secret written by kubectl apply, then its
    // annotations) into one reconcile; 20 ms is enough for that and keeps apply → Ready short.
    let controller_config = kube::runtime::controller::Config::default()
        .concurrency(config.concurrency)
        .debounce(Duration::from_millis(20));

    // Connections whose environment's JWKS is reachable again (see jwks_wait.rs).
    let (jwks_tx, mut jwks_rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.jwks_waits.set_trigger(jwks_tx);
    let jwks_ready = stream::poll_fn(move |cx| jwks_rx.poll_recv(cx));

    info!(namespaces = ?config.namespaces, "controller starting");
    Controller::for_stream(connections, reader)
        .with_config(controller_config)
        .reconcile_on(stream::select(secrets, jwks_ready))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(namespace = obj.namespace.as_deref(), name = %obj.name, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, obj)) => {
                    warn!(namespace = obj.namespace.as_deref(), name = %obj.name, error = %e, "reconcile failed")
                }
                Err(e) => debug!(error = %e, "controller event"),
            }
        })
        .await;
    info!("controller stopped");
}

fn watch_name(kind: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{ns}"),
        None => kind.to_string(),
    }
}

/// `watch`, reporting to health and metrics: synced at the end of each list, failing from an
/// error until the next event.
fn reported<K: Send + 'static>(
    watch: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    name: String,
    kind: &'static str,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    ctx.health.register_watch(&name);
    watch.inspect(move |event| match event {
        Ok(watcher::Event::InitDone) => ctx.health.watch_synced(&name),
        // Init opens every list attempt, also the ones that then fail: no sign of health.
        Ok(watcher::Event::Init) => {}
        Ok(_) => ctx.health.watch_ok(&name),
        Err(e) => {
            debug!(watch = %name, error = %e, "watch failed");
            ctx.metrics.watch_error(kind);
            ctx.health.watch_failed(&name);
        }
    })
}

/// What starts a reconcile of a connection: a new generation (spec change) or a new value of
/// the renew-requested-at annotation. Status writes, the operator's own, change neither.
fn spec_or_renew_request(conn: &PingOneConnection) -> Option<u64> {
    let generation = predicates::generation(conn)?;
    let request = conn.annotations().get(RENEW_REQUESTED_AT);
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(generation, request), &mut hasher);
    Some(std::hash::Hasher::finish(&hasher))
}

/// Turns the re-lists of one watch (at start, and after a gap such as 410 Gone) into plain
/// changes: the listed objects as applies, and a delete for each object of the watch's scope
/// (`namespace`, or all) that the store holds but the list no longer contains, e.g. one deleted
/// while the watch was down. At the end of each list, the operator's state of every connection
/// of the scope that was not listed is forgotten, metrics series included.
///
/// The reflector's own re-list handling replaces the whole store, which is wrong when several
/// namespace watches share one store (each list would wipe the others' objects); as plain changes
/// every watch touches only its own objects.
fn relists_as_changes(
    watch: impl Stream<Item = Result<watcher::Event<PingOneConnection>, watcher::Error>>
    + Send
    + 'static,
    namespace: Option<String>,
    store: Store<PingOneConnection>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<watcher::Event<PingOneConnection>, watcher::Error>> + Send + 'static
{
    let mut listed: Option<(HashSet<ObjectRef<PingOneConnection>>, HashSet<String>)> = None;
    watch.flat_map(move |event| {
        let in_scope = |ns: &str| namespace.as_deref().is_none_or(|n| n == ns);
        let out = match event {
            Ok(watcher::Event::Init) => {
                listed = Some(Default::default());
                Vec::new()
            }
            Ok(watcher::Event::InitApply(conn)) => {
                if let Some((refs, uids)) = listed.as_mut() {
                    refs.insert(ObjectRef::from_obj(&conn));
                    uids.extend(conn.uid());
                }
                vec![Ok(watcher::Event::Apply(conn))]
            }
            Ok(watcher::Event::InitDone) => {
                let (refs, uids) = listed.take().unwrap_or_default();
                let gone: Vec<_> = store
                    .state()
                    .into_iter()
                    .filter(|c| in_scope(&c.namespace().unwrap_or_default()))
                    .filter(|c| !refs.contains(&ObjectRef::from_obj(c.as_ref())))
                    .map(|c| Ok(watcher::Event::Delete(c.as_ref().clone())))
                    .collect();
                ctx.forget_all_but(|uid, ns, _| !in_scope(ns) || uids.contains(uid));
                if !gone.is_empty() {
                    info!(
                        count = gone.len(),
                        "connections deleted while the watch was down are forgotten"
                    );
                }
                gone
            }
            other => vec![other],
        };
        stream::iter(out)
    })
}

/// Connections to reconcile because a Secret they depend on changed.
///
/// The Secret events are sorted away from the controller: in a cluster where Secrets churn,
/// nearly every event is of a Secret no connection references, and it then costs its decoding
/// and one lookup without waking the controller (whose every wake-up polls its scheduler and its
/// running reconciles). With `kube_config`, the watches run on a thread of their own, with a
/// client (and connection) of their own, so that the busiest input of a large cluster neither
/// competes with the reconciles for the runtime's workers nor wakes them; without it (in-process
/// tests), on a task of the controller's runtime. Only the connections to reconcile cross over.
fn secret_triggers(
    client: &Client,
    kube_config: Option<kube::Config>,
    namespaces: &[String],
    credentials_selector: Option<&str>,
    ctx: Arc<Context>,
    store: Store<PingOneConnection>,
) -> impl Stream<Item = ObjectRef<PingOneConnection>> + Send + 'static {
    // Known to health before the first list, wherever the watches run: ready means synced.
    for name in secret_watch_names(namespaces, credentials_selector) {
        ctx.health.register_watch(&name);
    }
    // Known to the reconciles before they start: they wait for the first list of every Secret
    // (see presence.rs).
    if credentials_selector.is_none() {
        for scope in scopes(namespaces) {
            ctx.secret_names.watching(scope.as_deref());
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(TRIGGER_BUFFER);
    let namespaces = namespaces.to_vec();
    let selector = credentials_selector.map(str::to_string);
    let sort = move |client: Client| async move {
        let mut events = Box::pin(secret_events(
            &client,
            &namespaces,
            selector.as_deref(),
            ctx.clone(),
        ));
        loop {
            let event = tokio::select! {
                // The controller has stopped: nothing is left to trigger.
                () = tx.closed() => return,
                event = events.next() => event,
            };
            let (secret, deleted) = match event {
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => (s, false),
                Some(Ok(watcher::Event::Delete(s))) => (s, true),
                Some(_) => continue,
                None => return,
            };
            for conn in connections_for(&ctx, &store, &secret, deleted) {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        }
    };
    match kube_config {
        Some(config) => {
            let spawned = std::thread::Builder::new()
                .name("secret-watch".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            error!(error = %e, "the Secret watch's runtime could not start");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        // Made on this thread's runtime, so that its connection lives here.
                        match Client::try_from(config) {
                            Ok(client) => sort(client).await,
                            Err(e) => {
                                error!(error = %e, "the Secret watch's client could not be made")
                            }
                        }
                    });
                });
            if let Err(e) = spawned {
                error!(error = %e, "the Secret watch's thread could not start");
            }
        }
        None => {
            tokio::spawn(sort(client.clone()));
        }
    }
    // Each reference is copied on the controller's side, so that what the controller keeps
    // (a scheduled reconcile) is not allocated by the watch's thread, whose arena then holds only
    // what it frees soon.
    stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|conn: ObjectRef<PingOneConnection>| {
        let copy = ObjectRef::new(&conn.name);
        match &conn.namespace {
            Some(ns) => copy.within(ns),
            None => copy,
        }
    })
}

/// Connections waiting between the Secret watch and the controller; a full buffer holds the
/// watch back (the API server then buffers), it never drops a trigger.
const TRIGGER_BUFFER: usize = 1024;

/// The events of the Secret watches (metadata only: Secret data never reaches the operator
/// through a watch), reported to health and metrics.
fn secret_events(
    client: &Client,
    namespaces: &[String],
    credentials_selector: Option<&str>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static {
    let configs = secret_watch_configs(credentials_selector);
    let mut names = secret_watch_names(namespaces, credentials_selector).into_iter();
    let scopes = scopes(namespaces);
    // Only a watch of every Secret in its scope knows which do not exist.
    let sees_all = credentials_selector.is_none();
    let mut watches = Vec::new();
    for (api, scope) in apis::<SecretMeta>(client, namespaces)
        .into_iter()
        .zip(scopes)
    {
        for config in &configs {
            let name = names.next().unwrap_or_default();
            let ctx_seen = ctx.clone();
            let scope = scope.clone();
            watches.push(
                reported(
                    watcher(api.clone(), config.clone()),
                    name,
                    "secrets",
                    ctx.clone(),
                )
                .inspect(move |event| {
                    if sees_all {
                        ctx_seen.secret_names.saw(scope.as_deref(), event);
                    }
                })
                .boxed(),
            );
        }
    }
    stream::select_all(watches).default_backoff()
}

/// The health names of the Secret watches, in the order `secret_events` makes them: per scope,
/// one watch, or with a credentials selector two, named apart.
fn secret_watch_names(namespaces: &[String], credentials_selector: Option<&str>) -> Vec<String> {
    let kinds: &[&str] = if credentials_selector.is_none() {
        &["secrets"]
    } else {
        &["secrets-token", "secrets-credentials"]
    };
    scopes(namespaces)
        .into_iter()
        .flat_map(|scope| {
            kinds
                .iter()
                .map(move |kind| watch_name(kind, scope.as_deref()))
        })
        .collect()
}

fn connections_for(
    ctx: &Context,
    store: &Store<PingOneConnection>,
    secret: &SecretMeta,
    deleted: bool,
) -> Vec<ObjectRef<PingOneConnection>> {
    // Borrowed, not copied: this runs for every Secret event of the cluster.
    let meta = &secret.metadata;
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let resource_version = meta.resource_version.as_deref();
    // The echo of the operator's own write of a token Secret needs no reconcile (a deletion
    // always does).
    if !deleted
        && ctx.states.is_echo(
            namespace,
            name,
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(token_secret::TOKEN_DIGEST))
                .map(String::as_str),
            resource_version,
        )
    {
        return Vec::new();
    }
    let version = resource_version.filter(|_| !deleted);
    let mut names = ctx.states.connections_for(namespace, name, version);
    if let Some(owner) = meta.labels.as_ref().and_then(|l| l.get(CONNECTION_LABEL)) {
        names.push(owner.clone());
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(namespace))
        // A connection deleted since it was indexed has nothing to reconcile.
        .filter(|r| store.get(r).is_some() || store.is_empty())
        .collect()
}

/// Only for errors the reconcile cannot attribute (an object without namespace or UID, which
/// the API server never sends); Kubernetes API failures are handled, with their own backoff, in
/// the reconcile.
fn error_policy(conn: Arc<PingOneConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(
        &conn.namespace().unwrap_or_default(),
        &conn.name_any(),
        error.reason(),
    );
    Action::requeue(ctx.timing.stalled_recheck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_selector_narrows_the_secret_watch_to_labelled_secrets() {
        let all = secret_watch_configs(None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].label_selector, None);
        let narrow = secret_watch_configs(Some("pingone.tokenops.dev/credentials=true"));
        let selectors: Vec<_> = narrow.iter().map(|c| c.label_selector.as_deref()).collect();
        assert_eq!(
            selectors,
            [
                Some(token_secret::MANAGED_SELECTOR),
                Some("pingone.tokenops.dev/credentials=true")
            ]
        );
    }
}
