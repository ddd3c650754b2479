//! `RuntimeConfig` (settings kubelet must agree with, today the cgroup driver) and
//! `UpdateRuntimeConfig` (the pod CIDR kubelet hands over).

use proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigResponse, UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse,
};

use ipnet::IpNet;
use runtime_core::cgroups;
use tonic::Status;
use tracing::{info, warn};

use crate::error::Error;
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

/// `UpdateRuntimeConfig`: kubelet hands over the node's pod CIDR(s). berth records them (shown
/// in `Status` verbose info as `runtimeConfig`) but never allocates from them: the built-in
/// network keeps using `network.pod_cidr` (a /16 or narrower the operator chose), and CNI
/// plugins use their own IPAM config. A difference is logged as a warning.
pub async fn update_runtime_config(
    state: &DaemonState,
    req: &UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    let cidr = req
        .runtime_config
        .as_ref()
        .and_then(|c| c.network_config.as_ref())
        .map(|n| n.pod_cidr.trim().to_string())
        .unwrap_or_default();
    let nets = parse_pod_cidrs(&cidr).map_err(|e| {
        Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {e}"))
    })?;
    let previous = state.kubelet_config.pod_cidr();
    state
        .kubelet_config
        .set_pod_cidr(&cidr)
        .map_err(|e| Error::io("record kubelet's pod CIDR", &e))?;
    if previous != cidr {
        info!(pod_cidr = %cidr, previous = %previous, "UpdateRuntimeConfig: kubelet's pod CIDR recorded");
    }
    let own = state.config.network.pod_cidr;
    let network = state.pod_runtime.network_status().unwrap_or_default();
    let v4 = nets.iter().find_map(|n| match n {
        IpNet::V4(v4) => Some(*v4),
        IpNet::V6(_) => None,
    });
    if network == "bridge"
        && let Some(v4) = v4
        && v4 != own
    {
        warn!(kubelet_pod_cidr = %v4, network_pod_cidr = %own, "kubelet's pod CIDR differs from berth's network.pod_cidr: pods keep getting addresses from network.pod_cidr");
    }
    Ok(UpdateRuntimeConfigResponse {})
}

/// Kubelet's pod CIDR value: empty, or one CIDR per address family separated by commas.
fn parse_pod_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let nets = s
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<IpNet>()
                .map_err(|_| format!("`{part}` is not a CIDR such as `10.244.1.0/24`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if nets.len() > 2 {
        return Err(format!("`{s}` has more than one CIDR per address family"));
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_are_one_per_family_and_must_parse() {
        assert!(parse_pod_cidrs("").expect("empty").is_empty());
        assert_eq!(parse_pod_cidrs("10.244.1.0/24").expect("v4").len(), 1);
        assert_eq!(
            parse_pod_cidrs("10.244.1.0/24, fd00:1::/64")
                .expect("dual")
                .len(),
            2
        );
        for bad in ["10.244.1.0", "x/24", "10.0.0.0/8,10.1.0.0/16,fd00::/64"] {
            assert!(parse_pod_cidrs(bad).is_err(), "{bad} accepted");
        }
    }
}
