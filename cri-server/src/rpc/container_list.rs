//! `ListContainers` (filters: ID or unique prefix, state, pod, labels) and
//! `ReopenContainerLog`.

use std::time::Duration;

use proto::cri::{
    Container, ContainerFilter, ImageSpec, ListContainersRequest, ListContainersResponse,
    ReopenContainerLogRequest, ReopenContainerLogResponse,
};
use proto::shim::{ContainerRef, ShimRequest, shim_request::Kind};
use runtime_core::shim::client;
use tonic::Status;

use crate::lifecycle::record::find;
use crate::lifecycle::refresh::{recorded, refresh};
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::view::container::cri_state;

/// The containers the filter selects, as recorded.
pub async fn list_containers(
    state: &DaemonState,
    req: &ListContainersRequest,
) -> ListContainersResponse {
    let filter = req.filter.as_ref();
    let candidates = match filter.map(|f| f.id.as_str()) {
        Some(id) if !id.is_empty() => state.containers.find(id).into_iter().collect(),
        _ => state.containers.list(),
    };
    // From the records and the exit records shims write, not from the shims: kubelet lists
    // every second, and asking each Running container's shim would wake every shim each
    // second (keeping its code mapped) and cost a round trip per container.
    let mut containers = Vec::new();
    for rec in candidates {
        let rec = recorded(state, rec);
        if matches(&rec, filter) {
            containers.push(to_item(&rec));
        }
    }
    ListContainersResponse { containers }
}

fn matches(rec: &ContainerRecord, filter: Option<&ContainerFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    let state = f.state.as_ref().map(|s| s.state);
    crate::store::filter::state_and_labels_match(
        state,
        cri_state(rec) as i32,
        &f.label_selector,
        &rec.config.labels,
    )
}

fn to_item(rec: &ContainerRecord) -> Container {
    Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.pod_id.clone(),
        metadata: Some(rec.metadata()),
        image: Some(ImageSpec {
            image: rec.image.clone(),
            ..Default::default()
        }),
        image_ref: rec.image_ref.clone(),
        state: cri_state(rec) as i32,
        created_at: rec.created_at,
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        image_id: rec.image_id.clone(),
    }
}

/// Reopens a running container's log after kubelet rotated it.
pub async fn reopen_container_log(
    state: &DaemonState,
    req: &ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = refresh(state, find(state, &req.container_id)?).await;
    if rec.phase != ContainerPhase::Running {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            rec.id
        )));
    }
    let pod = state
        .pods
        .get(&rec.pod_id)
        .ok_or_else(|| Status::not_found(format!("pod sandbox {} not found", rec.pod_id)))?;
    let request = ShimRequest {
        kind: Some(Kind::ReopenLog(ContainerRef { id: rec.id.clone() })),
    };
    let socket = pod.host.shim_socket.clone();
    client::request(&socket, request, Duration::from_secs(5))
        .await
        .map_err(|e| Status::internal(format!("reopen log of {}: {e}", rec.id)))?;
    Ok(ReopenContainerLogResponse {})
}
