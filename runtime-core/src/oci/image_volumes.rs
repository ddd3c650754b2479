//! Image volumes with a sub path, for OCI runtime handlers. The runtime can mount a whole
//! image (a read-only overlay of its layers, or a bind of its only layer) from the spec, but
//! a directory inside it must be looked up in the mounted image: the shim mounts the image at
//! `<bundle>/images/<n>`, resolves the sub path inside it (`openat2` with `RESOLVE_IN_ROOT`, so
//! no symlink of the image leads out of it), and the spec binds the resolved directory. The
//! staged image is read-only and its layers immutable, so the resolved path cannot change
//! before the runtime binds it.
//!
//! In a user namespace every image volume is staged that way, from layers idmapped through
//! the container's namespace (as the native executor mounts them): runc 1.1 cannot idmap
//! what it mounts, and an image's files owned by the host's root would be nobody's inside.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use proto::shim::StartContainer;

use crate::userns::IdMap;

const NONE: Option<&str> = None;

/// `req` with each image volume that has a sub path (every one with `userns`, the
/// container's user namespace) staged and replaced by a single-layer image volume of the
/// staged image or the resolved directory in it.
pub fn stage(
    req: &StartContainer,
    bundle: &Path,
    userns: Option<(&IdMap, &OwnedFd)>,
) -> Result<StartContainer, String> {
    let mut req = req.clone();
    for (i, m) in req.mounts.iter_mut().enumerate() {
        if m.image_layers.is_empty() || (m.image_sub_path.is_empty() && userns.is_none()) {
            continue;
        }
        let staged = bundle.join("images").join(i.to_string());
        std::fs::create_dir_all(&staged)
            .map_err(|e| format!("create {}: {e}", staged.display()))?;
        match userns {
            None => mount_image(&m.image_layers, &staged).map_err(|e| e.to_string()),
            Some(userns) => {
                let layers: Vec<PathBuf> = m.image_layers.iter().map(PathBuf::from).collect();
                crate::executor::mount_image_volume(&staged, &layers, Some(userns))
                    .map_err(|e| e.to_string())
            }
        }
        .map_err(|e| format!("image volume {}: mount the image: {e}", m.destination))?;
        if m.image_sub_path.is_empty() {
            m.image_layers = vec![staged.display().to_string()];
            continue;
        }
        let resolved = resolve(&staged, &m.image_sub_path).map_err(|e| {
            format!(
                "image volume {}: sub path `{}`: {e}",
                m.destination, m.image_sub_path
            )
        })?;
        m.image_layers = vec![resolved.display().to_string()];
        m.image_sub_path.clear();
    }
    Ok(req)
}

/// Unmounts every image staged in `bundle` (before the bundle is removed).
pub fn unstage(bundle: &Path) {
    let Ok(entries) = std::fs::read_dir(bundle.join("images")) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = umount2(&entry.path(), MntFlags::MNT_DETACH);
    }
}

fn mount_image(layers: &[String], target: &Path) -> nix::Result<()> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match layers {
        [only] => {
            mount(Some(only.as_str()), target, NONE, MsFlags::MS_BIND, NONE)?;
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
            mount(NONE, target, NONE, remount, NONE).inspect_err(|_| {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            })
        }
        layers => {
            let options = format!("lowerdir={}", layers.join(":"));
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                flags,
                Some(options.as_str()),
            )
        }
    }
}

/// The real path of `sub_path` looked up inside `root` as if `root` were `/`.
fn resolve(root: &Path, sub_path: &str) -> Result<PathBuf, String> {
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = sub_path.trim_start_matches('/');
    let found = openat2(&dir, if relative.is_empty() { "." } else { relative }, how)
        .map_err(|e| e.to_string())?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", found.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    if !real.starts_with(root) {
        return Err(format!("resolves outside the image ({})", real.display()));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_resolve_inside_the_root_even_through_absolute_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/sub")).expect("dirs");
        std::os::unix::fs::symlink("/data", root.join("link")).expect("symlink");
        std::os::unix::fs::symlink("../../..", root.join("data/up")).expect("symlink");
        assert_eq!(
            resolve(root, "data/sub").expect("sub"),
            root.join("data/sub")
        );
        assert_eq!(
            resolve(root, "/link/sub").expect("link"),
            root.join("data/sub")
        );
        assert_eq!(
            resolve(root, "data/up").expect("clamped"),
            root.to_path_buf()
        );
        assert!(resolve(root, "missing").is_err());
    }
}
