//! `PodSandboxStatus`.

use std::collections::HashMap;

use proto::cri::{PodSandboxStatusRequest, PodSandboxStatusResponse};
use tonic::Status;

use crate::lifecycle::record::find_pod;
use crate::state::DaemonState;
use crate::store::ids::now_ns;
use crate::store::pods::PodPhase;
use crate::view::pod::to_status;

pub async fn pod_sandbox_status(
    state: &DaemonState,
    req: &PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let rec =
        crate::lifecycle::shim_death::check_pod(state, find_pod(state, &req.pod_sandbox_id)?).await;
    let mut info = HashMap::new();
    if req.verbose {
        let alive = rec.phase == PodPhase::Ready && state.pod_runtime.shim_alive(&rec.host).await;
        let doc = serde_json::json!({
            "pid": rec.host.shim_pid,
            "shimAlive": alive,
            "shimSocket": rec.host.shim_socket,
            "netnsPath": rec.host.netns,
            "nsDir": rec.host.ns_dir,
            "cgroup": rec.host.cgroup,
            "network": rec.host.network,
            "podFiles": rec.host.files_dir,
            "runtimeHandler": rec.runtime_handler,
            "config": rec.config,
        });
        info.insert("info".to_string(), doc.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(to_status(&rec)),
        info,
        // kubelet's evented PLEG builds the pod's status from these instead of listing.
        containers_statuses: crate::store::containers::of_pod(&state.containers, &rec.id)
            .iter()
            .map(crate::view::container::to_status)
            .collect(),
        timestamp: now_ns(),
    })
}
