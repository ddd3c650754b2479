//! berth's wire types.
//!
//! - [`cri`]: the Kubernetes CRI v1 types, clients and server traits, re-exported from
//!   `k8s-cri` so every berth crate uses one type set.
//! - [`shim`]: the protocol between `berthd` and `berth-shim`: prost messages carried as
//!   length-prefixed frames over a unix socket.

pub use k8s_cri::v1 as cri;

pub mod shim;
