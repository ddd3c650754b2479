//! Keeping a container's record in step with its process: a running container's state comes
//! from its pod's shim, or from the exit record the shim left; the Running → Exited change is
//! recorded once, however many observers see it. Also the lookups by ID every caller uses.

use crate::error::Error;
use proto::cri::ContainerEventType;
use proto::shim::ContainerInfo;

use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::ids::now_ns;
use crate::store::pods::{Lookup, PodRecord};

/// The container with this ID or unique prefix, or NotFound.
pub fn find(state: &DaemonState, id: &str) -> Result<ContainerRecord, Error> {
    state
        .containers
        .find(id)
        .ok_or_else(|| Error::not_found(format!("container {id} not found")))
}

/// The pod with this ID or unique ID prefix, or NotFound.
pub fn find_pod(state: &DaemonState, id: &str) -> Result<PodRecord, Error> {
    match state.pods.lookup(id) {
        Lookup::Found(r) => Ok(*r),
        Lookup::Missing => Err(Error::not_found(format!("pod sandbox {id} not found"))),
        Lookup::Ambiguous(n) => Err(Error::not_found(format!(
            "pod sandbox id prefix {id} matches {n} pods"
        ))),
    }
}

/// Records the exit the shim reported for a Running container (once, however many observers
/// see it) and publishes CONTAINER_STOPPED; returns the record as it now is.
pub fn finish(state: &DaemonState, rec: ContainerRecord, info: &ContainerInfo) -> ContainerRecord {
    // Any OOM kill in the container's cgroup (of its main process or a child it waits for).
    let reason = if info.exit_code != 0 && state.pod_runtime.container_oom_killed(&rec.cgroup) {
        "OOMKilled"
    } else if info.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    mark_exited(state, rec, Some(info), reason, "")
}

/// Records that a Running container exited (once, however many observers see it) and
/// publishes CONTAINER_STOPPED; returns the record as it now is.
pub fn mark_exited(
    state: &DaemonState,
    rec: ContainerRecord,
    info: Option<&ContainerInfo>,
    reason: &str,
    message: &str,
) -> ContainerRecord {
    let exited = |r: &mut ContainerRecord| {
        if r.phase != ContainerPhase::Running {
            return false;
        }
        r.phase = ContainerPhase::Exited;
        r.exit_code = info.map_or(255, |i| i.exit_code);
        r.finished_at = info.map_or_else(now_ns, |i| i.finished_at);
        r.reason = reason.into();
        r.message = message.into();
        true
    };
    match state.containers.modify(&rec.id, exited) {
        Ok(Some(now)) => {
            tracing::info!(container_id = %now.id, exit_code = now.exit_code, reason, "container exited");
            crate::nri_hooks::container_stopped(state, &now); // NRI
            crate::lifecycle::events::emit(
                state,
                &now.id,
                &now.pod_id,
                ContainerEventType::ContainerStoppedEvent,
            );
            now
        }
        // Another observer recorded the exit first, or the record is gone.
        Ok(None) => state.containers.get(&rec.id).unwrap_or(rec),
        Err(e) => {
            tracing::warn!(container_id = %rec.id, error = %e, "record container exit");
            rec
        }
    }
}
