//! berth pod sandboxes: namespace creation and pinning, hostname, `/etc/hosts`,
//! `resolv.conf`, the pod cgroup parent and the pod network (built-in bridge or CNI).

pub mod cni;
pub mod dns;
pub mod network;
pub mod pod;
pub mod sysctl;
