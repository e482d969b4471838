//! PingOne token endpoint client: which auth domains may receive credentials, the token URL,
//! the client credentials request over a locked-down HTTPS client, and the interpretation of
//! the answer into a [`TokenResponse`] or a classified [`TokenError`].
//!
//! Everything that decides (URL building, the allow-list, response parsing, error
//! classification) is a pure function tested without I/O; [`TokenClient`] only moves bytes.

mod assertion;
mod client;
mod domain;
mod error;
pub mod jose;
mod jwks;
mod management;
mod private_key;
mod ratelimit;
mod response;
mod secret;

pub use assertion::{ASSERTION_LIFETIME, ASSERTION_TYPE};
pub use client::{
    AuthMethod, ClientAuth, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_REQUESTS_PER_SECOND, DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT, TokenClient,
    TokenClientConfig, TokenRequest, install_crypto_provider,
};
pub use domain::{
    AuthDomainPolicy, REGIONAL_AUTH_DOMAINS, is_environment_id, is_regional, normalize_domain,
    token_url,
};
pub use error::{ClientBuildError, MAX_DESCRIPTION_CHARS, TokenError, sanitize_message};
pub use jwks::{
    Claims, JWKS_MIN_REFETCH, REASON_JWKS_UNAVAILABLE, REASON_KEY_UNKNOWN,
    REASON_SIGNATURE_INVALID, Verification, expected_issuer, jwks_url,
};
pub use management::{
    API_DOMAINS, ApplicationSecret, ManagementError, RotatedSecret, api_domain_of,
};
pub use private_key::{KeyError, KeyKind, PrivateKey, algorithm_name};
pub use ratelimit::{Admission, RateLimiter};
pub use response::{
    Credential, ErrorContext, MAX_EXPIRES_IN, MAX_RETRY_AFTER, MIN_EXPIRES_IN, TokenResponse,
    classify_error_response, parse_retry_after, parse_token_response,
};
pub use secret::{ExposeSecret, REDACTED, SecretString};
