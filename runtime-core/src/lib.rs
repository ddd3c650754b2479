//! berth containers: cgroups (v1 and v2 behind one interface), rootfs, the native executor and
//! the `berth-shim` binary. This crate grows with the container issues; today: cgroups and the
//! per-pod `berth-shim` (namespaces, pinning, the shim protocol).

pub mod apparmor;
pub mod cgroups;
pub mod executor;
pub mod logs;
pub mod mount_api;
pub mod oci;
pub mod seccomp;
pub mod shim;
pub mod userns;
