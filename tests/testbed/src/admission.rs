//! Admission policies the tests and the soak use to make the API server deny writes, as a
//! cluster's own policy or webhook would.

/// A ValidatingAdmissionPolicy and its binding, both named `name`, that deny `operations`
/// (e.g. `["UPDATE"]`) of Secrets in `namespace` unless `expression` (CEL over `object`,
/// `oldObject` and `request`) holds, with `message`. Apply it with `kubectl apply`; the API
/// server enforces it a moment later (probe with a dry run).
pub fn deny_secret_writes(
    name: &str,
    namespace: &str,
    operations: &[&str],
    expression: &str,
    message: &str,
) -> String {
    let operations = operations
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: [{operations}]
        resources: ["secrets"]
  validations:
    - expression: >-
        {expression}
      message: "{message}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"#
    )
}

/// The CEL expression that lets through only Secrets without the operator's
/// `app.kubernetes.io/managed-by` label: with [`deny_secret_writes`], it freezes the operator's
/// own Secrets (token Secrets, holds).
pub const NOT_THE_OPERATORS: &str =
    "!has(object.metadata.labels) || !('app.kubernetes.io/managed-by' in object.metadata.labels)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_yaml_with_both_objects() {
        let yaml = deny_secret_writes("p", "ns", &["CREATE", "UPDATE"], NOT_THE_OPERATORS, "no");
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs[0]["kind"], "ValidatingAdmissionPolicy");
        assert_eq!(
            docs[0]["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        assert_eq!(
            docs[0]["spec"]["validations"][0]["expression"],
            NOT_THE_OPERATORS
        );
        assert_eq!(docs[1]["kind"], "ValidatingAdmissionPolicyBinding");
        assert_eq!(
            docs[1]["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ns"
        );
    }
}
