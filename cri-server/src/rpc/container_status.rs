//! `ContainerStatus`: the container's record, refreshed from its shim, as CRI status.

use std::collections::HashMap;

use proto::cri::{ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ImageSpec};
use tonic::Status;

use crate::lifecycle::record::find;
use crate::lifecycle::refresh::refresh;
use crate::state::DaemonState;
use crate::store::containers::ContainerRecord;
use crate::view::container::to_status;

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
