//! `RuntimeConfig`: settings kubelet must agree with, today the cgroup driver.

use proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigResponse, UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse,
};
use runtime_core::cgroups;

use tonic::Status;

use crate::errors::{area, not_implemented};
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

/// `UpdateRuntimeConfig`: kubelet hands over the node's pod CIDR.
pub async fn update_runtime_config(
    _state: &DaemonState,
    _req: &UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    Err(not_implemented("UpdateRuntimeConfig", area::UPDATES))
}
