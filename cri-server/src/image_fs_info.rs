//! `ImageFsInfo`: space used by image layers and blobs (and, once containers exist, their
//! writable layers, which live on the same filesystem).

use std::time::{SystemTime, UNIX_EPOCH};

use images::Images;
use proto::cri::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

/// Reports image filesystem usage; container filesystems share berth's root dir.
pub fn image_fs_info(images: &Images) -> ImageFsInfoResponse {
    let usage = images.usage();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mountpoint = images.root().display().to_string();
    let fs = |bytes, inodes| FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.clone(),
        }),
        used_bytes: Some(UInt64Value { value: bytes }),
        inodes_used: Some(UInt64Value { value: inodes }),
    };
    ImageFsInfoResponse {
        image_filesystems: vec![fs(usage.bytes, usage.inodes)],
        container_filesystems: vec![fs(0, 0)],
    }
}
