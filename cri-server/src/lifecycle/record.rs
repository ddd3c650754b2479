//! `ContainerStatus`, and keeping a container's record in step with its process: a running
//! container's state comes from its pod's shim, or from the exit record the shim left.

use std::collections::HashMap;
use std::time::Duration;

use proto::cri::{
    ContainerEventType, ContainerResources, ContainerState, ContainerStatus,
    ContainerStatusRequest, ContainerStatusResponse, ContainerUser, ImageSpec, LinuxContainerUser,
};
use proto::shim::{ContainerInfo, ContainerRef, ShimRequest, shim_request::Kind};
use runtime_core::shim::client;
use tonic::Status;

use crate::rpc::sandbox_run::now_ns;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};

const SHIM_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn container_status(
    state: &DaemonState,
    req: &ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = refresh(state, find(state, &req.container_id)?).await;
    let mut info = HashMap::new();
    if req.verbose {
        let doc = serde_json::json!({
            "pid": rec.pid,
            "sandboxID": rec.pod_id,
            "rootfs": rec.rootfs,
            "upper": rec.upper,
            "lower": rec.lower,
            "cgroup": rec.cgroup,
            "process": rec.process,
            "imageVolumes": rec.image_volumes,
            "config": rec.config,
        });
        info.insert("info".to_string(), doc.to_string());
    }
    let mut status = to_status(&rec);
    current_image_names(state, &rec, &mut status);
    Ok(ContainerStatusResponse {
        status: Some(status),
        info,
    })
}

/// The container with this ID or unique prefix, or NotFound.
pub fn find(state: &DaemonState, id: &str) -> Result<ContainerRecord, Status> {
    state
        .containers
        .find(id)
        .ok_or_else(|| Status::not_found(format!("container {id} not found")))
}

/// Updates a Running record from the shim (or the shim's exit record); returns it.
pub async fn refresh(state: &DaemonState, rec: ContainerRecord) -> ContainerRecord {
    if rec.phase != ContainerPhase::Running {
        return rec;
    }
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return mark_exited(state, rec, None, "Unknown", "the container's pod is gone");
    };
    let socket = pod.host.shim_socket.clone();
    let request = ShimRequest {
        kind: Some(Kind::ContainerState(ContainerRef { id: rec.id.clone() })),
    };
    let answer =
        tokio::task::spawn_blocking(move || client::request(&socket, request, SHIM_TIMEOUT)).await;
    let recorded = || runtime_core::shim::containers::read_status(&rec.status_path);
    match answer {
        Ok(Ok(resp)) => match resp.container {
            Some(info) if info.exited => finish(state, rec, &info),
            _ => rec,
        },
        // The shim is gone: the exit it recorded, else the shim died before it could.
        Ok(Err(e)) if e.is_gone() => match recorded() {
            Ok(info) if info.exited => finish(state, rec, &info),
            _ => {
                crate::lifecycle::shim_death::shim_died(state, &pod);
                let id = rec.id.clone();
                state.containers.get(&id).unwrap_or(rec)
            }
        },
        // A busy or slow shim: still running as far as berthd knows, unless it recorded the exit.
        _ => match recorded() {
            Ok(info) if info.exited => finish(state, rec, &info),
            _ => rec,
        },
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

/// CRI state of a record.
pub fn cri_state(rec: &ContainerRecord) -> ContainerState {
    match rec.phase {
        ContainerPhase::Created => ContainerState::ContainerCreated,
        ContainerPhase::Running => ContainerState::ContainerRunning,
        ContainerPhase::Exited => ContainerState::ContainerExited,
    }
}

/// The container's mounts; an image volume's `image.image_ref` is the ID of the image it
/// mounts (as `PullImage` returned it: kubelet reports it as the volume's image digest).
fn mounts_with_image_refs(rec: &ContainerRecord) -> Vec<proto::cri::Mount> {
    let mut mounts = rec.config.mounts.clone();
    for v in &rec.image_volumes {
        if let Some(image) = mounts.get_mut(v.index).and_then(|m| m.image.as_mut()) {
            image.image_ref = v.image_id.clone();
        }
    }
    mounts
}

/// The CRI status of a container record.
pub fn to_status(rec: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        state: cri_state(rec) as i32,
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        image: Some(ImageSpec {
            image: rec.image.clone(),
            user_specified_image: rec
                .config
                .image
                .as_ref()
                .map(|i| i.user_specified_image.clone())
                .unwrap_or_default(),
            ..Default::default()
        }),
        image_ref: rec.image_ref.clone(),
        reason: rec.reason.clone(),
        message: rec.message.clone(),
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        mounts: mounts_with_image_refs(rec),
        log_path: rec.log_path.clone(),
        resources: rec.config.linux.as_ref().and_then(|l| {
            l.resources.clone().map(|r| ContainerResources {
                linux: Some(r),
                windows: None,
            })
        }),
        image_id: rec.image_id.clone(),
        stop_signal: crate::container::stop_signal::of_number(rec.stop_signal) as i32,
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: i64::from(rec.process.uid),
                gid: i64::from(rec.process.gid),
                supplemental_groups: rec
                    .process
                    .additional_gids
                    .iter()
                    .map(|g| i64::from(*g))
                    .collect(),
            }),
        }),
    }
}

/// Names the image as containerd does for kubelet: `image` is the image's first repo tag and
/// `image_ref` its first repo digest while the image is still stored (else what was recorded at
/// creation: the name as requested and the digest or ID); `image_id` is always the config
/// digest, the node-local image ID.
fn current_image_names(state: &DaemonState, rec: &ContainerRecord, status: &mut ContainerStatus) {
    let Some(image) = state.images.resolve(&rec.image_id) else {
        return;
    };
    if let Some(tag) = image.repo_tags.first() {
        status.image = Some(ImageSpec {
            image: tag.clone(),
            ..Default::default()
        });
    }
    if let Some(digest) = image.repo_digests.first() {
        status.image_ref = digest.clone();
    }
}
