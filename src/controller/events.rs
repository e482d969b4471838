//! Events (events.k8s.io/v1) about a connection.
//!
//! An Event that repeats the previous one exactly (type, reason and note) within a few minutes is
//! folded into a series, so a failure that persists does not flood the namespace. Any other Event
//! is published as it is: an Event whose note carries per-occurrence facts (a new expiry time) is
//! never folded into a series that would keep showing the first occurrence's note, which is what
//! kube-runtime's `Recorder` does (it keys series by reason alone).

use std::hash::{Hash, Hasher};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::Context;
use super::state::LastEvent;
use crate::api::PingOneConnection;

/// The reporting controller of every Event.
pub const REPORTING_CONTROLLER: &str = "pingone-operator";
/// How long an identical repeat is folded into the previous Event's series.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something went as it should.
    Normal,
    /// Something needs attention.
    Warning,
}

fn key(type_: EventType, reason: &str, note: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (type_, reason, note).hash(&mut h);
    h.finish()
}

/// The name of the Event about connection `connection` first published at `first`.
fn event_name(connection: &str, first: Timestamp) -> String {
    format!("{connection}.{:x}", first.as_nanosecond())
}

/// Publishes an Event about `conn`. Best effort: a failure is logged, never returned (status
/// carries the same facts).
pub async fn publish(
    ctx: &Context,
    conn: &PingOneConnection,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let (Some(namespace), Some(uid)) = (conn.namespace(), conn.uid()) else {
        return;
    };
    let now = Timestamp::now();
    let key = key(type_, reason, note);
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    let repeat = ctx
        .states
        .with(&uid, |s| s.last_event.clone())
        .flatten()
        .filter(|last| last.key == key && last.at + SERIES_WINDOW > now);
    let result = match repeat {
        Some(last) => {
            let count = last.count + 1;
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            let name = event_name(&conn.name_any(), last.first);
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| LastEvent {
                    count,
                    at: now,
                    ..last
                })
        }
        None => {
            let name = event_name(&conn.name_any(), now);
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                action: Some("Reconcile".into()),
                reason: Some(reason.into()),
                note: Some(note.into()),
                event_time: Some(MicroTime(now)),
                regarding: Some(conn.object_ref(&())),
                reporting_controller: Some(REPORTING_CONTROLLER.into()),
                reporting_instance: Some(ctx.reporting_instance.clone()),
                type_: Some(
                    match type_ {
                        EventType::Normal => "Normal",
                        EventType::Warning => "Warning",
                    }
                    .into(),
                ),
                ..Default::default()
            };
            api.create(&PostParams::default(), &event)
                .await
                .map(|_| LastEvent {
                    key,
                    first: now,
                    count: 1,
                    at: now,
                })
        }
    };
    match result {
        Ok(last) => {
            ctx.states.with(&uid, |s| s.last_event = Some(last));
        }
        // Events are best effort; the status carries the same information.
        Err(e) => warn!(error = %e, reason, "publishing an Event failed"),
    }
}
