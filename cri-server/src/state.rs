//! What every RPC handler shares: the effective config and facts about the host.

use runtime_core::cgroups::{self, CgroupLayout};

use crate::config::Config;

/// Shared, read-mostly daemon state handed to the gRPC services.
#[derive(Debug)]
pub struct DaemonState {
    pub config: Config,
    /// The host's cgroup layout, or why it could not be detected.
    pub cgroup_layout: Result<CgroupLayout, String>,
}

impl DaemonState {
    /// Builds the state for `config`, probing the host once.
    pub fn new(config: Config) -> DaemonState {
        let cgroup_layout =
            cgroups::detect_layout("/sys/fs/cgroup".as_ref()).map_err(|e| e.to_string());
        DaemonState {
            config,
            cgroup_layout,
        }
    }
}
