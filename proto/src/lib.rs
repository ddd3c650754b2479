//! berth's wire types.
//!
//! - [`cri`]: the Kubernetes CRI v1 types, clients and server traits, re-exported from
//!   `k8s-cri` so every berth crate uses one type set.
//! - [`shim`]: the protocol between `berthd` and `berth-shim`: prost messages carried as
//!   length-prefixed frames over a unix socket.
//! - [`nri`]: the Node Resource Interface (containerd/nri v0.12.1) messages, generated from
//!   the unchanged upstream `proto/nri/api.proto`; the `nri` crate carries them over ttrpc.

pub use k8s_cri::v1 as cri;

pub mod shim;

/// NRI v0.12.1 messages (package `nri.pkg.api.v1alpha1`).
#[allow(clippy::all, missing_docs)]
pub mod nri {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}
