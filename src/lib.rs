//! pingone-operator: keeps a PingOne worker application's OAuth 2 access token fresh in a
//! Kubernetes Secret.
//!
//! - [`api`]: the `PingOneConnection` custom resource.
//! - [`pingone`]: the PingOne token endpoint client.
//! - [`controller`]: the reconciler and its pure decision modules.
//! - [`operator`], [`cli`], [`server`], [`metrics`], [`telemetry`]: the runtime shell.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod pingone;
pub mod server;
pub mod telemetry;
