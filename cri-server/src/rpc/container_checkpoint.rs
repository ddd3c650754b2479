//! `CheckpointContainer`: checks the request and the container, then hands the work to
//! `runtime_core::checkpoint` (CRIU, the archive) and maps its errors to gRPC statuses.
//! Restoring is `container/restore.rs` (CreateContainer from an archive).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};
use runtime_core::checkpoint::{self, CheckpointError, CriuError, archive};
use tonic::Status;
use tracing::info;

use crate::lifecycle::{record, refresh};
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::pods::PodRecord;

/// When the request sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn checkpoint_container(
    state: &DaemonState,
    req: &CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, Status> {
    let id = req.container_id.as_str();
    if id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let location = Path::new(&req.location);
    if !location.is_absolute() || location.file_name().is_none() {
        return Err(Status::invalid_argument(format!(
            "location `{}` must be the absolute path of the archive to write",
            req.location
        )));
    }
    if req.timeout < 0 {
        return Err(Status::invalid_argument(format!(
            "timeout {} must not be negative",
            req.timeout
        )));
    }
    let timeout = match req.timeout {
        0 => DEFAULT_TIMEOUT,
        s => Duration::from_secs(s as u64),
    };
    let lock = state.containers.lock_for(id);
    let _guard = lock.lock().await;
    let rec = record::find(state, id)?;
    let rec = refresh::refresh(state, rec).await;
    if rec.phase != ContainerPhase::Running {
        return Err(Status::failed_precondition(format!(
            "container {} is {:?}: only a running container can be checkpointed",
            rec.id, rec.phase
        )));
    }
    if rec.config.tty {
        return Err(Status::failed_precondition(format!(
            "container {}: berth does not checkpoint containers with a TTY",
            rec.id
        )));
    }
    let pod = record::find_pod(state, &rec.pod_id)?;
    let work_parent = state.containers.dir_of(&rec.id);
    let (config, spec) = (config_dump(&rec), spec_dump(&rec, &pod));
    let (upper, log) = (rec.upper.clone(), rec.log_path.clone());
    let (location, pid) = (location.to_path_buf(), rec.pid);
    let done = tokio::task::spawn_blocking(move || {
        checkpoint::checkpoint(&checkpoint::Request {
            pid,
            location: &location,
            work_parent: &work_parent,
            upper: &upper,
            log_path: (!log.is_empty()).then_some(Path::new(&log)),
            config,
            spec,
            timeout,
        })
    })
    .await
    .map_err(|e| Status::internal(format!("checkpoint task: {e}")))?;
    done.map_err(|e| status(&rec.id, e))?;
    info!(container_id = %rec.id, location = %req.location, "CheckpointContainer");
    Ok(CheckpointContainerResponse {})
}

fn status(id: &str, e: CheckpointError) -> Status {
    let msg = format!("checkpoint container {id}: {e}");
    match e {
        CheckpointError::Criu(CriuError::Timeout { .. }) => Status::deadline_exceeded(msg),
        CheckpointError::Criu(CriuError::Spawn(_)) | CheckpointError::Io(_) => {
            Status::internal(msg)
        }
        CheckpointError::Criu(_) | CheckpointError::Unsupported(_) => {
            Status::failed_precondition(msg)
        }
    }
}

fn config_dump(rec: &ContainerRecord) -> archive::ConfigDump {
    archive::ConfigDump {
        id: rec.id.clone(),
        name: rec.metadata().name,
        rootfs_image: rec.image_id.clone(),
        rootfs_image_ref: rec.image_ref.clone(),
        rootfs_image_name: rec.image.clone(),
        runtime: "berth".into(),
        created_time: archive::rfc3339(rec.created_at),
        ..Default::default()
    }
}

/// The container's OCI spec as `spec.dump`, with the annotations CRI-O writes (which
/// checkpointctl shows and CRI-O's restore reads).
fn spec_dump(rec: &ContainerRecord, pod: &PodRecord) -> serde_json::Value {
    let m = rec.metadata();
    let pm = pod.config.metadata.clone().unwrap_or_default();
    let sorted = |h: &std::collections::HashMap<String, String>| {
        serde_json::to_string(&h.iter().collect::<BTreeMap<_, _>>()).unwrap_or_default()
    };
    let annotations = BTreeMap::from([
        ("io.kubernetes.container.name", m.name.clone()),
        ("io.kubernetes.pod.name", pm.name.clone()),
        ("io.kubernetes.pod.namespace", pm.namespace.clone()),
        ("io.kubernetes.pod.uid", pm.uid.clone()),
        ("io.kubernetes.cri-o.ContainerID", rec.id.clone()),
        ("io.kubernetes.cri-o.SandboxID", pod.id.clone()),
        (
            "io.kubernetes.cri-o.Metadata",
            serde_json::json!({"name": m.name, "attempt": m.attempt}).to_string(),
        ),
        ("io.kubernetes.cri-o.Labels", sorted(&rec.config.labels)),
        (
            "io.kubernetes.cri-o.Annotations",
            sorted(&rec.config.annotations),
        ),
        ("io.kubernetes.cri-o.ImageName", rec.image.clone()),
        ("io.kubernetes.cri-o.ImageRef", rec.image_id.clone()),
        ("io.kubernetes.cri-o.LogPath", rec.log_path.clone()),
    ]);
    let mounts: Vec<_> = rec
        .config
        .mounts
        .iter()
        .map(|mnt| {
            serde_json::json!({
                "destination": mnt.container_path,
                "type": "bind",
                "source": mnt.host_path,
                "options": if mnt.readonly { vec!["rbind", "ro"] } else { vec!["rbind", "rw"] },
            })
        })
        .collect();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": rec.config.tty,
            "user": {"uid": rec.process.uid, "gid": rec.process.gid},
            "args": rec.process.args,
            "env": rec.process.env,
            "cwd": rec.process.cwd,
        },
        "root": {"path": rec.rootfs, "readonly": rec.config.linux.as_ref()
            .and_then(|l| l.security_context.as_ref()).is_some_and(|s| s.readonly_rootfs)},
        "hostname": pod.config.hostname,
        "mounts": mounts,
        "annotations": annotations,
    })
}
