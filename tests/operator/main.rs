//! Integration tests of the operator on a real control plane (etcd, kube-apiserver,
//! kube-controller-manager) and the PingOne stand-in. One control plane for the whole binary;
//! each test has its own namespace, stand-in and operator instance.

mod bench_small;
mod chart_conventions;
mod chart_upgrade;
mod client_assertion;
mod conditions;
mod connection_state;
mod event_messages;
mod failure_policy;
mod faults;
mod foreign_secret;
mod gitops;
mod guard_rails;
mod hostile;
mod installed;
mod kubernetes_errors;
mod lifecycle;
mod node;
mod operability;
mod output_shapes;
mod process;
mod rate_admission;
mod renew_request;
mod resilience;
mod rotation;
mod rotation_faults;
mod schema;
mod secret_rotation;
mod support;
mod token_claims;
