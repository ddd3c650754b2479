//! The user namespaces a container's idmapped mounts need, opened (the pod's, pinned) or made
//! (any other mapping a mount asks for) by the shim before `fork`: making one writes
//! `/proc/<helper>/uid_map`, which only the shim's view of `/proc` names correctly.

use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::error::{Context, Failure};
use super::{ContainerProcess, MountKind};
use crate::userns::{self, IdMap};

/// User namespace fds for one container's idmapped mounts.
#[derive(Debug, Default)]
pub(super) struct Idmaps {
    /// The pod's user namespace the container runs in, with its mappings.
    container: Option<(IdMap, OwnedFd)>,
    /// Namespaces made for mounts whose mappings differ from the pod's.
    others: Vec<(IdMap, OwnedFd)>,
    /// Image volumes' idmapped overlays made by the shim (by destination), where the kernel
    /// takes only attached idmapped layers (see `overlay::idmapped_image_overlay`).
    images: Vec<(String, OwnedFd)>,
}

impl Idmaps {
    /// Opens the container's user namespace and makes one for every other mapping its binds
    /// ask for.
    pub fn prepare(spec: &ContainerProcess) -> Result<Idmaps, Failure> {
        let mut idmaps = Idmaps::default();
        if let Some(ns) = &spec.user_ns {
            let fd = open(&ns.path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .context(|| format!("open the pod's user namespace {}", ns.path.display()))?;
            idmaps.container = Some((ns.map.clone(), fd));
        }
        for m in &spec.mounts {
            let MountKind::Bind {
                idmap: Some(map), ..
            } = &m.kind
            else {
                continue;
            };
            if idmaps.find(map).is_some() {
                continue;
            }
            let fd = userns::create(map).map_err(|e| {
                Failure::plain(
                    format!(
                        "user namespace for the idmapped mount {}: {e}",
                        m.destination
                    ),
                    e.raw_os_error().map(nix::errno::Errno::from_raw),
                )
            })?;
            idmaps.others.push((map.clone(), fd));
        }
        Ok(idmaps)
    }

    /// Makes the idmapped overlays of the container's image volumes that its own mount
    /// namespace cannot make on this kernel. After the rootfs is mounted: that mount learns
    /// how the kernel takes idmapped layers.
    pub fn prepare_images(&mut self, spec: &ContainerProcess) -> Result<(), Failure> {
        let Some((_, ns)) = &self.container else {
            return Ok(());
        };
        for m in &spec.mounts {
            let MountKind::Image { layers, .. } = &m.kind else {
                continue;
            };
            if let Some(fd) = super::overlay::idmapped_image_overlay(layers, ns, &m.destination)? {
                self.images.push((m.destination.clone(), fd));
            }
        }
        Ok(())
    }

    /// The idmapped overlay the shim made for the image volume at `destination`, if any.
    pub fn image(&self, destination: &str) -> Option<&OwnedFd> {
        self.images
            .iter()
            .find(|(d, _)| d == destination)
            .map(|(_, fd)| fd)
    }

    /// The container's user namespace and its mappings, if it has one.
    pub fn container(&self) -> Option<(&IdMap, &OwnedFd)> {
        self.container.as_ref().map(|(map, fd)| (map, fd))
    }

    /// The user namespace carrying `map`.
    pub fn find(&self, map: &IdMap) -> Option<&OwnedFd> {
        self.container
            .iter()
            .chain(&self.others)
            .find(|(m, _)| m == map)
            .map(|(_, fd)| fd)
    }

    /// [`Idmaps::find`], or a failure naming the mount.
    pub fn for_mount(&self, map: &IdMap, destination: &str) -> Result<&OwnedFd, Failure> {
        self.find(map).ok_or_else(|| {
            Failure::plain(
                format!("no user namespace prepared for the idmapped mount {destination}"),
                None,
            )
        })
    }
}
