//! The derived token Secret: what it contains, and what an existing one tells about the token in
//! it. Pure functions; the reconciler does the reading and writing.

use std::collections::BTreeMap;

use hmac::Mac;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::digest_key::DigestKey;
use super::layout::{Layout, Values};
use crate::api::PingOneConnection;
#[cfg(test)]
use crate::api::TokenEndpointAuthMethod;
use crate::pingone::{ExposeSecret, SecretString};

/// Label that marks every Secret the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "pingone-operator";
/// Label naming the connection a Secret belongs to.
pub const CONNECTION_LABEL: &str = "pingone.tokenops.dev/connection";
/// Label selector for the operator's Secrets.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pingone-operator";

/// When the token was issued (RFC 3339).
pub const ISSUED_AT: &str = "pingone.tokenops.dev/issued-at";
/// When the token expires (RFC 3339).
pub const EXPIRES_AT: &str = "pingone.tokenops.dev/expires-at";
/// When the operator renews the token (RFC 3339), for people; derived from the others.
pub const RENEW_AT: &str = "pingone.tokenops.dev/renew-at";
/// The random share of the lifetime by which renewal is brought forward, chosen once per token.
pub const RENEWAL_JITTER: &str = "pingone.tokenops.dev/renewal-jitter";
/// Digest of the inputs the token was issued for (see [`inputs_digest`]).
pub const INPUTS_DIGEST: &str = "pingone.tokenops.dev/inputs-digest";
/// Digest of the access token, to notice a token edited in place.
pub const TOKEN_DIGEST: &str = "pingone.tokenops.dev/token-digest";
/// The installation that wrote the token (see [`DigestKey::installation`]): another install of
/// the operator that finds it does not take the token over while the writer keeps it fresh.
pub const INSTALLATION: &str = "pingone.tokenops.dev/installation";

/// The data keys of the token's fields, as the Secret was written (see [`Layout::annotation`]);
/// absent on Secrets of the default layout written before layouts existed.
pub const DATA_KEYS: &str = "pingone.tokenops.dev/data-keys";

/// Data keys of the derived Secret.
pub const KEY_ACCESS_TOKEN: &str = "access_token";
/// Token type key.
pub const KEY_TOKEN_TYPE: &str = "token_type";
/// Expiry key (RFC 3339 UTC).
pub const KEY_EXPIRES_AT: &str = "expires_at";
/// Granted scopes key, present only when scopes were granted.
pub const KEY_SCOPE: &str = "scope";

/// What the operator knows of a token it issued, from the Secret's annotations and data.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuedToken {
    /// When PingOne issued it (as the operator measured).
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Fraction of the lifetime (0 to 0.5) by which renewal is brought forward.
    pub renewal_jitter: f64,
    /// [`inputs_digest`] of the inputs it was issued for.
    pub inputs_digest: String,
    /// Token type as PingOne returned it.
    pub token_type: String,
    /// Scopes PingOne granted.
    pub scopes: Vec<String>,
}

/// What the target Secret name currently holds. `Debug` never shows the access token.
// One value per reconcile, never stored: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum TargetState {
    /// No Secret of that name.
    Absent,
    /// A Secret that this connection does not own: the operator must leave it alone.
    Foreign {
        /// Who owns it, for the message: `Kind/name` of its owner, or what created it.
        owner: String,
    },
    /// A Secret owned by this connection.
    Owned {
        /// The token in it, or None when its data or annotations are missing or were edited.
        token: Option<IssuedToken>,
        /// The access token, when intact, so that a metadata-only repair keeps it.
        access_token: Option<SecretString>,
        /// Labels and annotations the operator sets, to notice drift.
        labels: BTreeMap<String, String>,
        /// Annotations currently on the Secret.
        annotations: BTreeMap<String, String>,
        /// resourceVersion, for optimistic concurrency on the next write.
        resource_version: Option<String>,
        /// The data has exactly the layout's keys and its extra entries render as they should.
        shape_ok: bool,
        /// Written by another installation of the operator, not this one.
        other_installation: Option<OtherInstallation>,
    },
}

/// A token Secret another installation of the operator wrote, as its annotations say
/// (unverified: this installation does not have that one's key).
#[derive(Clone, Debug, PartialEq)]
pub struct OtherInstallation {
    /// Its name.
    pub id: String,
    /// When it renews the token.
    pub renew_at: Option<Timestamp>,
    /// When the token expires.
    pub expires_at: Option<Timestamp>,
}

/// A stable digest of every input that determines the token. It lets a restarted operator tell
/// whether the token in a Secret still matches the spec and credentials without storing any of
/// them.
///
/// HMAC-SHA256 over length-prefixed fields, keyed with the operator's [`DigestKey`]: someone who
/// can read the token Secret but not the key cannot test guesses of the client secret against
/// it. The `v2:` prefix keeps it from ever equalling a digest of the older unkeyed form
/// (`sha256:`), so a Secret written by an older version gets one new token.
pub fn inputs_digest(
    key: &DigestKey,
    auth_domain: &str,
    environment_id: &str,
    client_id: &str,
    client_secret: &SecretString,
    scopes: &[String],
    method: &str,
) -> String {
    let mut scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut mac = key.mac();
    mac.update(b"pingone-operator/inputs/v2");
    let mut field = |value: &str| {
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value.as_bytes());
    };
    field(&auth_domain.to_ascii_lowercase());
    field(environment_id);
    field(client_id);
    field(client_secret.expose_secret());
    field(method);
    field(&scopes.join(" "));
    format!("v2:{}", hex(&mac.finalize().into_bytes()))
}

/// A keyed digest of the access token and the times the operator schedules by (issue, expiry,
/// renewal jitter, as stored): a token, or its `expires-at`, edited in place no longer matches,
/// and without the key a matching one cannot be made (an edited expiry would otherwise stop
/// renewals).
fn token_digest(
    key: &DigestKey,
    access_token: &str,
    issued_at: &str,
    expires_at: &str,
    renewal_jitter: &str,
) -> String {
    let mut mac = key.mac();
    mac.update(b"pingone-operator/token/v2");
    for field in [access_token, issued_at, expires_at, renewal_jitter] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    format!("v2:{}", hex(&mac.finalize().into_bytes()[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Secret's data for `token` under `layout`.
fn data_for(layout: &Layout, token: &IssuedToken, access_token: &str) -> BTreeMap<String, String> {
    layout.data(&Values {
        access_token,
        token_type: &token.token_type,
        expires_at: &rfc3339(token.expires_at),
        issued_at: &rfc3339(token.issued_at),
        scope: &token.scopes.join(" "),
    })
}

fn rfc3339(t: Timestamp) -> String {
    // Whole seconds: the Secret and status stay readable and stable.
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// True when `secret` is controlled by the connection with UID `uid`.
pub fn is_owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Who owns `secret`, in words: `Kind/name` of its controller (or first) owner reference, or,
/// without one, the field manager that created it.
pub fn owner_of(secret: &Secret) -> String {
    let refs = secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    if let Some(o) = refs
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| refs.first())
    {
        return format!("{}/{}", o.kind, o.name);
    }
    let creator = secret
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|m| m.manager.clone());
    match creator {
        Some(manager) => format!("no owner (created by {manager})"),
        None => "no owner".to_string(),
    }
}

/// Reads what an existing Secret of the default layout holds for the connection with UID `uid`.
pub fn inspect(secret: Option<&Secret>, uid: &str, key: &DigestKey) -> TargetState {
    inspect_with(secret, uid, &Layout::default(), key)
}

/// Reads what an existing Secret holds for the connection with UID `uid`: the token from the
/// keys the Secret was written with, and whether its data is laid out as `layout` says.
pub fn inspect_with(
    secret: Option<&Secret>,
    uid: &str,
    layout: &Layout,
    key: &DigestKey,
) -> TargetState {
    let desired = layout;
    let written = secret
        .and_then(|s| s.annotations().get(DATA_KEYS))
        .and_then(|a| Layout::from_annotation(a))
        .unwrap_or_default();
    let layout = &written;
    let Some(secret) = secret else {
        return TargetState::Absent;
    };
    if !is_owned_by(secret, uid) {
        return TargetState::Foreign {
            owner: owner_of(secret),
        };
    }
    let annotations = secret.annotations().clone();
    let data = secret.data.as_ref();
    let text = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let access_token = text(&layout.access_token)
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let token = (|| {
        let access = access_token.as_ref()?.expose_secret();
        let digest = token_digest(
            key,
            access,
            annotations.get(ISSUED_AT)?,
            annotations.get(EXPIRES_AT)?,
            annotations.get(RENEWAL_JITTER)?,
        );
        if annotations.get(TOKEN_DIGEST)? != &digest {
            return None;
        }
        let expires_at: Timestamp = annotations.get(EXPIRES_AT)?.parse().ok()?;
        // The data's expiry must agree too: consumers read it.
        let data_expiry: Timestamp = text(&layout.expires_at)?.parse().ok()?;
        if data_expiry != expires_at {
            return None;
        }
        let token_type = text(&layout.token_type).filter(|t| !t.is_empty())?;
        Some(IssuedToken {
            issued_at: annotations.get(ISSUED_AT)?.parse().ok()?,
            expires_at,
            renewal_jitter: annotations
                .get(RENEWAL_JITTER)?
                .parse::<f64>()
                .ok()
                .filter(|j| (0.0..=super::schedule::MAX_JITTER).contains(j))?,
            inputs_digest: annotations.get(INPUTS_DIGEST)?.clone(),
            token_type,
            scopes: text(&layout.scope)
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
        })
    })();
    // The data as it should be for this token: any other key, or an extra entry that differs,
    // is repaired without a new token.
    let shape_ok = match (&token, &access_token) {
        (Some(t), Some(a)) => {
            let want = data_for(desired, t, a.expose_secret());
            let have: BTreeMap<&str, Option<String>> = data
                .map(|d| d.keys().map(|k| (k.as_str(), text(k))).collect())
                .unwrap_or_default();
            have.len() == want.len()
                && want
                    .iter()
                    .all(|(k, v)| have.get(k.as_str()) == Some(&Some(v.clone())))
        }
        _ => true,
    };
    let other_installation = annotations
        .get(INSTALLATION)
        .filter(|id| **id != key.installation())
        .map(|id| OtherInstallation {
            id: id.clone(),
            renew_at: annotations.get(RENEW_AT).and_then(|t| t.parse().ok()),
            expires_at: annotations.get(EXPIRES_AT).and_then(|t| t.parse().ok()),
        });
    TargetState::Owned {
        shape_ok,
        other_installation,
        access_token: token.as_ref().and(access_token),
        token,
        labels: secret.labels().clone(),
        annotations,
        resource_version: secret.metadata.resource_version.clone(),
    }
}

/// The labels the derived Secret must carry.
pub fn desired_labels(conn: &PingOneConnection) -> BTreeMap<String, String> {
    let mut labels = conn
        .spec
        .target
        .secret_template
        .as_ref()
        .map(|t| t.labels.clone())
        .unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(CONNECTION_LABEL.into(), conn.name_any());
    labels
}

/// The annotations the derived Secret must carry for `token`, renewing at `renew_at`.
pub fn desired_annotations(
    conn: &PingOneConnection,
    token: &IssuedToken,
    access_token: &SecretString,
    renew_at: Timestamp,
    key: &DigestKey,
) -> BTreeMap<String, String> {
    let mut annotations = conn
        .spec
        .target
        .secret_template
        .as_ref()
        .map(|t| t.annotations.clone())
        .unwrap_or_default();
    let (issued_at, expires_at) = (rfc3339(token.issued_at), rfc3339(token.expires_at));
    let jitter = format!("{:.4}", token.renewal_jitter);
    annotations.insert(
        TOKEN_DIGEST.into(),
        token_digest(
            key,
            access_token.expose_secret(),
            &issued_at,
            &expires_at,
            &jitter,
        ),
    );
    annotations.insert(INSTALLATION.into(), key.installation());
    annotations.insert(ISSUED_AT.into(), issued_at);
    annotations.insert(EXPIRES_AT.into(), expires_at);
    annotations.insert(RENEW_AT.into(), rfc3339(renew_at));
    annotations.insert(RENEWAL_JITTER.into(), jitter);
    annotations.insert(INPUTS_DIGEST.into(), token.inputs_digest.clone());
    annotations.insert(
        DATA_KEYS.into(),
        Layout::of(&conn.spec.target)
            .unwrap_or_default()
            .annotation(),
    );
    annotations
}

/// True when the Secret's operator-set labels or annotations differ from what they should be
/// (someone edited them, or spec.target.secretTemplate changed).
pub fn metadata_drifted(
    current_labels: &BTreeMap<String, String>,
    current_annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    // A Secret written before layouts existed has the default layout.
    let default_layout = Layout::default().annotation();
    labels.iter().any(|(k, v)| current_labels.get(k) != Some(v))
        || annotations.iter().any(|(k, v)| {
            let current = current_annotations.get(k);
            match current {
                None if k == DATA_KEYS => *v != default_layout,
                _ => current != Some(v),
            }
        })
}

/// The full derived Secret, for server-side apply. `token.expires_at` etc. must already be
/// normalised to whole seconds (see [`IssuedToken::normalised`]).
pub fn build(
    conn: &PingOneConnection,
    token: &IssuedToken,
    access_token: &SecretString,
    renew_at: Timestamp,
    resource_version: Option<String>,
    key: &DigestKey,
) -> Secret {
    // An invalid layout stops the reconcile before a token is written; the default here only
    // keeps this function total.
    let layout = Layout::of(&conn.spec.target).unwrap_or_default();
    let data = data_for(&layout, token, access_token.expose_secret())
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(conn.target_secret_name()),
            namespace: conn.namespace(),
            labels: Some(desired_labels(conn)),
            annotations: Some(desired_annotations(
                conn,
                token,
                access_token,
                renew_at,
                key,
            )),
            owner_references: Some(vec![owner_reference(conn)]),
            resource_version,
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn owner_reference(conn: &PingOneConnection) -> OwnerReference {
    conn.controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: PingOneConnection::api_version(&()).into_owned(),
            kind: PingOneConnection::kind(&()).into_owned(),
            name: conn.name_any(),
            uid: conn.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
}

impl IssuedToken {
    /// The token with its times rounded to whole seconds, as they are stored, so that what the
    /// operator writes and what it later reads back compare equal.
    pub fn normalised(mut self) -> Self {
        let round = |t: Timestamp| rfc3339(t).parse().unwrap_or(t);
        self.issued_at = round(self.issued_at);
        self.expires_at = round(self.expires_at);
        self.renewal_jitter = format!("{:.4}", self.renewal_jitter)
            .parse()
            .unwrap_or(self.renewal_jitter);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CredentialsSecretRef, PingOneConnectionSpec, SecretTemplate};
    use sha2::{Digest, Sha256};

    fn secret(value: &str) -> SecretString {
        SecretString::from(value)
    }

    fn conn() -> PingOneConnection {
        let mut c = PingOneConnection::new(
            "billing",
            PingOneConnectionSpec {
                auth_domain: "auth.pingone.eu".into(),
                environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
                credentials_secret_ref: CredentialsSecretRef {
                    name: "creds".into(),
                    client_id_key: "clientId".into(),
                    client_secret_key: "clientSecret".into(),
                    private_key_key: "privateKey".into(),
                    key_id_key: "keyId".into(),
                },
                client_assertion_algorithm: None,
                client_secret_rotation: None,
                token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
                scopes: vec![],
                target: Default::default(),
                renewal: Default::default(),
                rollout_restart_targets: vec![],
            },
        );
        c.metadata.namespace = Some("payments".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn key() -> DigestKey {
        DigestKey::from_bytes(&[7; super::super::digest_key::KEY_LEN]).unwrap()
    }

    fn token() -> IssuedToken {
        IssuedToken {
            issued_at: "2026-11-27T08:00:00Z".parse().unwrap(),
            expires_at: "2026-11-27T09:00:00Z".parse().unwrap(),
            renewal_jitter: 0.05,
            inputs_digest: "sha256:abc".into(),
            token_type: "Bearer".into(),
            scopes: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn built_secret_round_trips_through_inspect() {
        let c = conn();
        let renew: Timestamp = "2026-11-27T08:37:00Z".parse().unwrap();
        let s = build(&c, &token(), &secret("eyJ.token"), renew, None, &key());
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let data = s.data.as_ref().unwrap();
        assert_eq!(data["access_token"].0, b"eyJ.token");
        assert_eq!(data["token_type"].0, b"Bearer");
        assert_eq!(data["expires_at"].0, b"2026-11-27T09:00:00Z");
        assert_eq!(data["scope"].0, b"a b");
        assert_eq!(s.labels()[CONNECTION_LABEL], "billing");
        assert_eq!(s.labels()[MANAGED_BY_LABEL], "pingone-operator");
        assert_eq!(s.annotations()[RENEW_AT], "2026-11-27T08:37:00Z");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        match inspect(Some(&s), "uid-1", &key()) {
            TargetState::Owned {
                token: Some(t),
                access_token: Some(a),
                ..
            } => {
                assert_eq!(t, token());
                assert_eq!(a.expose_secret(), "eyJ.token");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_scope_key_without_granted_scopes() {
        let mut t = token();
        t.scopes.clear();
        let s = build(&conn(), &t, &secret("x"), t.expires_at, None, &key());
        assert!(!s.data.unwrap().contains_key("scope"));
    }

    #[test]
    fn secrets_of_others_are_foreign() {
        let s = build(
            &conn(),
            &token(),
            &secret("x"),
            token().expires_at,
            None,
            &key(),
        );
        assert!(matches!(
            inspect(Some(&s), "another-uid", &key()),
            TargetState::Foreign { owner } if owner == "PingOneConnection/billing"
        ));
        let mut unowned = s.clone();
        unowned.metadata.owner_references = None;
        assert!(matches!(
            inspect(Some(&unowned), "uid-1", &key()),
            TargetState::Foreign { owner } if owner == "no owner"
        ));
        assert!(matches!(
            inspect(None, "uid-1", &key()),
            TargetState::Absent
        ));
    }

    #[test]
    fn edited_token_or_expiry_is_noticed() {
        let s = build(
            &conn(),
            &token(),
            &secret("eyJ.token"),
            token().expires_at,
            None,
            &key(),
        );
        // The expiry moved a year on, in the annotation and in the data alike (both agree,
        // so only the keyed digest can tell): renewals would stop.
        let mut edited = s.clone();
        let later = "2027-11-27T09:00:00Z";
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(EXPIRES_AT.into(), later.into());
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("expires_at".into(), ByteString(later.as_bytes().to_vec()));
        assert!(matches!(
            inspect(Some(&edited), "uid-1", &key()),
            TargetState::Owned { token: None, .. }
        ));
        // Written under another key (another install, a lost digest key): not trusted either.
        assert!(matches!(
            inspect(Some(&s), "uid-1", &DigestKey::random()),
            TargetState::Owned { token: None, .. }
        ));
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("access_token".into(), ByteString(b"forged".to_vec()));
        assert!(matches!(
            inspect(Some(&edited), "uid-1", &key()),
            TargetState::Owned {
                token: None,
                access_token: None,
                ..
            }
        ));
        let mut edited = s.clone();
        edited.data.as_mut().unwrap().insert(
            "expires_at".into(),
            ByteString(b"2030-01-01T00:00:00Z".to_vec()),
        );
        assert!(matches!(
            inspect(Some(&edited), "uid-1", &key()),
            TargetState::Owned { token: None, .. }
        ));
        let mut edited = s;
        edited.data.as_mut().unwrap().remove("token_type");
        assert!(matches!(
            inspect(Some(&edited), "uid-1", &key()),
            TargetState::Owned { token: None, .. }
        ));
    }

    #[test]
    fn template_labels_and_annotations_are_applied_and_drift_is_seen() {
        let mut c = conn();
        c.spec.target.secret_template = Some(Box::new(SecretTemplate {
            labels: [("team".to_string(), "payments".to_string())].into(),
            annotations: [(
                "reloader.stakater.com/match".to_string(),
                "true".to_string(),
            )]
            .into(),
        }));
        let s = build(&c, &token(), &secret("x"), token().expires_at, None, &key());
        assert_eq!(s.labels()["team"], "payments");
        assert_eq!(s.annotations()["reloader.stakater.com/match"], "true");
        let labels = desired_labels(&c);
        let annotations =
            desired_annotations(&c, &token(), &secret("x"), token().expires_at, &key());
        assert!(!metadata_drifted(
            s.labels(),
            s.annotations(),
            &labels,
            &annotations
        ));
        let mut other = c.clone();
        other.spec.target.secret_template = None;
        let s2 = build(
            &other,
            &token(),
            &secret("x"),
            token().expires_at,
            None,
            &key(),
        );
        assert!(metadata_drifted(
            s2.labels(),
            s2.annotations(),
            &labels,
            &annotations
        ));
    }

    /// The inputs of a digest, to vary one at a time.
    #[derive(Clone)]
    struct Inputs {
        domain: &'static str,
        env: &'static str,
        id: &'static str,
        secret: &'static str,
        scopes: Vec<String>,
        method: TokenEndpointAuthMethod,
    }

    impl Inputs {
        fn digest(&self, key: &DigestKey) -> String {
            inputs_digest(
                key,
                self.domain,
                self.env,
                self.id,
                &secret(self.secret),
                &self.scopes,
                self.method.as_str(),
            )
        }
    }

    fn base_inputs() -> Inputs {
        Inputs {
            domain: "auth.pingone.eu",
            env: "env",
            id: "id",
            secret: "secret",
            scopes: vec![],
            method: TokenEndpointAuthMethod::ClientSecretPost,
        }
    }

    #[test]
    fn inputs_digest_changes_with_every_input_and_hides_them() {
        let key = DigestKey::random();
        let base = base_inputs();
        let digest = base.digest(&key);
        assert!(
            digest.starts_with("v2:") && !digest.contains("secret"),
            "{digest}"
        );
        assert_eq!(digest.len(), "v2:".len() + 64);
        assert_eq!(base.digest(&key), digest, "stable for one key");
        let variants = [
            Inputs {
                domain: "auth.pingone.com",
                ..base.clone()
            },
            Inputs {
                env: "env2",
                ..base.clone()
            },
            Inputs {
                id: "id2",
                ..base.clone()
            },
            Inputs {
                secret: "secret2",
                ..base.clone()
            },
            Inputs {
                scopes: vec!["s".into()],
                ..base.clone()
            },
            Inputs {
                method: TokenEndpointAuthMethod::ClientSecretBasic,
                ..base.clone()
            },
            // Field boundaries matter: "ids" + "ecret" is not "id" + "secret".
            Inputs {
                id: "ids",
                secret: "ecret",
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.digest(&key), digest);
        }
        // Scope order and case of the domain do not.
        let a = Inputs {
            domain: "AUTH.pingone.eu",
            scopes: vec!["b".into(), "a".into()],
            ..base.clone()
        };
        let b = Inputs {
            scopes: vec!["a".into(), "b".into()],
            ..base
        };
        assert_eq!(a.digest(&key), b.digest(&key));
    }

    #[test]
    fn inputs_digest_needs_the_key() {
        let inputs = base_inputs();
        let key = DigestKey::from_bytes(&[7; super::super::digest_key::KEY_LEN]).unwrap();
        // Another key gives another digest: without the key a guess cannot be checked.
        assert_ne!(inputs.digest(&key), inputs.digest(&DigestKey::random()));
        // Neither is the unkeyed digest of earlier versions, so it never compares equal.
        let mut unkeyed = Sha256::new();
        unkeyed.update(b"pingone-operator/inputs/v1");
        for value in [
            "auth.pingone.eu",
            "env",
            "id",
            "secret",
            "client_secret_post",
            "",
        ] {
            unkeyed.update((value.len() as u64).to_be_bytes());
            unkeyed.update(value.as_bytes());
        }
        let old = format!("sha256:{}", hex(&unkeyed.finalize()));
        let new = inputs.digest(&key);
        assert_ne!(new, old);
        assert!(!new.contains(old.trim_start_matches("sha256:")));
        // Known answer from an independent implementation (Python's hmac module): HMAC-SHA256
        // keyed with the key bytes over the tag and the length-prefixed fields.
        assert_eq!(
            new,
            "v2:5fd034b3af307870699fda15ab0a3505d9b88813b581d9b96863229003ff1b98"
        );
    }

    #[test]
    fn normalised_times_survive_storage() {
        let t = IssuedToken {
            issued_at: "2026-11-27T08:00:00.4Z".parse().unwrap(),
            expires_at: "2026-11-27T09:00:00.6Z".parse().unwrap(),
            renewal_jitter: 0.0123456,
            ..token()
        }
        .normalised();
        let s = build(&conn(), &t, &secret("x"), t.expires_at, None, &key());
        match inspect(Some(&s), "uid-1", &key()) {
            TargetState::Owned {
                token: Some(back), ..
            } => assert_eq!(back, t),
            other => panic!("{other:?}"),
        }
    }
}
