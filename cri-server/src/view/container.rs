//! The CRI view of a container record.

use proto::cri::{
    ContainerResources, ContainerState, ContainerStatus, ContainerUser, ImageSpec,
    LinuxContainerUser,
};

use crate::store::containers::{ContainerPhase, ContainerRecord};

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
        stop_signal: crate::view::stop_signal::of_number(rec.stop_signal) as i32,
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
