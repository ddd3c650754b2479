//! `UpdatePodSandboxResources` (in-place pod resize, KEP-1287): kubelet has already resized
//! the pod-level cgroup itself and tells the runtime the pod's new overhead and resources.
//! berth records them in the pod's config, so `PodSandboxStatus` (verbose) and anything
//! derived from the pod config later see the resized values. As the CRI says, the call is
//! best effort for kubelet; an unknown pod is NotFound, as in containerd.

use proto::cri::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
use tonic::Status;

use crate::error::Error;
use crate::state::DaemonState;

pub async fn update_pod_sandbox_resources(
    state: &DaemonState,
    req: &UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let pod = crate::lifecycle::record::find_pod(state, &req.pod_sandbox_id)?;
    let lock = state.pods.lock_for(&pod.id);
    let _held = lock.lock().await;
    let (overhead, resources) = (req.overhead.clone(), req.resources.clone());
    state
        .pods
        .modify(&pod.id, move |p| {
            let linux = p.config.linux.get_or_insert_with(Default::default);
            if overhead.is_some() {
                linux.overhead = overhead;
            }
            if resources.is_some() {
                linux.resources = resources;
            }
            true
        })
        .map_err(|e| Error::io("record the pod's resources", &e))?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
