//! berth containers, below berthd: [`cgroups`] (v1 and v2 behind one trait, written directly),
//! the native [`executor`] (namespaces, the rootfs and its mounts, capabilities, exec) with
//! [`seccomp`] (profiles compiled to BPF), [`apparmor`], [`userns`] and [`mount_api`] (the new
//! mount API), the CRI log writer ([`logs`]), and [`shim`]: the `berth-shim` process (one per
//! pod, synchronous, no async runtime) and berthd's async client for it;
//! [`steps`] times the parts of a start.

pub mod apparmor;
pub mod cgroups;
pub mod checkpoint;
pub mod executor;
pub mod logs;
pub mod memory;
pub mod mount_api;
pub mod oci;
pub mod seccomp;
pub mod shim;
pub mod steps;
pub mod userns;
