//! berth pod sandboxes: namespace creation and pinning, hostname, `/etc/hosts`,
//! `resolv.conf`, the pod cgroup parent and the pod network (built-in bridge or CNI).
//!
//! Empty until the pod sandbox issue lands; `cri-server` answers the sandbox RPCs with
//! `Unimplemented` meanwhile.
