//! A Secret as the Secret watch decodes it: namespace, name and resource version, and of its
//! labels and annotations only the two the operator reads.
//!
//! The watch sees every Secret event of the cluster, nearly all of Secrets no connection uses.
//! Decoded as kube's `PartialObjectMeta<Secret>`, each event is first copied whole into serde's
//! buffered form (the type flattens its `apiVersion` and `kind`), then into a full `ObjectMeta`:
//! every label, annotation, owner reference and managed-fields entry (with its `fieldsV1` tree)
//! becomes allocations, and five fields are then read. This type skips everything else in the
//! event as it parses, without allocating it. Requests are the same metadata-only ones
//! (`Resource::metadata_api`): Secret data never reaches the operator.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de};

use super::token_secret::{CONNECTION_LABEL, TOKEN_DIGEST};

/// The metadata of one Secret, slimmed: `labels` holds at most the connection label, and
/// `annotations` at most the token digest.
#[derive(Clone, Debug, Default)]
pub struct SecretMeta {
    pub metadata: ObjectMeta,
}

impl kube::Resource for SecretMeta {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Secret as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Secret as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Secret as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Secret as kube::Resource>::plural(dt)
    }
    /// Metadata-only requests, as for `PartialObjectMeta`.
    fn metadata_api() -> bool {
        true
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de> Deserialize<'de> for SecretMeta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Unknown fields are skipped by the derived code as `IgnoredAny`: parsed, not kept.
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: Slim,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Slim {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
            #[serde(default, deserialize_with = "connection_label")]
            labels: Option<BTreeMap<String, String>>,
            #[serde(default, deserialize_with = "token_digest")]
            annotations: Option<BTreeMap<String, String>>,
        }
        let Object { metadata: m } = Object::deserialize(deserializer)?;
        Ok(SecretMeta {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                labels: m.labels,
                annotations: m.annotations,
                ..ObjectMeta::default()
            },
        })
    }
}

fn connection_label<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_option(OnlyKey(CONNECTION_LABEL))
}

fn token_digest<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_option(OnlyKey(TOKEN_DIGEST))
}

/// A map of strings, of which only the entry with this key is kept (`None` without it).
struct OnlyKey(&'static str);

impl<'de> Visitor<'de> for OnlyKey {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = None;
        while let Some(wanted) = map.next_key_seed(IsKey(self.0))? {
            if wanted {
                let value: String = map.next_value()?;
                kept = Some(BTreeMap::from([(self.0.to_string(), value)]));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

/// A map key compared with the wanted one as it is read, never kept.
struct IsKey(&'static str);

impl<'de> DeserializeSeed<'de> for IsKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::WatchEvent;

    /// A watch event as the API server sends it for a metadata-only watch of Secrets.
    fn event(labels: &str, annotations: &str) -> String {
        format!(
            r#"{{"type":"MODIFIED","object":{{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
            "metadata":{{"name":"db-creds","namespace":"team-a","uid":"0d6c","resourceVersion":"4711",
            "creationTimestamp":"2026-12-01T10:00:00Z",{labels}{annotations}
            "ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"x","uid":"1"}}],
            "managedFields":[{{"manager":"kubectl","operation":"Update","apiVersion":"v1",
            "time":"2026-12-01T10:00:00Z","fieldsType":"FieldsV1",
            "fieldsV1":{{"f:data":{{".":{{}},"f:password":{{}}}},"f:metadata":{{"f:annotations":{{}}}}}}}}]}}}}}}"#
        )
    }

    fn decode(line: &str) -> SecretMeta {
        match serde_json::from_str::<WatchEvent<SecretMeta>>(line).expect("decodes") {
            WatchEvent::Modified(s) => s,
            other => panic!("not a MODIFIED event: {other:?}"),
        }
    }

    #[test]
    fn keeps_name_namespace_version_and_only_the_two_keys_the_operator_reads() {
        let s = decode(&event(
            r#""labels":{"app":"db","pingone.tokenops.dev/connection":"billing","z":"1"},"#,
            r#""annotations":{"pingone.tokenops.dev/token-digest":"abc","note":"with \"escapes\""},"#,
        ));
        assert_eq!(s.metadata.name.as_deref(), Some("db-creds"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("4711"));
        assert_eq!(
            s.metadata.labels,
            Some(BTreeMap::from([(
                CONNECTION_LABEL.into(),
                "billing".into()
            )]))
        );
        assert_eq!(
            s.metadata.annotations,
            Some(BTreeMap::from([(TOKEN_DIGEST.into(), "abc".into())]))
        );
        // Nothing else is kept.
        assert_eq!(s.metadata.uid, None);
        assert_eq!(s.metadata.owner_references, None);
        assert_eq!(s.metadata.managed_fields, None);
        assert_eq!(s.metadata.creation_timestamp, None);
    }

    #[test]
    fn labels_and_annotations_without_the_keys_or_null_or_missing_keep_none() {
        for (labels, annotations) in [
            (
                r#""labels":{"app":"db"},"#,
                r#""annotations":{"note":"x"},"#,
            ),
            (r#""labels":null,"#, r#""annotations":null,"#),
            ("", ""),
        ] {
            let s = decode(&event(labels, annotations));
            assert_eq!(s.metadata.labels, None, "{labels}");
            assert_eq!(s.metadata.annotations, None, "{annotations}");
            assert_eq!(s.metadata.name.as_deref(), Some("db-creds"));
        }
    }

    #[test]
    fn a_key_with_escapes_is_still_matched() {
        // JSON may escape any character; the key is compared after unescaping.
        let s = decode(&event(
            r#""labels":{"pingone.tokenops.dev\/connection":"billing"},"#,
            "",
        ));
        assert_eq!(
            s.metadata.labels,
            Some(BTreeMap::from([(
                CONNECTION_LABEL.into(),
                "billing".into()
            )]))
        );
    }

    #[test]
    fn a_wrong_type_is_an_error_not_a_silent_none() {
        let line = event(r#""labels":["pingone.tokenops.dev/connection"],"#, "");
        assert!(serde_json::from_str::<WatchEvent<SecretMeta>>(&line).is_err());
    }

    #[test]
    fn a_list_decodes_item_by_item() {
        let list = r#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1",
            "metadata":{"resourceVersion":"99"},
            "items":[{"metadata":{"name":"a","namespace":"n","resourceVersion":"1"}},
                     {"metadata":{"name":"b","namespace":"n","resourceVersion":"2",
                      "labels":{"pingone.tokenops.dev/connection":"c"}}}]}"#;
        let list: kube::core::ObjectList<SecretMeta> = serde_json::from_str(list).expect("decodes");
        assert_eq!(list.metadata.resource_version.as_deref(), Some("99"));
        let names: Vec<_> = list.items.iter().map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names, [Some("a".to_string()), Some("b".to_string())]);
        assert!(list.items[1].metadata.labels.is_some());
    }

    #[test]
    fn requests_are_metadata_only_for_secrets() {
        use kube::Resource;
        assert!(SecretMeta::metadata_api());
        assert_eq!(
            SecretMeta::url_path(&(), Some("n")),
            "/api/v1/namespaces/n/secrets"
        );
        assert_eq!(SecretMeta::kind(&()), "Secret");
    }
}
