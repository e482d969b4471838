//! The `PingOneConnection` custom resource (`pingone.tokenops.dev/v1alpha1`).
//!
//! The CRD under `crds/` is generated from these types (`pingone-operator crd`); doc comments
//! become `kubectl explain` text and the schema attributes are what `kubectl apply` validates.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the operator's resources; also the prefix of its labels and annotations.
pub const GROUP: &str = "pingone.tokenops.dev";

/// Regular expression for a lowercase UUID, the form of a PingOne environment id.
pub const ENVIRONMENT_ID_PATTERN: &str =
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// A PingOne worker application's client credentials, turned by the operator into an OAuth 2
/// access token that it keeps fresh in a Secret of the same namespace.
// Each printcolumn repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pingone.tokenops.dev",
    version = "v1alpha1",
    kind = "PingOneConnection",
    plural = "pingoneconnections",
    singular = "pingoneconnection",
    shortname = "p1c",
    shortname = "pingone",
    category = "pingone",
    namespaced,
    status = "PingOneConnectionStatus",
    doc = "A PingOne worker application's client credentials, turned by the operator into an OAuth 2 access token that it keeps fresh in a Secret of the same namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Method",
        type_ = "string",
        json_path = ".spec.tokenEndpointAuthMethod",
        priority = 1
    ),
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".spec.environmentId",
        priority = 1
    ),
    printcolumn(
        name = "Renewal",
        type_ = "string",
        json_path = ".status.renewalTime",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.clientAssertionAlgorithm) || (has(self.tokenEndpointAuthMethod) && ((self.tokenEndpointAuthMethod == 'client_secret_jwt' && self.clientAssertionAlgorithm.startsWith('HS')) || (self.tokenEndpointAuthMethod == 'private_key_jwt' && !self.clientAssertionAlgorithm.startsWith('HS'))))").message("clientAssertionAlgorithm HS256, HS384 or HS512 goes with tokenEndpointAuthMethod client_secret_jwt, RS256, RS384, RS512, ES256 or ES384 with private_key_jwt; the other methods take none"))]
#[x_kube(validation = Rule::new("!has(self.clientSecretRotation) || !has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'private_key_jwt'").message("clientSecretRotation rotates a client secret; a private_key_jwt application has none"))]
#[x_kube(validation = Rule::new("!has(self.clientSecretRotation) || self.authDomain in ['auth.pingone.com', 'auth.pingone.eu', 'auth.pingone.ca', 'auth.pingone.com.au', 'auth.pingone.sg', 'auth.pingone.asia'] || has(self.clientSecretRotation.apiDomain)").message("with a custom authDomain, clientSecretRotation.apiDomain must name the PingOne API domain of the environment's region"))]
pub struct PingOneConnectionSpec {
    /// Host name of the PingOne authorization server: a regional domain (auth.pingone.com,
    /// auth.pingone.eu, auth.pingone.ca, auth.pingone.com.au, auth.pingone.sg, auth.pingone.asia)
    /// or a custom domain that the cluster administrator allowed with --allowed-auth-domains.
    /// Tokens come from https://{authDomain}/{environmentId}/as/token for a regional domain and
    /// from https://{authDomain}/as/token for a custom domain.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
    ))]
    pub auth_domain: String,

    /// ID of the PingOne environment of the worker application: a lowercase UUID, the first
    /// path segment of the environment's URLs (https://auth.pingone.eu/<environmentId>/as/...).
    #[schemars(regex(
        pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ))]
    pub environment_id: String,

    /// The Secret, in the same namespace, that holds the worker application's client ID and
    /// client secret. Changes to it are picked up within seconds.
    pub credentials_secret_ref: CredentialsSecretRef,

    /// How the client authenticates at the token endpoint, as configured on the worker
    /// application in PingOne: client_secret_post (client_id and client_secret in the form
    /// body), client_secret_basic (HTTP Basic authentication), client_secret_jwt (a JWT signed
    /// with the client secret, so the secret itself is never sent) or private_key_jwt (a JWT
    /// signed with the application's private key; no client secret exists). The first three
    /// need the credentials Secret's clientIdKey and clientSecretKey; private_key_jwt needs
    /// clientIdKey and privateKeyKey (and keyIdKey when the application's JWKS has several keys).
    #[serde(default)]
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,

    /// Signing algorithm of the client assertion. For client_secret_jwt: HS256 (default), HS384
    /// or HS512. For private_key_jwt it follows the key (RS256 for RSA, ES256 for EC P-256,
    /// ES384 for EC P-384) unless set to RS256, RS384, RS512, ES256 or ES384. Other methods take
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_assertion_algorithm: Option<AssertionAlgorithm>,

    /// Rotate the worker application's client secret on a schedule through PingOne's
    /// Management API, keeping the previous secret valid for a while. Opt-in. The application
    /// needs a role that covers its own roles (e.g. Environment Admin or Client Application
    /// Developer), and nobody but the operator may then use its secret: each rotation replaces
    /// the secret in the credentials Secret. Not for private_key_jwt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_rotation: Option<Box<ClientSecretRotation>>,

    /// Scopes to request, e.g. those of one custom resource. Leave empty for a worker
    /// application that uses its role assignments (PingOne grants them without any scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(inner(
        length(min = 1, max = 256),
        regex(pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$")
    ))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub scopes: Vec<String>,

    /// The Secret that the operator writes the access token to.
    #[serde(default)]
    pub target: TargetSpec,

    /// When to renew the token. Set renewBefore or renewBeforePercentage, not both; the default
    /// renews when 33% of the token's lifetime is left.
    #[serde(default)]
    pub renewal: RenewalSpec,

    /// Workloads in the same namespace to restart (a rolling restart, like kubectl rollout
    /// restart) after each token rotation, for consumers that read the token once at start-up
    /// (environment variables, files read once). Restarts are debounced and never caused by an
    /// operator restart. Needs the operator's optional rollout-restart RBAC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

// Signing algorithms of a JWT client assertion. (No doc comment: the CRD takes the field's.)
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AssertionAlgorithm {
    /// HMAC SHA-256 with the client secret (client_secret_jwt).
    HS256,
    /// HMAC SHA-384 with the client secret (client_secret_jwt).
    HS384,
    /// HMAC SHA-512 with the client secret (client_secret_jwt).
    HS512,
    /// RSA PKCS #1 v1.5 SHA-256 (private_key_jwt).
    RS256,
    /// RSA PKCS #1 v1.5 SHA-384 (private_key_jwt).
    RS384,
    /// RSA PKCS #1 v1.5 SHA-512 (private_key_jwt).
    RS512,
    /// ECDSA P-256 SHA-256 (private_key_jwt).
    ES256,
    /// ECDSA P-384 SHA-384 (private_key_jwt).
    ES384,
}

impl AssertionAlgorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::HS256 => A::HS256,
            Self::HS384 => A::HS384,
            Self::HS512 => A::HS512,
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
        }
    }
}

/// Scheduled rotation of the worker application's client secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.rotateEvery) >= duration('1h') && duration(self.rotateEvery) <= duration('8760h')").message("rotateEvery must be between 1h and 8760h (a year)"))]
#[x_kube(validation = Rule::new("duration(self.keepPreviousFor) >= duration('1m') && duration(self.keepPreviousFor) <= duration('720h')").message("keepPreviousFor must be between 1m and 720h (PingOne keeps a previous secret for at most 30 days)"))]
#[x_kube(validation = Rule::new("duration(self.keepPreviousFor) < duration(self.rotateEvery)").message("keepPreviousFor must be shorter than rotateEvery"))]
pub struct ClientSecretRotation {
    /// How often to rotate, as a duration such as 720h (30 days, the default). At least 1h.
    #[serde(default = "default_rotate_every")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub rotate_every: String,

    /// How long PingOne keeps accepting the previous secret after a rotation, so that nothing
    /// in flight breaks: 1m to 720h, default 24h.
    #[serde(default = "default_keep_previous_for")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub keep_previous_for: String,

    /// PingOne API domain of the environment's region. Derived from a regional authDomain
    /// (auth.pingone.eu gives api.pingone.eu); required with a custom domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_domain: Option<ApiDomain>,

    /// A second worker application's credentials, for recovery: a Secret in the connection's
    /// namespace with its client id and client secret (client_secret_post), whose roles allow
    /// reading this application's secret (applications:read:secret). A worker cannot read its
    /// own secret; with this, a rotation whose answer was lost is resolved by reading the
    /// application's current secret from PingOne. Without it, a person must (the
    /// ClientSecretRotation condition says what to do and by when).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_credentials_ref: Option<RecoveryCredentialsRef>,
}

/// Where the recovery application's credentials are.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryCredentialsRef {
    /// Name of the Secret in the connection's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub name: String,

    /// Key of the Secret that holds the recovery application's client ID.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id_key: String,

    /// Key of the Secret that holds the recovery application's client secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_secret_key: String,
}

impl RecoveryCredentialsRef {
    /// As a credentials reference, for reading the Secret the same way.
    pub fn as_credentials_ref(&self) -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: self.name.clone(),
            client_id_key: self.client_id_key.clone(),
            client_secret_key: self.client_secret_key.clone(),
            private_key_key: default_private_key_key(),
            key_id_key: default_key_id_key(),
        }
    }
}

fn default_rotate_every() -> String {
    "720h".into()
}

fn default_keep_previous_for() -> String {
    "24h".into()
}

// PingOne's regional Management API domains. (No doc comment: the CRD takes the field's.)
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApiDomain {
    /// North America.
    #[serde(rename = "api.pingone.com")]
    Com,
    /// Europe.
    #[serde(rename = "api.pingone.eu")]
    Eu,
    /// Canada.
    #[serde(rename = "api.pingone.ca")]
    Ca,
    /// Australia.
    #[serde(rename = "api.pingone.com.au")]
    ComAu,
    /// Singapore.
    #[serde(rename = "api.pingone.sg")]
    Sg,
    /// Asia-Pacific (legacy).
    #[serde(rename = "api.pingone.asia")]
    Asia,
}

impl ApiDomain {
    /// The host name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Com => "api.pingone.com",
            Self::Eu => "api.pingone.eu",
            Self::Ca => "api.pingone.ca",
            Self::ComAu => "api.pingone.com.au",
            Self::Sg => "api.pingone.sg",
            Self::Asia => "api.pingone.asia",
        }
    }
}

impl ClientSecretRotation {
    /// The rotation interval and how long the previous secret stays valid.
    pub fn durations(&self) -> Result<(Duration, Duration), String> {
        let every = parse_go_duration(&self.rotate_every).ok_or_else(|| {
            format!(
                "spec.clientSecretRotation.rotateEvery {:?} is not a duration like 720h",
                self.rotate_every
            )
        })?;
        let keep = parse_go_duration(&self.keep_previous_for).ok_or_else(|| {
            format!(
                "spec.clientSecretRotation.keepPreviousFor {:?} is not a duration like 24h",
                self.keep_previous_for
            )
        })?;
        Ok((every, keep))
    }
}

/// A workload to restart after each rotation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload, in the connection's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub name: String,
}

/// Workload kinds that can be restarted (apps/v1).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The plural resource name.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }
}

/// A reference to the Secret with the client credentials, in the connection's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret in the connection's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub name: String,

    /// Key of the Secret that holds the client ID.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id_key: String,

    /// Key of the Secret that holds the client secret (all methods but private_key_jwt).
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_secret_key: String,

    /// Key of the Secret that holds the PEM private key (private_key_jwt only): PKCS #8
    /// (BEGIN PRIVATE KEY), PKCS #1 (BEGIN RSA PRIVATE KEY) or SEC1 (BEGIN EC PRIVATE KEY);
    /// RSA of at least 2048 bits, or EC P-256 or P-384; not encrypted.
    #[serde(default = "default_private_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub private_key_key: String,

    /// Key of the Secret that holds the key id (private_key_jwt only, optional): sent as the
    /// assertion's kid header, so PingOne picks the right key of the application's JWKS. When
    /// the key is absent from the Secret, no kid is sent.
    #[serde(default = "default_key_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key_id_key: String,
}

fn default_client_id_key() -> String {
    "clientId".into()
}

fn default_client_secret_key() -> String {
    "clientSecret".into()
}

fn default_private_key_key() -> String {
    "privateKey".into()
}

fn default_key_id_key() -> String {
    "keyId".into()
}

/// Token endpoint authentication method of the worker application.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TokenEndpointAuthMethod {
    /// client_id and client_secret in the form body (PingOne's default for worker apps).
    #[default]
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// HTTP Basic authentication with the form-urlencoded client id and secret (RFC 6749 §2.3.1).
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// A JWT client assertion signed with the client secret (HS256, HS384 or HS512).
    #[serde(rename = "client_secret_jwt")]
    ClientSecretJwt,
    /// A JWT client assertion signed with the application's private key (RS256/384/512,
    /// ES256/384); the public key is registered on the application.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    /// The name PingOne and RFC 7591 use for the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The derived Secret that holds the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the Secret to write, in the connection's namespace. Default: <connection name>-token.
    /// The operator creates and owns it; it never overwrites a Secret that it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub secret_name: Option<String>,

    /// Extra labels and annotations for the Secret, e.g. for Reloader or Argo CD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<Box<SecretTemplate>>,
    /// Other names for the Secret's data keys (defaults: access_token, token_type, expires_at,
    /// scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Box<TargetKeys>>,

    /// Extra data entries rendered from the token's fields, e.g. an Authorization header line
    /// or an env file. A template is text with placeholders {{ .accessToken }},
    /// {{ .tokenType }}, {{ .expiresAt }}, {{ .issuedAt }} and {{ .scope }}; literal text
    /// cannot contain braces. At most 16 entries; keys must differ from each other and from
    /// the keys above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub extra_entries: Vec<ExtraEntry>,
}

/// Data key names of the token Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetKeys {
    /// Key of the access token. Default: access_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub access_token: Option<String>,
    /// Key of the token type. Default: token_type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub token_type: Option<String>,
    /// Key of the expiry (RFC 3339). Default: expires_at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub expires_at: Option<String>,
    /// Key of the granted scopes (written only when scopes were granted). Default: scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub scope: Option<String>,
}

/// A data entry rendered from the token's fields.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtraEntry {
    /// The data key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// The template: text with {{ .accessToken }}, {{ .tokenType }}, {{ .expiresAt }},
    /// {{ .issuedAt }} or {{ .scope }} placeholders, no other braces.
    #[schemars(length(max = 4096))]
    #[schemars(regex(
        pattern = r"^([^{}]|\{\{ *\.(accessToken|tokenType|expiresAt|issuedAt|scope) *\}\})*$"
    ))]
    pub template: String,
}

/// Labels and annotations added to the derived Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels to add. The operator's own labels (app.kubernetes.io/managed-by and
    /// pingone.tokenops.dev/*) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k != 'app.kubernetes.io/managed-by' && !k.startsWith('pingone.tokenops.dev/'))").message("labels app.kubernetes.io/managed-by and pingone.tokenops.dev/* are set by the operator"))]
    pub labels: BTreeMap<String, String>,

    /// Annotations to add. The operator's own annotations (pingone.tokenops.dev/*) cannot be set
    /// here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('pingone.tokenops.dev/'))").message("annotations pingone.tokenops.dev/* are set by the operator"))]
    pub annotations: BTreeMap<String, String>,
}

/// When to renew the token, before it expires. At most one of the two fields may be set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("set renewBefore or renewBeforePercentage, not both"))]
pub struct RenewalSpec {
    /// Renew this long before the token expires, as a duration such as 10m or 1h30m (units
    /// ms, s, m, h). Capped at 90% of the token's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub renew_before: Option<String>,

    /// Renew when this percentage of the token's lifetime is left (1 to 90). Default 33.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: Option<u8>,
}

/// How far before expiry a token is renewed, resolved from [`RenewalSpec`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RenewBefore {
    /// A fixed duration before expiry.
    Duration(Duration),
    /// A percentage (1..=90) of the token's lifetime before expiry.
    Percentage(u8),
}

/// Default share of the lifetime left when a token is renewed.
pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: u8 = 33;

impl RenewalSpec {
    /// The effective renewal rule. The schema guarantees at most one field is set and that
    /// `renewBefore` is well-formed; a value that still fails to parse yields an error message.
    pub fn renew_before(&self) -> Result<RenewBefore, String> {
        match (&self.renew_before, self.renew_before_percentage) {
            (Some(text), _) => parse_go_duration(text)
                .map(RenewBefore::Duration)
                .ok_or_else(|| {
                    format!("spec.renewal.renewBefore {text:?} is not a duration like 10m or 1h30m")
                }),
            (None, Some(p)) => Ok(RenewBefore::Percentage(p.clamp(1, 90))),
            (None, None) => Ok(RenewBefore::Percentage(DEFAULT_RENEW_BEFORE_PERCENTAGE)),
        }
    }
}

/// Parses a Go-style duration without sign (`1h30m`, `90s`, `1.5h`, `250ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += value * unit;
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// What the operator observed and did, as kstatus and `kubectl wait` read it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingOneConnectionStatus {
    /// The metadata.generation that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled conditions. Ready is True while the token Secret holds an
    /// unexpired token issued for the current spec and credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Name of the Secret that holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,

    /// When the current token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,

    /// When the current token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// When the operator last got a token from PingOne for this connection, also one it could
    /// not write into the Secret yet: the minimum interval between two requests counts from
    /// it, across restarts and leader changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token_obtained_time: Option<Time>,

    /// When the operator will renew the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,

    /// When the last attempt to get a token failed; cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,

    /// Failed attempts since the last success.
    #[serde(default)]
    pub failed_attempts: u32,

    /// When the operator will next ask PingOne for a token after the last failure. Every retry
    /// falls before the current token expires while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,

    /// A keyed digest (never the inputs) of the spec and credentials the last failed request
    /// was made with, so that a restarted operator does not repeat a failure for unchanged
    /// inputs before nextAttemptTime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_inputs_digest: Option<String>,

    /// Type of the current token as PingOne reported it (Bearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,

    /// Scopes PingOne granted with the current token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,

    /// The public key of a private_key_jwt connection as a JWK, to register on the PingOne
    /// application (its JWKS). Never the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<Box<PublicJwk>>,

    /// When the client secret was last rotated (and a token obtained with the new secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_credential_rotation_time: Option<Time>,

    /// When the operator will next rotate the client secret (or retry a failed rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_credential_rotation_time: Option<Time>,

    /// When the secret that the last rotation replaced stops working at PingOne.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_client_secret_expires_at: Option<Time>,

    /// What the current token grants, from its claims once its signature verified against
    /// the environment's JWKS (JWT access tokens only; an opaque token has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_claims: Option<TokenClaims>,

    /// The last value of the pingone.tokenops.dev/renew-requested-at annotation that a new
    /// token was issued for. A value equal to it asks for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub renew_request_served: Option<String>,
}

/// The claims of a verified access token that tell what it grants. Never the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenClaims {
    /// Issuer (iss): the environment's authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Audience (aud): the resources the token is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// The client the token was issued to (client_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Scopes the token carries (scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The PingOne environment (env).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
}

/// A public JSON Web Key (RFC 7517) of an RSA or EC key.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PublicJwk {
    /// Key type: RSA or EC.
    pub kty: String,
    /// Algorithm the key signs with, e.g. RS256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Always sig.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Key id, when the credentials Secret names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve: P-256 or P-384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl PingOneConnection {
    /// The name of the derived Secret: spec.target.secretName or `<name>-token`.
    pub fn target_secret_name(&self) -> String {
        match &self.spec.target.secret_name {
            Some(name) => name.clone(),
            None => format!(
                "{}-token",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// Annotation on a connection that asks for a new token now: the operator renews once per
/// distinct value (RFC 3339 time by convention, e.g. `kubectl pingone renew`), through the rate
/// cap and the failure policy, and records the value it served in `status.renewRequestServed`.
pub const RENEW_REQUESTED_AT: &str = "pingone.tokenops.dev/renew-requested-at";

/// Longest renew-requested-at value honoured (a timestamp, as `kubectl pingone renew` writes,
/// is about 30): a longer one asks for nothing, and is never copied into status.
pub const MAX_RENEW_REQUEST_CHARS: usize = 64;

impl PingOneConnection {
    /// The renew-on-demand request not yet served, if any.
    pub fn pending_renew_request(&self) -> Option<&str> {
        let value = self
            .metadata
            .annotations
            .as_ref()?
            .get(RENEW_REQUESTED_AT)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_RENEW_REQUEST_CHARS)?;
        let served = self
            .status
            .as_ref()
            .and_then(|s| s.renew_request_served.as_deref());
        (served != Some(value)).then_some(value)
    }
}

/// The CRD, with descriptions as `kubectl explain` should show them: doc comments' line breaks
/// within a paragraph joined, so that no sentence is broken mid-line.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut value = serde_json::to_value(PingOneConnection::crd()).expect("the CRD serializes");
    unwrap_descriptions(&mut value);
    serde_json::from_value(value).expect("the CRD deserializes")
}

/// Joins the lines of each paragraph of every `description` in `node`; blank lines (paragraph
/// breaks) and list items (`- `) keep their line breaks.
fn unwrap_descriptions(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = unwrap_text(text);
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

fn unwrap_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if out.is_empty() {
            out.push_str(line);
        } else if line.is_empty() || line.starts_with("- ") || out.ends_with('\n') {
            out.push('\n');
            out.push_str(line);
        } else {
            out.push(' ');
            out.push_str(line.trim_start());
        }
    }
    out
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let crd = crd();
    let yaml = serde_yaml_ng::to_string(&crd).expect("the CRD serializes to YAML");
    let yaml = quote_yaml11_boolean_keys(&yaml);
    format!("# Generated by `pingone-operator crd`; do not edit.\n---\n{yaml}")
}

/// Quotes the mapping keys that YAML 1.1 reads as booleans (`n` and `y` of the JWK schema,
/// among others). serde_yaml_ng writes YAML 1.2, where `n:` is the string "n"; kubectl and
/// Helm read YAML 1.1, where it is `false`, so `kubectl apply -f crds/` would install the
/// properties "false" and "true" and the API server would prune `status.publicJwk.n` and `.y`.
fn quote_yaml11_boolean_keys(yaml: &str) -> String {
    const YAML11_BOOLEANS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.split_inclusive('\n') {
        let body = line.trim_start_matches(' ');
        let indent = &line[..line.len() - body.len()];
        let (dash, rest) = match body.strip_prefix("- ") {
            Some(rest) => ("- ", rest),
            None => ("", body),
        };
        let key = rest.split(':').next().unwrap_or("");
        let after = &rest[key.len()..];
        if YAML11_BOOLEANS.contains(&key) && (after.starts_with(":\n") || after.starts_with(": ")) {
            out.push_str(&format!("{indent}{dash}'{key}'{after}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_boolean_keys_are_quoted_and_mean_the_same() {
        let yaml = "a:\n  n:\n    type: string\n  y: 1\n  - no: x\n  name: n\n  'y': 2\n";
        assert_eq!(
            quote_yaml11_boolean_keys(yaml),
            "a:\n  'n':\n    type: string\n  'y': 1\n  - 'no': x\n  name: n\n  'y': 2\n"
        );
        let crd_text = crd_yaml();
        let reread: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml_ng::from_str(crd_text.split_once("---\n").unwrap().1).unwrap();
        assert_eq!(
            serde_json::to_value(reread).unwrap(),
            serde_json::to_value(crd()).unwrap()
        );
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "10", "m", "10d", "-1m", "1m ", "1..5m", "99999999999h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_renew_request_is_pending_until_served_and_never_over_64_characters() {
        let spec: PingOneConnectionSpec = serde_json::from_value(serde_json::json!({
            "authDomain": "auth.pingone.eu",
            "environmentId": "cd91070f-c371-480e-80b2-753c735f8aa1",
            "credentialsSecretRef": {"name": "creds"},
        }))
        .unwrap();
        let mut conn = PingOneConnection::new("c", spec);
        let ask = |conn: &mut PingOneConnection, value: &str| {
            conn.metadata.annotations =
                Some([(RENEW_REQUESTED_AT.to_string(), value.to_string())].into());
        };
        ask(&mut conn, "2026-12-01T10:00:00Z");
        assert_eq!(conn.pending_renew_request(), Some("2026-12-01T10:00:00Z"));
        conn.status = Some(PingOneConnectionStatus {
            renew_request_served: Some("2026-12-01T10:00:00Z".into()),
            ..Default::default()
        });
        assert_eq!(conn.pending_renew_request(), None, "served");
        ask(&mut conn, &"x".repeat(64));
        assert!(conn.pending_renew_request().is_some());
        ask(&mut conn, &"x".repeat(65));
        assert_eq!(conn.pending_renew_request(), None, "too long");
        ask(&mut conn, "");
        assert_eq!(conn.pending_renew_request(), None, "empty");
    }

    #[test]
    fn renewal_defaults_to_a_third_of_the_lifetime() {
        let spec = RenewalSpec::default();
        assert_eq!(spec.renew_before(), Ok(RenewBefore::Percentage(33)));
        let spec = RenewalSpec {
            renew_before: Some("5m".into()),
            renew_before_percentage: None,
        };
        assert_eq!(
            spec.renew_before(),
            Ok(RenewBefore::Duration(Duration::from_secs(300)))
        );
    }

    #[test]
    fn target_secret_name_defaults_to_name_token() {
        let mut c = PingOneConnection::new(
            "billing",
            PingOneConnectionSpec {
                auth_domain: "auth.pingone.eu".into(),
                environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
                credentials_secret_ref: CredentialsSecretRef {
                    name: "creds".into(),
                    client_id_key: default_client_id_key(),
                    client_secret_key: default_client_secret_key(),
                    private_key_key: default_private_key_key(),
                    key_id_key: default_key_id_key(),
                },
                token_endpoint_auth_method: TokenEndpointAuthMethod::default(),
                client_assertion_algorithm: None,
                client_secret_rotation: None,
                scopes: vec![],
                target: TargetSpec::default(),
                renewal: RenewalSpec::default(),
                rollout_restart_targets: vec![],
            },
        );
        assert_eq!(c.target_secret_name(), "billing-token");
        c.spec.target.secret_name = Some("other".into());
        assert_eq!(c.target_secret_name(), "other");
    }

    #[test]
    fn descriptions_keep_paragraphs_and_join_their_lines() {
        assert_eq!(
            unwrap_text(
                "One sentence\nbroken here.\n\nA second\nparagraph:\n- item one\n- item\n  two"
            ),
            "One sentence broken here.\n\nA second paragraph:\n- item one\n- item two"
        );
        let crd = serde_json::to_value(crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let auth = spec["properties"]["authDomain"]["description"]
            .as_str()
            .unwrap();
        assert!(auth.starts_with("Host name of the PingOne authorization server: a regional domain (auth.pingone.com, auth.pingone.eu"), "{auth}");
        assert!(!auth.contains('\n'), "{auth}");
        let alg = spec["properties"]["clientAssertionAlgorithm"]["description"]
            .as_str()
            .unwrap();
        assert!(
            alg.starts_with("Signing algorithm of the client assertion. For client_secret_jwt"),
            "{alg}"
        );
        let columns = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
        let wide: Vec<&str> = columns
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(wide, ["Method", "Environment", "Renewal"]);
    }

    #[test]
    fn every_schema_property_has_a_description() {
        let crd = serde_json::to_value(crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        fn walk(path: &str, node: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let p = format!("{path}.{name}");
                    if path.starts_with(".status.conditions")
                        || name == "metadata"
                        || name == "apiVersion"
                        || name == "kind"
                    {
                        continue;
                    }
                    if child.get("description").is_none() {
                        missing.push(p.clone());
                    }
                    walk(&p, child, missing);
                }
            }
            if let Some(items) = node.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        walk("", schema, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
