//! `RemovePodSandbox`: stop the pod if needed, then remove everything it held.
//! Removing an unknown (already removed) pod succeeds.

use proto::cri::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use runtime_core::steps::StepClock;
use tonic::Status;
use tracing::info;

use crate::error::Error;
use crate::pod::spec::pod_spec;
use crate::pod::stop;
use crate::state::DaemonState;

pub async fn remove_pod_sandbox(
    state: &DaemonState,
    req: &RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    let id = req.pod_sandbox_id.as_str();
    if id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    stop::stop(state, id).await?;
    let mut clock = StepClock::start();
    let lock = state.pods.lock_for(id);
    let _guard = lock.lock().await;
    let Some(rec) = state.pods.get(id) else {
        return Ok(RemovePodSandboxResponse {});
    };
    for c in crate::store::containers::of_pod(&state.containers, id) {
        let lock = state.containers.lock_for(&c.id);
        let _g = lock.lock().await;
        // As it is now that this call holds its lock, if another has not removed it.
        if let Some(c) = state.containers.get(&c.id) {
            crate::container::remove::remove(state, c).await?;
        }
    }
    clock.mark("containers");
    failpoint::hit("remove_pod.after_containers");
    let spec = pod_spec(&rec.id, &rec.config)?;
    state
        .pod_runtime
        .remove(&spec, &rec.host)
        .await
        .map_err(Error::from)?;
    clock.mark("cgroup_and_files");
    state
        .pods
        .remove(id)
        .map_err(|e| Status::internal(format!("remove record of pod {id}: {e}")))?;
    clock.mark("record");
    info!(pod_id = %id, "RemovePodSandbox");
    crate::nri_hooks::remove_pod_sandbox(state, &rec).await; // NRI
    crate::lifecycle::events::emit_with(
        state,
        id,
        id,
        Some(crate::view::pod::to_status(&rec)),
        proto::cri::ContainerEventType::ContainerDeletedEvent,
    );
    state
        .metrics
        .record_steps("RemovePodSandbox", id, clock.steps());
    Ok(RemovePodSandboxResponse {})
}
