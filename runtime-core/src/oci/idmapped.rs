//! User namespaces and idmapped mounts for OCI runtime handlers. runc 1.1 (Debian 12) joins a
//! user namespace by path but cannot idmap a mount (`mount_setattr(MOUNT_ATTR_IDMAP)` came with
//! runc 1.2), so the shim makes every idmapped mount itself, as for the native executor: the
//! rootfs overlay of idmapped layers ([`crate::executor::mount_rootfs_in_user_namespace`]),
//! image volumes from idmapped layers ([`super::image_volumes::stage`]), and each idmapped bind
//! (CRI `uidMappings`/`gidMappings`) as an idmapped copy of its source attached at
//! `<bundle>/idmapped/<n>`, which the spec binds instead: a bind of an idmapped mount keeps its
//! idmapping. The runtime then only joins the pod's pinned user namespace; its root is the
//! container's rootfs bound at `<bundle>/rootfs` ([`stage_root`]).

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::stat::Mode;
use proto::shim::StartContainer;

use crate::executor::UserNamespace;
use crate::mount_api;
use crate::userns::{self, IdMap};

/// The container's user namespace (the pod's pinned one) with its fd, when it has one.
pub fn open_container_namespace(
    req: &StartContainer,
    ns_dir: &Path,
) -> Result<Option<(UserNamespace, OwnedFd)>, String> {
    if req.userns_uids.is_empty() {
        return Ok(None);
    }
    let ns = UserNamespace {
        path: ns_dir.join(crate::shim::NS_USER),
        map: IdMap::from_proto(&req.userns_uids, &req.userns_gids),
    };
    let fd = crate::executor::open_user_namespace(&ns.path).map_err(|e| e.to_string())?;
    Ok(Some((ns, fd)))
}

/// `req` with each idmapped bind replaced by a plain bind of an idmapped copy of its source
/// staged in `bundle`; `container` is the container's user namespace, used for binds with its
/// mappings (a namespace is made for any other mappings).
pub fn stage(
    req: &StartContainer,
    bundle: &Path,
    container: Option<(&IdMap, &OwnedFd)>,
) -> Result<StartContainer, String> {
    let mut req = req.clone();
    let mut made: Vec<(IdMap, OwnedFd)> = Vec::new();
    for (i, m) in req.mounts.iter_mut().enumerate() {
        if m.tmpfs
            || !m.image_layers.is_empty()
            || (m.uid_mappings.is_empty() && m.gid_mappings.is_empty())
        {
            continue;
        }
        let map = IdMap::from_proto(&m.uid_mappings, &m.gid_mappings);
        let fd = match container {
            Some((container_map, fd)) if *container_map == map => fd,
            _ => {
                if !made.iter().any(|(m, _)| *m == map) {
                    let fd = userns::create(&map).map_err(|e| {
                        format!(
                            "mount {}: user namespace for its idmapping: {e}",
                            m.destination
                        )
                    })?;
                    made.push((map.clone(), fd));
                }
                match made.iter().find(|(m, _)| *m == map) {
                    Some((_, fd)) => fd,
                    None => return Err(format!("mount {}: no user namespace", m.destination)),
                }
            }
        };
        let staged = bundle.join("idmapped").join(i.to_string());
        attach_idmapped(Path::new(&m.source), &staged, fd).map_err(|e| {
            format!(
                "idmapped bind mount {} on {} (does its filesystem support idmapped mounts?): {e}",
                m.source, m.destination
            )
        })?;
        m.source = staged.display().to_string();
        m.uid_mappings.clear();
        m.gid_mappings.clear();
    }
    Ok(req)
}

/// Attaches an idmapped copy of the tree at `source` (with its submounts) at `staged`, a new
/// directory or file of the same kind as `source`.
fn attach_idmapped(source: &Path, staged: &Path, userns: &OwnedFd) -> Result<(), String> {
    let meta = std::fs::metadata(source).map_err(|e| e.to_string())?;
    if let Some(dir) = staged.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    if meta.is_dir() {
        std::fs::create_dir(staged)
    } else {
        std::fs::File::create(staged).map(drop)
    }
    .map_err(|e| format!("create {}: {e}", staged.display()))?;
    let tree = mount_api::idmapped_tree(source, true, userns).map_err(|e| e.to_string())?;
    let target = open(staged, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open {}: {e}", staged.display()))?;
    mount_api::attach(&tree, &target).map_err(|e| format!("attach at {}: {e}", staged.display()))
}

/// Binds the container's mounted root (in the root-only `<state_dir>/rootfs`) at
/// `<bundle>/rootfs`, the runtime's `root.path`, and lets the user namespace's root traverse
/// the bundle ([`grant_bundle`]): runc 1.1 looks the root up from inside the namespace, where
/// the host's root-only directories are closed to it (containerd does the same with its
/// bundles).
pub fn stage_root(rootfs: &Path, bundle: &Path, map: &IdMap) -> Result<PathBuf, String> {
    let root = bundle.join("rootfs");
    std::fs::create_dir(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    nix::mount::mount(
        Some(rootfs),
        &root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind the rootfs at {}: {e}", root.display()))?;
    grant_bundle(bundle, map)?;
    Ok(root)
}

/// Mode 0710 with the group of the user namespace's root: only it may traverse the bundle.
fn grant_bundle(bundle: &Path, map: &IdMap) -> Result<(), String> {
    let Some(gid) = map.host_gid(0) else {
        return Err("the user namespace does not map GID 0".into());
    };
    nix::unistd::chown(bundle, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(|e| format!("chgrp {} {gid}: {e}", bundle.display()))?;
    std::fs::set_permissions(bundle, std::fs::Permissions::from_mode(0o710))
        .map_err(|e| format!("chmod {}: {e}", bundle.display()))
}

/// Detaches every idmapped bind and the root staged in `bundle` (before it is removed).
pub fn unstage(bundle: &Path) {
    let _ = umount2(&bundle.join("rootfs"), MntFlags::MNT_DETACH);
    let Ok(entries) = std::fs::read_dir(bundle.join("idmapped")) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = umount2(&entry.path(), MntFlags::MNT_DETACH);
    }
}
