//! A pod whose shim died while its pod was Ready (killed, crashed): nothing reaps its
//! containers or records their exits any more. berthd notices — when a call asks the shim
//! about a container, when `PodSandboxStatus` finds the shim's process gone, and in the exit
//! watcher's periodic sweep — and then kills what is left of the pod's running containers,
//! marks them exited (reason [`SHIM_DIED`]) unless the shim recorded their exit, and marks the
//! pod NotReady. Stopping and removing the pod then clean up as usual.

use std::time::Duration;

use proto::cri::ContainerEventType;
use runtime_core::shim::client;
use tracing::warn;

use crate::state::DaemonState;
use crate::store::containers::ContainerPhase;
use crate::store::pods::{PodPhase, PodRecord};

/// The `reason` of a container whose shim died before it could record the container's exit.
pub const SHIM_DIED: &str = "ShimDied";

/// How long a shim may take to answer the liveness check (only a shim that cannot be reached
/// at all counts as dead; a slow one is alive).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether nothing answers on the pod's shim socket (refused, missing, or hung up on).
async fn shim_gone(pod: &PodRecord) -> bool {
    let socket = pod.host.shim_socket.clone();
    let ping = client::ping(&socket, PING_TIMEOUT).await;
    matches!(ping, Err(e) if e.is_gone())
}

/// Cheap first check for status calls: the shim's process no longer exists (or is a zombie).
fn shim_process_gone(pod: &PodRecord) -> bool {
    let pid = pod.host.shim_pid;
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
}

/// `PodSandboxStatus`'s check of a Ready pod: if its shim process is gone (and its socket
/// confirms it), handles the death; returns the pod's record as it now is.
pub async fn check_pod(state: &DaemonState, pod: PodRecord) -> PodRecord {
    if pod.phase != PodPhase::Ready || !shim_process_gone(&pod) || !shim_gone(&pod).await {
        return pod;
    }
    shim_died(state, &pod);
    state.pods.get(&pod.id).unwrap_or(pod)
}

/// The periodic check: every Ready pod whose shim socket no longer answers.
pub async fn sweep(state: &DaemonState) {
    for pod in state.pods.filter(|p| p.phase == PodPhase::Ready) {
        if shim_gone(&pod).await {
            shim_died(state, &pod);
        }
    }
}

/// Records the death of `pod`'s shim: its running containers exit (their processes, orphaned
/// now, are killed), and the pod becomes NotReady. Safe to call more than once.
pub fn shim_died(state: &DaemonState, pod: &PodRecord) {
    let message = format!(
        "the pod's shim (pid {}) died; the container's exit status is unknown",
        pod.host.shim_pid
    );
    let running = state
        .containers
        .filter(|c| c.pod_id == pod.id && c.phase == ContainerPhase::Running);
    for rec in running {
        // An exit the shim recorded before it died is the real one.
        if let Ok(info) = runtime_core::shim::containers::read_status(&rec.status_path)
            && info.exited
        {
            crate::lifecycle::record::finish(state, rec, &info);
            continue;
        }
        state.pod_runtime.remove_container_cgroup(&rec.cgroup);
        crate::lifecycle::record::mark_exited(state, rec, None, SHIM_DIED, &message);
    }
    let not_ready = |p: &mut PodRecord| {
        let changed = p.phase == PodPhase::Ready;
        p.phase = PodPhase::NotReady;
        changed
    };
    match state.pods.modify(&pod.id, not_ready) {
        Ok(Some(_)) => {
            warn!(pod_id = %pod.id, shim_pid = pod.host.shim_pid, "pod shim died; pod is NotReady");
            crate::lifecycle::events::emit(
                state,
                &pod.id,
                &pod.id,
                ContainerEventType::ContainerStoppedEvent,
            );
        }
        Ok(None) => {}
        Err(e) => warn!(pod_id = %pod.id, error = %e, "record pod NotReady after its shim died"),
    }
}
