//! The key of the inputs digest that every token Secret carries (see
//! [`inputs_digest`](super::token_secret::inputs_digest)).
//!
//! The digest lets a restarted operator tell whether the token in a Secret was issued for the
//! current spec and credentials. A plain hash over the client secret would let anyone who can read
//! only the token Secret test guesses of the client secret offline; an HMAC under a key that
//! only the operator can read does not. The key is 32 random bytes in a Secret in the operator's
//! own namespace, created on the first start and read on every later one.
//!
//! Losing the key (the Secret deleted) costs one token request per connection and nothing else:
//! with a new key no stored digest matches, so each connection gets one fresh token.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use secrecy::{ExposeSecret, SecretSlice};
use tracing::info;

use super::FIELD_MANAGER;
use super::token_secret::{MANAGED_BY, MANAGED_BY_LABEL};

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;
/// Default name of the Secret holding the key, in the operator's namespace.
pub const DEFAULT_SECRET_NAME: &str = "pingone-operator-digest-key";
/// Data key under which the Secret holds the key bytes.
pub const DATA_KEY: &str = "key";

/// The HMAC key of the inputs digest. It neither prints nor formats, and is wiped from memory
/// when dropped; [`DigestKey::mac`] is the only way to use it.
#[derive(Clone)]
pub struct DigestKey(SecretSlice<u8>);

/// HMAC-SHA256, keyed by a [`DigestKey`].
pub type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl DigestKey {
    /// A fresh key of [`KEY_LEN`] random bytes from the thread's CSPRNG.
    pub fn random() -> Self {
        DigestKey(SecretSlice::from(rand::random::<[u8; KEY_LEN]>().to_vec()))
    }

    /// The key from its bytes; None unless there are exactly [`KEY_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == KEY_LEN).then(|| DigestKey(SecretSlice::from(bytes.to_vec())))
    }

    /// A fresh HMAC-SHA256 state keyed with this key.
    pub fn mac(&self) -> HmacSha256 {
        use hmac::Mac;
        // HMAC accepts keys of any length: the error case does not exist for it.
        HmacSha256::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length")
    }

    /// The name of the installation this key belongs to: every replica of one install shares
    /// the key, another install (say a Helm release beside a kustomize one) has its own. A
    /// keyed digest, so it tells nothing of the key.
    pub fn installation(&self) -> String {
        use hmac::Mac;
        let mut mac = self.mac();
        mac.update(b"pingone-operator/installation/v1");
        mac.finalize().into_bytes()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The Secret `namespace/name` that stores this key.
    pub fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            // Never changed once written: a new key would cost every connection a token.
            immutable: Some(true),
            data: Some(
                [(
                    DATA_KEY.to_string(),
                    ByteString(self.0.expose_secret().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        }
    }

    /// The key stored in `secret`, if it holds one.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let bytes = secret.data.as_ref()?.get(DATA_KEY)?;
        Self::from_bytes(&bytes.0)
    }
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DigestKeyError {
    /// Reading or creating the Secret failed.
    #[error("reading or creating the digest key Secret {namespace}/{name}: {source}")]
    Kube {
        /// The operator's namespace.
        namespace: String,
        /// The Secret name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The Secret exists but does not hold a key.
    #[error(
        "Secret {namespace}/{name} holds no {KEY_LEN}-byte key under data.{DATA_KEY}; delete it \
         and restart the operator to create a new key (each connection then gets one new token)"
    )]
    Malformed {
        /// The operator's namespace.
        namespace: String,
        /// The Secret name.
        name: String,
    },
}

/// Reads the key from Secret `namespace/name`, creating it with a random key when it does not
/// exist. Replicas starting together agree: whichever create loses (409) reads the winner's.
pub async fn load_or_create(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<DigestKey, DigestKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |source| DigestKeyError::Kube {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    let parse = |secret: Secret| {
        DigestKey::from_secret(&secret).ok_or_else(|| DigestKeyError::Malformed {
            namespace: namespace.into(),
            name: name.into(),
        })
    };
    if let Some(secret) = api.get_opt(name).await.map_err(kube_error)? {
        return parse(secret);
    }
    let key = DigestKey::random();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, &key.to_secret(namespace, name)).await {
        Ok(_) => {
            info!(%namespace, secret = %name, "created the key of the inputs digest");
            Ok(key)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            parse(api.get(name).await.map_err(kube_error)?)
        }
        Err(e) => Err(kube_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use hmac::Mac;
    use kube::ResourceExt;

    use super::*;

    fn tag(key: &DigestKey) -> Vec<u8> {
        let mut mac = key.mac();
        mac.update(b"message");
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn keys_are_random_and_round_trip_through_their_secret() {
        let a = DigestKey::random();
        let b = DigestKey::random();
        assert_ne!(tag(&a), tag(&b));
        let secret = a.to_secret("ops", DEFAULT_SECRET_NAME);
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(secret.labels()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.data.as_ref().unwrap()[DATA_KEY].0.len(), KEY_LEN);
        let back = DigestKey::from_secret(&secret).expect("a key");
        assert_eq!(tag(&back), tag(&a));
        assert_eq!(tag(&a.clone()), tag(&a));
    }

    #[test]
    fn the_mac_is_hmac_sha256_under_the_key_bytes() {
        // Known answer from an independent implementation (Python's hmac module).
        let key = DigestKey::from_bytes(&[0x0b; KEY_LEN]).unwrap();
        let mut mac = key.mac();
        mac.update(b"Hi There");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn wrong_lengths_and_missing_data_are_no_key() {
        assert!(DigestKey::from_bytes(&[1; KEY_LEN - 1]).is_none());
        assert!(DigestKey::from_bytes(&[1; KEY_LEN + 1]).is_none());
        assert!(DigestKey::from_secret(&Secret::default()).is_none());
        let mut secret = DigestKey::random().to_secret("ops", "k");
        secret.data.as_mut().unwrap().remove(DATA_KEY);
        assert!(DigestKey::from_secret(&secret).is_none());
    }

    #[test]
    fn the_malformed_error_says_what_to_do_and_shows_no_bytes() {
        let e = DigestKeyError::Malformed {
            namespace: "ops".into(),
            name: "k".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("ops/k") && text.contains("delete it"),
            "{text}"
        );
    }
}
