//! Mounts the classic `mount(2)` cannot make alone: image volumes (an image's layers, read-only,
//! idmapped in a user namespace) and recursive read-only binds.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use super::error::{Context, Failure};
use super::in_root::{Leaf, NONE, create_in_root, fd_path, open_in_root};
use crate::mount_api;
use crate::userns::IdMap;

/// mount(2) copies one page of options, NUL included.
const MAX_OPTIONS: usize = 4095;

/// Makes the mount `mounted` and every mount below it read-only, or fails saying the kernel
/// cannot (no `mount_setattr` before Linux 5.12).
pub(super) fn make_recursively_readonly(
    mounted: &OwnedFd,
    destination: &str,
) -> Result<(), Failure> {
    mount_api::set_attributes(mounted, true, mount_api::MOUNT_ATTR_RDONLY, None).map_err(
        |errno| {
            let op = if errno == Errno::ENOSYS {
                format!(
                    "make {destination} recursively read-only: the kernel has no mount_setattr (Linux 5.12+)"
                )
            } else {
                format!("make {destination} recursively read-only")
            };
            Failure::new(op, errno)
        },
    )
}

/// Mounts an image's layers (top first) read-only, nosuid and nodev at `destination`: a bind
/// of a single layer, else an overlay of them all without an upper layer. With `userns` (the
/// container's user namespace) each layer is idmapped with its mappings first; `prepared` is
/// the idmapped overlay the shim made instead where the kernel's overlayfs takes only attached
/// idmapped layers (before Linux 6.15).
pub(super) fn mount_image(
    root: &OwnedFd,
    destination: &str,
    layers: &[PathBuf],
    sub_path: &str,
    userns: Option<(&IdMap, &OwnedFd)>,
    prepared: Option<&OwnedFd>,
) -> Result<(), Failure> {
    let target_fd = create_in_root(root, destination, Leaf::Dir)?;
    let mounted = match prepared {
        Some(overlay) => {
            let what = || format!("mount image volume on {destination}");
            let tree = overlay.try_clone().context(what)?;
            mount_api::attach(&tree, &target_fd).context(what)?;
            Some(tree)
        }
        None => mount_image_root(&target_fd, destination, layers, userns)?,
    };
    if sub_path.is_empty() {
        return Ok(());
    }
    let image_root = match mounted {
        Some(fd) => fd,
        None => reopen_overlay(root, destination)?,
    };
    narrow_to_sub_path(&image_root, &target_fd, destination, sub_path)
}

/// The overlay just mounted at `destination`, looked up again by name: checked to be a
/// read-only overlayfs mount root, so a name swapped for a symlink meanwhile (by a container
/// sharing a volume above it) cannot make berth clone some other, writable tree.
fn reopen_overlay(root: &OwnedFd, destination: &str) -> Result<OwnedFd, Failure> {
    let what = || format!("reopen the image volume at {destination}");
    let fd = open_in_root(root, destination).context(what)?;
    let fs = nix::sys::statfs::fstatfs(&fd).context(what)?;
    let ro = nix::sys::statvfs::fstatvfs(&fd)
        .context(what)?
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if fs.filesystem_type() != nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
        || !ro
        || !mount_api::is_mount_root(&fd).context(what)?
    {
        return Err(Failure::plain(
            format!("{}: it is no longer the image's read-only overlay", what()),
            Some(Errno::EXDEV),
        ));
    }
    Ok(fd)
}

/// Replaces the image mounted at `destination` by its directory `sub_path`: looked up inside
/// the mounted image (never leaving it), cloned, restricted before it is attached, then the
/// whole image is unmounted from under it.
fn narrow_to_sub_path(
    image_root: &OwnedFd,
    target_fd: &OwnedFd,
    destination: &str,
    sub_path: &str,
) -> Result<(), Failure> {
    let what = || format!("mount {sub_path} of the image volume on {destination}");
    let sub = mount_api::open_in_tree(image_root, sub_path).context(what)?;
    let tree = mount_api::clone_at(&sub).context(what)?;
    let restricted =
        mount_api::MOUNT_ATTR_RDONLY | mount_api::MOUNT_ATTR_NOSUID | mount_api::MOUNT_ATTR_NODEV;
    mount_api::set_attributes(&tree, false, restricted, None).context(what)?;
    nix::mount::umount2(
        fd_path(image_root).as_str(),
        nix::mount::MntFlags::MNT_DETACH,
    )
    .context(what)?;
    mount_api::attach(&tree, target_fd).context(what)
}

/// Mounts the image's layers read-only on `target_fd` (see [`mount_image`]); the mount's fd
/// when it was attached from one (a single layer).
pub(super) fn mount_image_root(
    target_fd: &OwnedFd,
    destination: &str,
    layers: &[PathBuf],
    userns: Option<(&IdMap, &OwnedFd)>,
) -> Result<Option<OwnedFd>, Failure> {
    let target = fd_path(target_fd);
    let idmapped = idmapped_layers(layers, userns, destination)?;
    let sources: Vec<PathBuf> = if idmapped.is_empty() {
        layers.to_vec()
    } else {
        idmapped.iter().map(fd_as_path).collect()
    };
    let what = || format!("mount image volume on {destination}");
    let restricted = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match sources.as_slice() {
        [] => Err(Failure::plain(format!("{}: no layers", what()), None)),
        [single] => {
            // Attached from a detached tree whose fd then refers to the new mount: the
            // read-only remount goes through it, not through `destination` looked up again,
            // which a container sharing a volume above it could have swapped for a symlink.
            let tree = match idmapped.into_iter().next() {
                Some(tree) => tree,
                None => mount_api::clone_tree(single, true).context(what)?,
            };
            mount_api::attach(&tree, target_fd).context(what)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | restricted;
            mount(NONE, fd_path(&tree).as_str(), NONE, flags, NONE)
                .context(|| format!("remount image volume {destination} read-only"))?;
            Ok(Some(tree))
        }
        many => {
            let data = lower_only_options(many);
            if data.len() > MAX_OPTIONS {
                return Err(Failure::plain(
                    format!(
                        "{}: options for {} layers take {} bytes, mount(2) takes {MAX_OPTIONS}",
                        what(),
                        many.len(),
                        data.len()
                    ),
                    Some(Errno::E2BIG),
                ));
            }
            mount(
                Some("overlay"),
                target.as_str(),
                Some("overlay"),
                restricted,
                Some(data.as_str()),
            )
            .map_err(|errno| {
                let op = if errno == Errno::EINVAL && !idmapped.is_empty() {
                    format!(
                        "{} (overlayfs takes detached idmapped layers from Linux 6.15)",
                        what()
                    )
                } else {
                    what()
                };
                Failure::new(op, errno)
            })?;
            Ok(None)
        }
    }
}

/// Detached, idmapped copies of `layers` when the container has a user namespace; empty
/// otherwise. The overlay takes its own references: the fds only live until it is mounted.
fn idmapped_layers(
    layers: &[PathBuf],
    userns: Option<(&IdMap, &OwnedFd)>,
    destination: &str,
) -> Result<Vec<OwnedFd>, Failure> {
    let Some((_, ns)) = userns else {
        return Ok(Vec::new());
    };
    layers
        .iter()
        .map(|layer| {
            mount_api::idmapped_tree(layer, false, ns).context(|| {
                format!(
                    "idmap layer {} of the image volume {destination}",
                    layer.display()
                )
            })
        })
        .collect()
}

/// `/proc/self/fd/N`: a path the kernel resolves to the mount `fd` refers to.
pub(super) fn fd_as_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// overlayfs options for a read-only overlay of `layers` (top first), without upper layer.
fn lower_only_options(layers: &[PathBuf]) -> String {
    let lowers: Vec<_> = layers.iter().map(|d| d.to_string_lossy()).collect();
    format!("lowerdir={}", lowers.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_overlays_have_only_lower_layers_top_first() {
        let layers = [PathBuf::from("/s/top"), PathBuf::from("/s/base")];
        assert_eq!(lower_only_options(&layers), "lowerdir=/s/top:/s/base");
    }
}
