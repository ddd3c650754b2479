//! The host's device nodes as OCI `linux.devices`, for privileged containers: the same nodes
//! the native executor copies into a privileged container's `/dev` (same skip list, same
//! depth), which the OCI runtime then creates.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use crate::executor::devices::{MAX_DEPTH, SKIP};

/// Every character and block device below `/dev`.
pub fn list() -> Result<Vec<LinuxDevice>, String> {
    let mut out = Vec::new();
    walk(Path::new("/dev"), Path::new("/dev"), 0, &mut out)?;
    Ok(out)
}

fn walk(
    host_dir: &Path,
    container_dir: &Path,
    depth: usize,
    out: &mut Vec<LinuxDevice>,
) -> Result<(), String> {
    let entries =
        fs::read_dir(host_dir).map_err(|e| format!("list {}: {e}", host_dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("list {}: {e}", host_dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        let host = entry.path();
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue; // gone since the listing
        };
        let kind = meta.file_type();
        let path: PathBuf = container_dir.join(&name);
        if kind.is_dir() && depth < MAX_DEPTH {
            walk(&host, &path, depth + 1, out)?;
            continue;
        }
        let typ = if kind.is_char_device() {
            LinuxDeviceType::C
        } else if kind.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(libc::major(rdev) as i64)
            .minor(libc::minor(rdev) as i64)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()
            .map_err(|e| format!("device {}: {e}", host.display()))?;
        out.push(device);
    }
    Ok(())
}
