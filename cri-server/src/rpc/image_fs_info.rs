//! `ImageFsInfo`: space used by image layers and blobs, and by the containers' writable layers
//! (`container_filesystems`, which kubelet's image and container garbage collection read).

use std::time::{SystemTime, UNIX_EPOCH};

use proto::cri::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

use crate::state::DaemonState;

/// Image store usage, and the writable layers of every container (their walks are cached
/// like the stats RPCs' ones).
pub async fn image_fs_info(state: &DaemonState) -> ImageFsInfoResponse {
    let usage = state.images.usage();
    let (bytes, inodes) = writable_layers(state).await;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let fs = |mountpoint: String, bytes, inodes| FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier { mountpoint }),
        used_bytes: Some(UInt64Value { value: bytes }),
        inodes_used: Some(UInt64Value { value: inodes }),
    };
    ImageFsInfoResponse {
        image_filesystems: vec![fs(
            state.images.root().display().to_string(),
            usage.bytes,
            usage.inodes,
        )],
        container_filesystems: vec![fs(
            state
                .config
                .root_dir
                .join("containers")
                .display()
                .to_string(),
            bytes,
            inodes,
        )],
    }
}

/// Total bytes and inodes of every container's writable layer; containers whose layer
/// vanished meanwhile count as empty.
async fn writable_layers(state: &DaemonState) -> (u64, u64) {
    let layers: Vec<(String, std::path::PathBuf)> = state
        .containers
        .list()
        .into_iter()
        .map(|c| (c.id, c.upper))
        .collect();
    let cache = state.stats.clone();
    tokio::task::spawn_blocking(move || {
        layers
            .iter()
            .filter_map(|(id, upper)| cache.layers().usage(id, upper).ok())
            .fold((0, 0), |(b, i), u| (b + u.bytes, i + u.inodes))
    })
    .await
    .unwrap_or((0, 0))
}
