//! berth containers: cgroups (v1 and v2 behind one interface), rootfs, the native executor and
//! the `berth-shim` binary. This crate grows with the container issues; today it knows how to
//! tell which cgroup layout the host runs.

pub mod cgroups;
