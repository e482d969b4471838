//! Test bed for pingone-operator: a local Kubernetes control plane built from Go modules
//! and a PingOne token endpoint stand-in. Test support only; nothing here ships in the operator.

pub mod admission;
pub mod bench;
pub mod controlplane;
pub mod node;
mod owned;
pub mod soak;
pub mod standin;
