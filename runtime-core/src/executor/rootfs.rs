//! The container's mount namespace, built by the child around the overlay the shim mounted:
//! `/proc`, `/sys`, `/dev`, the CRI mounts, masked and read-only paths, then `pivot_root`.

use std::os::fd::OwnedFd;

use nix::fcntl::{AtFlags, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::sys::statvfs::statvfs;
use nix::unistd::{Gid, Uid, chdir, fchdir, fchownat, pivot_root};

use super::error::{Context, Failure};
use super::idmap::Idmaps;
use super::in_root::{NONE, open_in_root};
use super::mounts::{self, kept_flags, mount_new};
use super::plan::Plan;
use super::{ContainerProcess, devices};
use crate::steps::{ChildMarks, ChildStep};
use crate::userns::IdMap;

/// Gives the calling process its own mount namespace with the container's rootfs as `/`.
pub(super) fn enter(
    spec: &ContainerProcess,
    plan: &Plan,
    idmaps: &Idmaps,
    marks: &ChildMarks,
) -> Result<(), Failure> {
    let root = isolate_rootfs(spec, plan)?;
    marks.mark(ChildStep::Isolate);
    mount_system(&root, spec.privileged)?;
    if let Some((map, _)) = idmaps.container() {
        give_dev_to_container_root(&root, map)?;
    }
    mount_cgroups(&root, spec)?;
    marks.mark(ChildStep::SystemMounts);
    for m in &spec.mounts {
        super::proc_targets::check(&root, m)?;
        mounts::mount_cri(&root, m, idmaps)?;
    }
    if !spec.privileged {
        for path in &spec.masked_paths {
            mounts::mask(&root, path)?;
        }
        for path in &spec.readonly_paths {
            mounts::make_readonly(&root, path)?;
        }
    }
    marks.mark(ChildStep::CriMounts);
    pivot(&root)?;
    if spec.readonly_rootfs {
        remount_root_readonly()?;
    }
    marks.mark(ChildStep::PivotRoot);
    Ok(())
}

/// A new mount namespace where nothing propagates back to the host, with the rootfs bound
/// onto itself; returns an `O_PATH` fd on the rootfs.
fn isolate_rootfs(spec: &ContainerProcess, plan: &Plan) -> Result<OwnedFd, Failure> {
    let target = spec.rootfs.target();
    unshare(CloneFlags::CLONE_NEWNS).context(|| "unshare mount namespace")?;
    mount(NONE, "/", NONE, plan.root_propagation, NONE)
        .context(|| format!("set propagation {:?} on /", plan.root_propagation))?;
    // pivot_root refuses a shared parent mount; private also keeps host mounts out.
    mount(NONE, target, NONE, MsFlags::MS_PRIVATE, NONE)
        .context(|| format!("make rootfs {} private", target.display()))?;
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(target), target, NONE, bind, NONE)
        .context(|| format!("bind rootfs {} onto itself", target.display()))?;
    open(
        target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open rootfs {}", target.display()))
}

/// `/proc` (a new instance: this process is already in the container's PID namespace),
/// `/sys` (read-only unless privileged) and `/dev`.
fn mount_system(root: &OwnedFd, privileged: bool) -> Result<(), Failure> {
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_new(root, "/proc", "proc", "proc", safe, "")?;
    let sys = if privileged {
        safe
    } else {
        safe | MsFlags::MS_RDONLY
    };
    mount_new(root, "/sys", "sysfs", "sysfs", sys, "")?;
    devices::mount_dev(root, privileged)
}

/// In a user namespace, the container's `/dev`, `/dev/shm` and `/dev/mqueue` belong to its
/// root (as they do in any container), not to the host's root it cannot map.
fn give_dev_to_container_root(root: &OwnedFd, map: &IdMap) -> Result<(), Failure> {
    let (Some(uid), Some(gid)) = (map.host_uid(0), map.host_gid(0)) else {
        return Ok(());
    };
    for path in ["/dev", "/dev/shm", "/dev/mqueue"] {
        let fd = open_in_root(root, path).context(|| format!("open {path} in the rootfs"))?;
        fchownat(
            &fd,
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .context(|| format!("give {path} to the user namespace's root"))?;
    }
    Ok(())
}

/// The container's own cgroups at `/sys/fs/cgroup` (read-only unless privileged), so programs
/// can read their limits: on v1 a tmpfs holding each hierarchy's container cgroup at
/// `/sys/fs/cgroup/<hierarchy>`; on a unified (v2) host the container cgroup itself.
fn mount_cgroups(root: &OwnedFd, spec: &ContainerProcess) -> Result<(), Failure> {
    const BASE: &str = "/sys/fs/cgroup";
    let dirs: Vec<(String, std::path::PathBuf)> = spec
        .cgroup_procs
        .iter()
        .filter_map(|procs| {
            let dir = procs.parent()?;
            let first = dir.strip_prefix(BASE).ok()?.components().next()?;
            Some((first.as_os_str().to_str()?.to_string(), dir.to_path_buf()))
        })
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let bind = |destination: String, source: std::path::PathBuf| {
        let m = super::Mount {
            destination,
            source,
            kind: super::MountKind::Bind {
                readonly: !spec.privileged,
                recursive_readonly: false,
                propagation: super::Propagation::Private,
                idmap: None,
            },
        };
        mounts::mount_cri(root, &m, &Idmaps::default())?;
        mounts::restrict_bind(root, &m.destination, !spec.privileged)
    };
    let unified = nix::sys::statfs::statfs(BASE)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if unified {
        return bind(BASE.to_string(), dirs[0].1.clone());
    }
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_new(root, BASE, "tmpfs", "tmpfs", safe, "mode=755")?;
    for (name, dir) in dirs {
        bind(format!("{BASE}/{name}"), dir)?;
    }
    if spec.privileged {
        return Ok(());
    }
    mounts::make_readonly(root, BASE)
}

/// `pivot_root(".", ".")` and a lazy unmount of the old root stacked on top, as runc does: no
/// temporary directory in the rootfs needed.
fn pivot(root: &OwnedFd) -> Result<(), Failure> {
    let old_root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open the old root")?;
    fchdir(root).context(|| "chdir to the rootfs")?;
    pivot_root(".", ".").context(|| "pivot_root to the rootfs")?;
    fchdir(&old_root).context(|| "chdir to the old root")?;
    // The unmount must not propagate to the host's mounts.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .context(|| "make the old root rslave")?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "unmount the old root")?;
    chdir("/").context(|| "chdir /")
}

fn remount_root_readonly() -> Result<(), Failure> {
    let what = || "remount the rootfs read-only";
    let kept = kept_flags(statvfs("/").context(what)?.flags());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
    mount(NONE, "/", NONE, flags, NONE).context(what)
}
