//! `GetContainerEvents`: the container lifecycle event stream for kubelet's evented PLEG, and
//! the helpers RPCs call to publish events.
//!
//! Like containerd, each event carries the pod's status and the statuses of all the pod's
//! containers as they are after the change (kubelet rebuilds its pod cache from them), and pod
//! sandboxes have events too, with the sandbox ID as the container ID: CREATED and STARTED on
//! `RunPodSandbox`, STOPPED on `StopPodSandbox`, DELETED on `RemovePodSandbox`.

use std::pin::Pin;

use proto::cri::{ContainerEventResponse, ContainerEventType, GetEventsRequest, PodSandboxStatus};
use tokio_stream::Stream;
use tonic::Status;
use tracing::debug;

use crate::lifecycle::event_hub;
use crate::lifecycle::record;
use crate::rpc::sandbox_run::now_ns;
use crate::rpc::sandbox_status;
use crate::state::DaemonState;
use crate::store::containers;

/// The server-streaming answer of `GetContainerEvents`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// Subscribes the caller to every event from now on (the request has no fields).
pub async fn get_container_events(
    state: &DaemonState,
    _req: &GetEventsRequest,
) -> Result<EventStream, Status> {
    let sub = state.events.subscribe()?;
    Ok(Box::pin(sub))
}

/// Publishes an event about container `container_id` of pod `pod_id` (a pod's own events use
/// its ID for both), with the pod's current status and its containers' statuses.
pub fn emit(state: &DaemonState, container_id: &str, pod_id: &str, kind: ContainerEventType) {
    let pod_status = if state.events.has_subscribers() {
        state
            .pods
            .get(pod_id)
            .map(|p| sandbox_status::to_status(&p))
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
        .map(record::to_status)
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
