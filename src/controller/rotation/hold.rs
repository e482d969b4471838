//! Safe keeping of a secret PingOne returned, until it is in the credentials Secret.
//!
//! The credentials Secret is the user's: a person's edit, an admission policy or a conflict can
//! keep the operator from writing the returned secret into it, and then only the operator's
//! memory would hold the one secret PingOne accepts once the previous one's grace ends. So the
//! moment PingOne answers, the returned secret (and the one it replaces) goes into a *hold*: a
//! Secret of the operator's own beside the credentials Secret, named after it, labelled
//! `app.kubernetes.io/managed-by=pingone-operator` (which the guard rails let the operator write)
//! and owned by the connection that rotated (garbage collected with it). A restarted operator,
//! or a new leader, finds it there. Once the credentials Secret holds the returned secret, or
//! another secret a token proved, the hold is emptied (the operator has no `delete` on Secrets).
//!
//! Pure: building and reading the hold; the reconciler does the I/O.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::Digest;

use super::intent::Pending;
use crate::controller::token_secret::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::pingone::{ExposeSecret, SecretString};

/// Label of a hold, with [`HOLD_LABEL_VALUE`].
pub const HOLD_LABEL: &str = "pingone.tokenops.dev/holds";
/// Value of [`HOLD_LABEL`].
pub const HOLD_LABEL_VALUE: &str = "rotated-client-secret";
/// Annotation: the credentials Secret the hold is for.
pub const FOR_SECRET: &str = "pingone.tokenops.dev/credentials-secret";
/// Annotation: when PingOne rotated the secret held.
pub const ROTATED_AT: &str = "pingone.tokenops.dev/rotated-at";
/// Annotation: until when PingOne accepts the secret it replaced.
pub const PREVIOUS_EXPIRES_AT: &str = "pingone.tokenops.dev/previous-client-secret-expires-at";
/// Data key of the secret PingOne returned.
pub const NEW_KEY: &str = "clientSecret";
/// Data key of the secret it replaced.
pub const REPLACED_KEY: &str = "replacedClientSecret";

const PREFIX: &str = "pingone-rotation-";

/// The hold's name for the credentials Secret `credentials`: readable when it fits in a Secret
/// name, else a digest of it.
pub fn name(credentials: &str) -> String {
    if PREFIX.len() + credentials.len() <= 253 {
        return format!("{PREFIX}{credentials}");
    }
    let digest = sha2::Sha256::digest(credentials.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

fn fmt_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The hold of `pending` for the credentials Secret `credentials` in `namespace`, owned by
/// `owner` (not as its controller: a connection's controlled Secret is its token Secret).
pub fn build(
    namespace: &str,
    credentials: &str,
    mut owner: OwnerReference,
    pending: &Pending,
) -> Secret {
    owner.controller = None;
    owner.block_owner_deletion = None;
    let mut annotations = BTreeMap::from([
        (FOR_SECRET.to_string(), credentials.to_string()),
        (ROTATED_AT.to_string(), fmt_time(pending.rotated_at)),
    ]);
    if let Some(until) = pending.previous_expires_at {
        annotations.insert(PREVIOUS_EXPIRES_AT.to_string(), fmt_time(until));
    }
    let data = BTreeMap::from([
        (
            NEW_KEY.to_string(),
            ByteString(pending.secret.expose_secret().as_bytes().to_vec()),
        ),
        (
            REPLACED_KEY.to_string(),
            ByteString(pending.replaces.expose_secret().as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name(credentials)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (HOLD_LABEL.to_string(), HOLD_LABEL_VALUE.to_string()),
            ])),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether `secret` is a hold (the operator's own, not a stranger's Secret of that name).
pub fn is_hold(secret: &Secret) -> bool {
    secret.metadata.labels.as_ref().is_some_and(|l| {
        l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            && l.get(HOLD_LABEL).map(String::as_str) == Some(HOLD_LABEL_VALUE)
    })
}

/// The secret a hold keeps for the credentials Secret `credentials`: `None` when it is empty,
/// not the operator's, for another Secret or unreadable.
pub fn read(secret: &Secret, credentials: &str) -> Option<Pending> {
    if !is_hold(secret) {
        return None;
    }
    let annotations = secret.metadata.annotations.as_ref()?;
    if annotations.get(FOR_SECRET).map(String::as_str) != Some(credentials) {
        return None;
    }
    let rotated_at = annotations.get(ROTATED_AT)?.parse().ok()?;
    let previous_expires_at = annotations
        .get(PREVIOUS_EXPIRES_AT)
        .and_then(|t| t.parse().ok());
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
    };
    Some(Pending {
        secret: text(NEW_KEY)?,
        replaces: text(REPLACED_KEY)?,
        rotated_at,
        previous_expires_at,
    })
}

/// Whether a held secret is still news to the credentials Secret: rotated after the last
/// rotation recorded there. An older one was written, or given up for a proven secret, and its
/// hold was not emptied.
pub fn is_newer(pending: &Pending, recorded: Option<Timestamp>) -> bool {
    recorded.is_none_or(|at| pending.rotated_at > at)
}

/// The merge patch that empties a hold: no secret, no rotation time.
pub fn empty_patch() -> serde_json::Value {
    serde_json::json!({
        "metadata": { "annotations": { ROTATED_AT: null, PREVIOUS_EXPIRES_AT: null } },
        "data": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            secret: "new-secret".into(),
            replaces: "old-secret".into(),
            rotated_at: "2026-12-01T00:00:00Z".parse().unwrap(),
            previous_expires_at: Some("2026-12-01T01:00:00Z".parse().unwrap()),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "pingone.tokenops.dev/v1alpha1".into(),
            kind: "PingOneConnection".into(),
            name: "conn".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn a_hold_round_trips_and_is_the_operators_own() {
        let s = build("ns", "creds", owner(), &pending());
        assert_eq!(s.metadata.name.as_deref(), Some("pingone-rotation-creds"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "pingone-operator");
        let refs = s.metadata.owner_references.as_ref().unwrap();
        assert_eq!(refs[0].uid, "uid-1");
        assert_eq!(
            refs[0].controller, None,
            "not the connection's token Secret"
        );
        let back = read(&s, "creds").expect("read back");
        assert_eq!(back.secret.expose_secret(), "new-secret");
        assert_eq!(back.replaces.expose_secret(), "old-secret");
        assert_eq!(back.rotated_at, pending().rotated_at);
        assert_eq!(back.previous_expires_at, pending().previous_expires_at);
        // Another credentials Secret's hold, a stranger's Secret, an emptied hold: nothing.
        assert!(read(&s, "other").is_none());
        let mut foreign = s.clone();
        foreign.metadata.labels = None;
        assert!(read(&foreign, "creds").is_none());
        let mut emptied = s.clone();
        emptied.data = None;
        assert!(read(&emptied, "creds").is_none());
    }

    #[test]
    fn long_names_get_a_digest_and_stay_valid() {
        let long = "c".repeat(253);
        let n = name(&long);
        assert!(n.len() <= 253, "{}", n.len());
        assert_ne!(n, name(&"d".repeat(253)));
        assert_eq!(name("creds"), "pingone-rotation-creds");
    }

    #[test]
    fn only_a_secret_newer_than_the_recorded_rotation_is_news() {
        let p = pending();
        assert!(is_newer(&p, None));
        assert!(is_newer(&p, Some("2026-11-01T00:00:00Z".parse().unwrap())));
        assert!(!is_newer(&p, Some(p.rotated_at)));
        assert!(!is_newer(&p, Some("2026-12-02T00:00:00Z".parse().unwrap())));
    }
}
