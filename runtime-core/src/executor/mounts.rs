//! Mounting inside the rootfs without following a symlink out of it.
//!
//! Every container path is resolved with `openat2(RESOLVE_IN_ROOT)` relative to the rootfs (a
//! symlink in the image pointing at `/etc` means the rootfs's `/etc`, never the host's), and
//! missing directories are created one component at a time the same way. Mounts then target
//! the resulting fd through `/proc/self/fd/N` — the shim's `/proc`, since all of this runs
//! before `pivot_root`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{SFlag, fstat};
use nix::sys::statvfs::{FsFlags, fstatvfs};

use super::error::{Context, Failure};
use super::idmap::Idmaps;
use super::in_root::{Leaf, NONE, create_in_root, fd_path, open_existing, open_in_root};
use super::{Mount, MountKind, Propagation};
use crate::mount_api;

/// Mounts a new `fstype` filesystem on the container path `path`, created if missing.
pub(super) fn mount_new(
    root: &OwnedFd,
    path: &str,
    source: &str,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), Failure> {
    let target = create_in_root(root, path, Leaf::Dir)?;
    mount(
        Some(source),
        fd_path(&target).as_str(),
        Some(fstype),
        flags,
        (!data.is_empty()).then_some(data),
    )
    .context(|| format!("mount {fstype} on {path}"))
}

/// Applies one CRI mount; `idmaps` holds the user namespaces of idmapped ones.
pub(super) fn mount_cri(root: &OwnedFd, m: &Mount, idmaps: &Idmaps) -> Result<(), Failure> {
    match &m.kind {
        MountKind::Bind {
            readonly,
            recursive_readonly,
            propagation,
            idmap,
        } => {
            let userns = match idmap {
                Some(map) => Some(idmaps.for_mount(map, &m.destination)?),
                None => None,
            };
            let target = bind(root, m, userns)?;
            if *readonly {
                remount_readonly(&target)
                    .context(|| format!("remount {} read-only", m.destination))?;
            }
            if *recursive_readonly {
                super::image_mount::make_recursively_readonly(&target, &m.destination)?;
            }
            set_propagation(&target, *propagation, &m.destination)
        }
        MountKind::Tmpfs { options } => {
            let (flags, data) = parse_options(options);
            mount_new(root, &m.destination, "tmpfs", "tmpfs", flags, &data)
        }
        MountKind::Image { layers, sub_path } => super::image_mount::mount_image(
            root,
            &m.destination,
            layers,
            sub_path,
            idmaps.container(),
            idmaps.image(&m.destination),
        ),
    }
}

/// Binds `m.source` (recursively, idmapped through `userns` if given) on its destination;
/// returns an fd on the new mount itself.
///
/// The source is cloned as a detached tree (`open_tree`) and attached on the destination's fd
/// (`move_mount`); the fd of the tree then refers to the attached mount, so the read-only
/// remount and the propagation change that follow go through it, never through the
/// destination's name again. A sibling container sharing the volume that holds the
/// destination could swap that name for a symlink between the bind and the remount, leaving
/// a `readOnly` mount writable (CVE-2021-30465 class).
fn bind(root: &OwnedFd, m: &Mount, userns: Option<&OwnedFd>) -> Result<OwnedFd, Failure> {
    let target = create_in_root(root, &m.destination, source_leaf(&m.source)?)?;
    let what = || format!("bind mount {} on {}", m.source.display(), m.destination);
    let tree = match userns {
        None => mount_api::clone_tree(&m.source, true).map_err(|errno| {
            Failure::new(
                format_args!(
                    "clone mount tree of {} (open_tree needs Linux 5.2+)",
                    m.source.display()
                ),
                errno,
            )
        })?,
        Some(userns) => mount_api::idmapped_tree(&m.source, true, userns).map_err(|errno| {
            Failure::new(
                format_args!(
                    "idmapped bind mount {} on {} (does its filesystem support idmapped mounts?)",
                    m.source.display(),
                    m.destination
                ),
                errno,
            )
        })?,
    };
    mount_api::attach(&tree, &target).context(what)?;
    Ok(tree)
}

fn set_propagation(
    mounted: &OwnedFd,
    propagation: Propagation,
    destination: &str,
) -> Result<(), Failure> {
    let kind = match propagation {
        Propagation::Private => MsFlags::MS_PRIVATE,
        Propagation::RSlave => MsFlags::MS_SLAVE,
        Propagation::RShared => MsFlags::MS_SHARED,
    };
    let target = fd_path(mounted);
    mount(NONE, target.as_str(), NONE, MsFlags::MS_REC | kind, NONE)
        .context(|| format!("set {propagation:?} propagation on {destination}"))
}

/// Whether a bind of `source` needs a directory or a file as mountpoint; a missing source is
/// created as a directory, as kubelet expects of a runtime.
fn source_leaf(source: &Path) -> Result<Leaf, Failure> {
    match fs::metadata(source) {
        Ok(meta) if meta.is_dir() => Ok(Leaf::Dir),
        Ok(_) => Ok(Leaf::File),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(source)
                .context(|| format!("create bind mount source {}", source.display()))?;
            Ok(Leaf::Dir)
        }
        Err(e) => Err(e).context(|| format!("bind mount source {}", source.display())),
    }
}

/// Hides `path` from the container: `/dev/null` over a file, an empty read-only tmpfs over a
/// directory. A missing path is skipped.
pub(super) fn mask(root: &OwnedFd, path: &str) -> Result<(), Failure> {
    let Some(target) = open_existing(root, path)? else {
        return Ok(());
    };
    let mode = fstat(&target)
        .context(|| format!("stat masked path {path}"))?
        .st_mode;
    let target = fd_path(&target);
    if SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        mount(
            Some("tmpfs"),
            target.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            NONE,
        )
    } else {
        // The container's own /dev/null (made before the masks), as runc binds, not the
        // host's devtmpfs node.
        let null = open_in_root(root, "/dev/null").context(|| "open the container's /dev/null")?;
        let null = fd_path(&null);
        mount(
            Some(null.as_str()),
            target.as_str(),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
    }
    .context(|| format!("mask {path}"))
}

/// Makes `path` read-only by binding it onto itself and remounting the bind read-only. A
/// missing path is skipped.
pub(super) fn make_readonly(root: &OwnedFd, path: &str) -> Result<(), Failure> {
    let Some(target) = open_existing(root, path)? else {
        return Ok(());
    };
    let target = fd_path(&target);
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(target.as_str()), target.as_str(), NONE, flags, NONE)
        .context(|| format!("bind {path} onto itself"))?;
    let mounted = open_in_root(root, path).context(|| format!("open {path} in the rootfs"))?;
    remount_readonly(&mounted).context(|| format!("remount {path} read-only"))
}

/// Remounts the bind mounted at `path` nosuid, nodev and noexec (and read-only if asked),
/// keeping its other flags: what runc gives the container's cgroup hierarchies.
pub(super) fn restrict_bind(root: &OwnedFd, path: &str, readonly: bool) -> Result<(), Failure> {
    let mounted = open_in_root(root, path).context(|| format!("open {path} in the rootfs"))?;
    let kept = kept_flags(
        fstatvfs(&mounted)
            .context(|| format!("statvfs {path}"))?
            .flags(),
    );
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | kept;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(NONE, fd_path(&mounted).as_str(), NONE, flags, NONE)
        .context(|| format!("remount {path} nosuid,nodev,noexec"))
}

/// Remounts the mount whose root `mounted` refers to read-only, keeping its nosuid, nodev,
/// noexec and atime flags (a bind remount would otherwise drop them).
pub(super) fn remount_readonly(mounted: &OwnedFd) -> nix::Result<()> {
    let kept = kept_flags(fstatvfs(mounted)?.flags());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
    mount(NONE, fd_path(mounted).as_str(), NONE, flags, NONE)
}

/// The mount flags among `current` that a remount must repeat.
pub(super) fn kept_flags(current: FsFlags) -> MsFlags {
    [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| current.contains(*st))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

/// Splits mount(8)-style options into flags and filesystem data (`size=1m,mode=755`).
pub(super) fn parse_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match flag(option) {
            Some((flag, true)) => flags |= flag,
            Some((flag, false)) => flags &= !flag,
            None => data.push(option),
        }
    }
    (flags, data.join(","))
}

/// The flag an option sets (`true`) or clears (`false`).
fn flag(option: &str) -> Option<(MsFlags, bool)> {
    Some(match option {
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "suid" => (MsFlags::MS_NOSUID, false),
        "nodev" => (MsFlags::MS_NODEV, true),
        "dev" => (MsFlags::MS_NODEV, false),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "exec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        "async" => (MsFlags::MS_SYNCHRONOUS, false),
        "dirsync" => (MsFlags::MS_DIRSYNC, true),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "atime" => (MsFlags::MS_NOATIME, false),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "diratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "norelatime" => (MsFlags::MS_RELATIME, false),
        "strictatime" => (MsFlags::MS_STRICTATIME, true),
        "nostrictatime" => (MsFlags::MS_STRICTATIME, false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options("size=1m,ro,nosuid,mode=1777,rw,noexec");
        assert_eq!(flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(data, "size=1m,mode=1777");
    }

    #[test]
    fn remount_keeps_restrictive_flags() {
        let kept = kept_flags(FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC | FsFlags::ST_RDONLY);
        assert_eq!(kept, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
    }
}
