//! The rotation's record on the credentials Secret, and what a reconcile does about a rotation
//! already under way. Pure: no I/O.
//!
//! **The invariant** (DESIGN §7): a secret PingOne returned is never discarded before a secret
//! PingOne accepts is in the credentials Secret and proven, and no second rotation starts while
//! the outcome of one is unknown.
//!
//! It holds by construction, in three parts:
//!
//! 1. Before the Management API is called, the *intent* is written on the credentials Secret
//!    (annotation [`INTENT`]), in a patch conditional on the resourceVersion the decision was
//!    made on. Two leaders, two replicas or two connections sharing the Secret cannot both get
//!    past that patch; a crash after it leaves the record behind.
//! 2. The intent goes only with a known outcome: in the same patch as the new secret, or by a
//!    patch of its own when PingOne said no (nothing was rotated). Any failure after the
//!    request was sent leaves it there: the outcome is unknown.
//! 3. While an intent is on the Secret, [`decide`] never says "rotate": it says what is known
//!    and until when the replaced secret works (the intent's deadline).
//!
//! A secret PingOne returned ([`Pending`]) is kept until [`decide`] finds the Secret holding it,
//! or holding another secret that a token proved.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use crate::controller::credentials;
use crate::controller::digest_key::DigestKey;
use crate::pingone::{ExposeSecret, SecretString};

/// Annotation on the credentials Secret while a rotation's outcome is not known: when it
/// started, until when PingOne accepts the secret it replaces, and a keyed fingerprint of that
/// secret (never the secret).
pub const INTENT: &str = "pingone.tokenops.dev/rotation-in-flight";

/// A rotation recorded on the credentials Secret before PingOne was called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// When the operator decided to rotate.
    pub started_at: Timestamp,
    /// Until when PingOne accepts the replaced secret if the rotation happened: the previous
    /// secret's grace end the operator asked for.
    pub deadline: Timestamp,
    /// [`fingerprint`] of the secret the rotation replaces.
    pub replaces: String,
}

impl Intent {
    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The intent recorded on `secret`: `None` without the annotation, `Some(None)` when the
    /// annotation is there but unreadable (edited by hand): still an unknown outcome.
    pub fn on(secret: &Secret) -> Option<Option<Intent>> {
        let value = secret.metadata.annotations.as_ref()?.get(INTENT)?;
        Some(serde_json::from_str(value).ok())
    }
}

/// A keyed fingerprint of a client secret, as [`credentials`] reads it: tells whether the
/// Secret still holds the secret an intent replaces without storing it. Without the key a
/// guess cannot be checked.
pub fn fingerprint(key: &DigestKey, secret: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = key.mac();
    mac.update(b"pingone-operator/rotation-replaces/v1");
    mac.update(credentials::normalised(secret));
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("v1:{hex}")
}

/// A new secret PingOne returned, not yet known to be in the credentials Secret.
#[derive(Clone)]
pub struct Pending {
    /// The new secret.
    pub secret: SecretString,
    /// The secret it replaces.
    pub replaces: SecretString,
    /// When it was rotated.
    pub rotated_at: Timestamp,
    /// Until when the replaced secret works.
    pub previous_expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("rotated_at", &self.rotated_at)
            .field("previous_expires_at", &self.previous_expires_at)
            .finish_non_exhaustive()
    }
}

/// What the credentials Secret holds, compared with the secrets a rotation knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// The secret the rotation replaces.
    Replaced,
    /// The new secret PingOne returned.
    New,
    /// Something else (a person's edit, another writer), or nothing readable.
    Other,
}

/// Whether `stored` (a Secret's raw value) is `value`, compared as [`credentials`] reads it, in
/// constant time.
pub fn same(stored: &[u8], value: &SecretString) -> bool {
    let stored = credentials::normalised(stored);
    let want = value.expose_secret().as_bytes();
    stored.len() == want.len()
        && stored
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a token request with the Secret's current secret showed in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A token for the current inputs is in the Secret; it was issued at this time.
    Proven {
        /// When the token that proves it was issued.
        issued_at: Timestamp,
    },
    /// PingOne refused the secret (`invalid_client`, `unauthorized_client`).
    Refused,
    /// Nothing is known yet (no request, or a failure that says nothing of the secret).
    Unknown,
}

/// What a reconcile does about a rotation under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No rotation is under way: the schedule decides.
    Schedule,
    /// Write the pending secret over the replaced (or a refused) one.
    WritePending,
    /// The Secret holds the pending secret already (a lost answer to the operator's own
    /// write): the rotation is done.
    Landed,
    /// Another secret is in the Secret and a token proved it: the pending secret may go.
    Superseded,
    /// Another secret is in the Secret and not proven yet: keep the pending secret.
    AwaitProof,
    /// Remove the intent: the outcome is known now (nothing was rotated, or another secret
    /// works).
    ClearIntent,
    /// The outcome is unknown: report it, never rotate. `deadline` is when the replaced secret
    /// stops working if the rotation happened (`None`: the record is unreadable).
    Unknown {
        /// The replaced secret's grace end.
        deadline: Option<Timestamp>,
        /// The Secret holds another secret than the replaced one, refused or not yet proven.
        other_secret: bool,
    },
}

/// The facts [`decide`] takes.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The intent on the credentials Secret: `Some(None)` when unreadable.
    pub intent: Option<Option<&'a Intent>>,
    /// The fingerprint of the Secret's current secret (`None`: no readable secret).
    pub current: Option<&'a str>,
    /// What this process knows of the rotation of this Secret.
    pub memory: Memory,
    /// What the Secret holds, compared with the pending secret (only with `Memory::Pending`).
    pub holds: Holds,
    /// What a token request with the Secret's current secret showed.
    pub proof: Proof,
}

/// What this process knows of a rotation of one credentials Secret (a reconcile calling
/// PingOne holds the Secret: no other decides meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Nothing.
    None,
    /// PingOne returned a new secret that is not known to be in the Secret.
    Pending,
    /// The intent on the Secret is known void: PingOne said no, nothing was rotated, and the
    /// patch that removes the record failed.
    Void,
}

/// What to do about a rotation under way. Never [`Step::Schedule`] while the Secret carries an
/// intent, and never a step that drops a pending secret before another one is proven.
pub fn decide(f: Facts<'_>) -> Step {
    match f.memory {
        Memory::Pending => {
            return match (f.holds, f.proof) {
                (Holds::New, _) => Step::Landed,
                (Holds::Replaced, _) => Step::WritePending,
                (Holds::Other, Proof::Proven { .. }) => Step::Superseded,
                (Holds::Other, Proof::Refused) => Step::WritePending,
                (Holds::Other, Proof::Unknown) => Step::AwaitProof,
            };
        }
        Memory::Void if f.intent.is_some() => return Step::ClearIntent,
        Memory::Void | Memory::None => {}
    }
    let Some(intent) = f.intent else {
        return Step::Schedule;
    };
    let Some(intent) = intent else {
        // Unreadable (edited by hand): nothing is known, not even the deadline. A person
        // removes the annotation once the Secret holds PingOne's current secret.
        return Step::Unknown {
            deadline: None,
            other_secret: false,
        };
    };
    let replaced = f.current == Some(intent.replaces.as_str());
    match (replaced, f.proof) {
        // Another secret works: whatever happened, access is not lost.
        (false, Proof::Proven { .. }) => Step::ClearIntent,
        (false, _) => Step::Unknown {
            deadline: Some(intent.deadline),
            other_secret: true,
        },
        // The replaced secret still works after its grace would have ended: nothing was
        // rotated.
        (true, Proof::Proven { issued_at }) if issued_at > intent.deadline => Step::ClearIntent,
        (true, _) => Step::Unknown {
            deadline: Some(intent.deadline),
            other_secret: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DEADLINE: &str = "2026-12-01T01:00:00Z";

    fn intent() -> Intent {
        Intent {
            started_at: ts("2026-12-01T00:00:00Z"),
            deadline: ts(DEADLINE),
            replaces: "v1:old".into(),
        }
    }

    fn proven(at: &str) -> Proof {
        Proof::Proven { issued_at: ts(at) }
    }

    #[test]
    fn the_annotation_round_trips_and_a_hand_edit_is_still_an_intent() {
        let i = intent();
        let mut s = Secret::default();
        s.metadata.annotations = Some([(INTENT.to_string(), i.to_annotation())].into());
        assert_eq!(Intent::on(&s), Some(Some(i)));
        s.metadata.annotations = Some([(INTENT.to_string(), "edited".to_string())].into());
        assert_eq!(Intent::on(&s), Some(None));
        s.metadata.annotations = None;
        assert_eq!(Intent::on(&s), None);
    }

    #[test]
    fn fingerprints_read_values_as_the_token_request_does() {
        let key = DigestKey::random();
        let plain = fingerprint(&key, b"s3cret");
        // A file's LF or CRLF ending is not part of the secret, here as when it is read.
        assert_eq!(fingerprint(&key, b"s3cret\n"), plain);
        assert_eq!(fingerprint(&key, b"s3cret\r\n"), plain);
        assert_ne!(fingerprint(&key, b"s3cret2"), plain);
        assert_ne!(fingerprint(&DigestKey::random(), b"s3cret"), plain);
        assert!(!plain.contains("s3cret"));
        assert!(same(b"s3cret\r\n", &SecretString::from("s3cret")));
        assert!(same(b"s3cret\n", &SecretString::from("s3cret")));
        assert!(!same(b"s3cret\r", &SecretString::from("s3cre")));
        assert!(!same(b"s3cret", &SecretString::from("s3cret2")));
    }

    /// Every combination of what is remembered, what the Secret holds and what a token showed:
    /// a pending secret goes only when the Secret holds it or another proven secret, and an
    /// intent never lets a rotation be scheduled while its outcome is unknown.
    #[test]
    fn the_table_of_a_rotation_under_way() {
        let i = intent();
        let unknown = |other| Step::Unknown {
            deadline: Some(ts(DEADLINE)),
            other_secret: other,
        };
        let before = proven("2026-12-01T00:30:00Z");
        let after = proven("2026-12-01T01:00:01Z");
        type Row<'a> = (
            Option<Option<&'a Intent>>,
            Option<&'a str>,
            Memory,
            Holds,
            Proof,
            Step,
        );
        let table: Vec<Row<'_>> = vec![
            // Nothing under way.
            (
                None,
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                before,
                Step::Schedule,
            ),
            // A returned secret: written over the replaced one, whatever the token says.
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::Pending,
                Holds::Replaced,
                Proof::Unknown,
                Step::WritePending,
            ),
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::Pending,
                Holds::Replaced,
                Proof::Refused,
                Step::WritePending,
            ),
            (
                None,
                Some("v1:old"),
                Memory::Pending,
                Holds::Replaced,
                before,
                Step::WritePending,
            ),
            // Already there: a lost answer to the write.
            (
                Some(Some(&i)),
                Some("v1:new"),
                Memory::Pending,
                Holds::New,
                Proof::Unknown,
                Step::Landed,
            ),
            (
                None,
                Some("v1:new"),
                Memory::Pending,
                Holds::New,
                before,
                Step::Landed,
            ),
            // A person's secret: kept if proven, overwritten if refused, awaited otherwise.
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::Pending,
                Holds::Other,
                before,
                Step::Superseded,
            ),
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::Pending,
                Holds::Other,
                Proof::Refused,
                Step::WritePending,
            ),
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::Pending,
                Holds::Other,
                Proof::Unknown,
                Step::AwaitProof,
            ),
            (
                Some(Some(&i)),
                None,
                Memory::Pending,
                Holds::Other,
                Proof::Unknown,
                Step::AwaitProof,
            ),
            // PingOne said no and the record's removal failed.
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::Void,
                Holds::Other,
                Proof::Unknown,
                Step::ClearIntent,
            ),
            (
                None,
                Some("v1:old"),
                Memory::Void,
                Holds::Other,
                before,
                Step::Schedule,
            ),
            // After a restart, a lost answer, a second leader: only the record is left.
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                Proof::Unknown,
                unknown(false),
            ),
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                before,
                unknown(false),
            ),
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                Proof::Refused,
                unknown(false),
            ),
            (
                Some(Some(&i)),
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                after,
                Step::ClearIntent,
            ),
            // Someone put another secret in: resolved once it is proven.
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::None,
                Holds::Other,
                Proof::Unknown,
                unknown(true),
            ),
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::None,
                Holds::Other,
                Proof::Refused,
                unknown(true),
            ),
            (
                Some(Some(&i)),
                Some("v1:person"),
                Memory::None,
                Holds::Other,
                before,
                Step::ClearIntent,
            ),
            (
                Some(Some(&i)),
                None,
                Memory::None,
                Holds::Other,
                Proof::Unknown,
                unknown(true),
            ),
            // A hand-edited record: unknown, without a deadline, proven or not.
            (
                Some(None),
                Some("v1:old"),
                Memory::None,
                Holds::Other,
                after,
                Step::Unknown {
                    deadline: None,
                    other_secret: false,
                },
            ),
        ];
        for (n, (intent, current, memory, holds, proof, want)) in table.into_iter().enumerate() {
            let got = decide(Facts {
                intent,
                current,
                memory,
                holds,
                proof,
            });
            assert_eq!(got, want, "row {n}");
        }
    }
}
