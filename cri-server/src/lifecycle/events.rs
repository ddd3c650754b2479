//! Publishing container lifecycle events (kubelet's evented PLEG reads them through
//! `GetContainerEvents`).
//!
//! Like containerd, each event carries the pod's status and the statuses of all the pod's
//! containers as they are after the change (kubelet rebuilds its pod cache from them), and pod
//! sandboxes have events too, with the sandbox ID as the container ID: CREATED and STARTED on
//! `RunPodSandbox`, STOPPED on `StopPodSandbox`, DELETED on `RemovePodSandbox`.

use proto::cri::{ContainerEventResponse, ContainerEventType, PodSandboxStatus};
use tracing::debug;

use crate::state::DaemonState;
use crate::state::event_hub;
use crate::store::containers;
use crate::store::ids::now_ns;

/// Publishes an event about container `container_id` of pod `pod_id` (a pod's own events use
/// its ID for both), with the pod's current status and its containers' statuses.
pub fn emit(state: &DaemonState, container_id: &str, pod_id: &str, kind: ContainerEventType) {
    let pod_status = if state.events.has_subscribers() {
        state
            .pods
            .get(pod_id)
            .map(|p| crate::view::pod::to_status(&p))
    } else {
        None
    };
    emit_with(state, container_id, pod_id, pod_status, kind);
}

/// Like [`emit`], with a pod status taken earlier (for a pod whose record is already gone).
pub fn emit_with(
    state: &DaemonState,
    container_id: &str,
    pod_id: &str,
    pod_status: Option<PodSandboxStatus>,
    kind: ContainerEventType,
) {
    state.events.count(kind);
    if !state.events.has_subscribers() {
        return;
    }
    let containers_statuses = containers::of_pod(&state.containers, pod_id)
        .iter()
        .map(crate::view::container::to_status)
        .collect();
    debug!(
        container_id,
        pod_id,
        event = event_hub::type_label(kind),
        "container event"
    );
    state.events.publish(ContainerEventResponse {
        container_id: container_id.to_string(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: pod_status,
        containers_statuses,
    });
}
