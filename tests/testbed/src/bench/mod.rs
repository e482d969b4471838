//! The scale benchmark of `make bench` (the `pingone-bench` binary): the operator binary, run
//! as a separate process against the local control plane and the PingOne stand-in, measured
//! against a *floor*, a plain client in the bench process that does the same unavoidable work
//! (token requests, Secret applies, status patches) at the same concurrency, in the same run.
//!
//! - [`objects`]: the objects the bench creates (credentials Secrets, connections, unrelated
//!   Secrets) and namespaces;
//! - [`observe`]: watches that timestamp when connections become Ready and when token Secrets
//!   change, the same way for the operator and for the floor;
//! - [`floor`]: the plain client, on a runtime of its own so that its CPU time can be read;
//! - [`operator`]: the operator process, its `/metrics` and its `/proc` figures;
//! - [`prom`]: Prometheus text parsing (the operator's and the API server's metrics);
//! - [`stats`]: medians and percentiles;
//! - [`scenarios`]: the scenarios of issue 6 and the result table;
//! - [`scale`]: issue 12's scenarios at scale (10,000 connections under a cap, Secret churn).

pub mod floor;
pub mod objects;
pub mod observe;
pub mod operator;
pub mod prom;
pub mod scale;
pub mod scenarios;
pub mod stats;

/// The environment id every bench connection uses (one license, one environment, as the rate
/// cap is per auth domain and environment).
pub const ENV_ID: &str = "b3c6e0a4-5d2f-4b8e-9a71-0c3d5e7f9a12";
/// The regional auth domain every bench connection uses.
pub const AUTH_DOMAIN: &str = "auth.pingone.eu";
/// The inputs digest annotation of token Secrets.
pub const INPUTS_DIGEST: &str = "pingone.tokenops.dev/inputs-digest";
/// The label the operator puts on its token Secrets.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pingone-operator";
