//! `RuntimeConfig`: settings kubelet must agree with, today the cgroup driver.

use proto::cri::{CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigResponse};
use runtime_core::cgroups;

use crate::state::DaemonState;

/// Answers `RuntimeConfig` with the cgroup driver berth names cgroups with.
pub fn runtime_config(state: &DaemonState) -> RuntimeConfigResponse {
    let driver = match state.config.cgroup_driver {
        cgroups::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        cgroups::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
