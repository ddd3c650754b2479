//! The CRI mounts' newer kinds: recursive read-only binds, idmapped binds (`uidMappings` /
//! `gidMappings`) and image volumes (`Mount.image`). Checked at `CreateContainer` (an image
//! volume's image is resolved and held there, so it cannot vanish while the container exists)
//! and turned into the shim's [`MountSpec`]s at start.

use std::path::PathBuf;

use crate::error::Error;
use proto::cri::{self, ContainerConfig, MountPropagation};
use proto::shim::MountSpec;
use runtime_core::mount_api;
use runtime_core::userns::IdMap;

use crate::state::DaemonState;
use crate::store::containers::{ContainerRecord, ImageVolume};

/// Checks every recursive read-only, idmapped and image mount of `config`; resolves the image
/// volumes' images (NotFound naming the mount and image when one is not pulled).
pub fn check(state: &DaemonState, config: &ContainerConfig) -> Result<Vec<ImageVolume>, Error> {
    let mut volumes = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let field = format!("config.mounts[{i}]");
        if m.recursive_read_only {
            check_recursive_readonly(m, &field)?;
        }
        mappings(m, &field)?;
        if let Some(spec) = &m.image {
            volumes.push(image_volume(state, i, spec, m, &field)?);
        }
    }
    Ok(volumes)
}

/// The CRI rules for `recursive_read_only`: `readonly` set, propagation private, and a
/// kernel that can do it.
fn check_recursive_readonly(m: &cri::Mount, field: &str) -> Result<(), Error> {
    let invalid = |why: &str| {
        Err(Error::invalid(format!(
            "{field}.recursive_read_only: {why}"
        )))
    };
    if !m.readonly {
        return invalid("needs readonly to be set too");
    }
    if m.propagation != MountPropagation::PropagationPrivate as i32 {
        return invalid(
            "needs propagation PROPAGATION_PRIVATE (submounts propagated from the host could not be kept read-only)",
        );
    }
    if !mount_api::mount_setattr_supported() {
        return invalid(
            "the kernel cannot make recursive read-only mounts (mount_setattr needs Linux 5.12+)",
        );
    }
    Ok(())
}

/// A mount's idmapping, checked like a pod's user namespace mappings; `None` without one.
fn mappings(m: &cri::Mount, field: &str) -> Result<Option<IdMap>, Error> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(None);
    }
    if !mount_api::idmapped_mounts_supported() {
        return Err(Error::invalid(format!(
            "{field}.uidMappings: this host cannot make idmapped mounts (Linux 5.19+ with user namespaces)"
        )));
    }
    Ok(Some(IdMap {
        uids: crate::container::userns::ranges(&m.uid_mappings, &format!("{field}.uidMappings"))?,
        gids: crate::container::userns::ranges(&m.gid_mappings, &format!("{field}.gidMappings"))?,
    }))
}

fn image_volume(
    state: &DaemonState,
    index: usize,
    spec: &cri::ImageSpec,
    m: &cri::Mount,
    field: &str,
) -> Result<ImageVolume, Error> {
    if spec.image.is_empty() {
        return Err(Error::invalid(format!(
            "{field}.image.image is required for an image volume"
        )));
    }
    if !m.host_path.is_empty() {
        return Err(Error::invalid(format!(
            "{field}: host_path `{}` and image are mutually exclusive",
            m.host_path
        )));
    }
    // The CRI: image volumes are read-only by definition; a client asking otherwise is told.
    if !m.readonly {
        return Err(Error::invalid(format!(
            "{field}.readonly: an image volume is always read-only; set readonly to true"
        )));
    }
    let image = state.images.resolve(&spec.image).ok_or_else(|| {
        Error::not_found(format!(
            "{field}.image: image `{}` for the volume at {} is not present: pull it first",
            spec.image, m.container_path
        ))
    })?;
    let lower = state.images.lower_dirs(&image);
    if lower.is_empty() {
        return Err(Error::failed_precondition(format!(
            "{field}.image: image `{}` has no layers to mount",
            spec.image
        )));
    }
    if !m.image_sub_path.is_empty() {
        check_sub_path(&m.image_sub_path, &spec.image, &lower, field)?;
    }
    Ok(ImageVolume {
        index,
        image: spec.image.clone(),
        image_id: image.id,
        lower,
    })
}

/// An image volume's `image_sub_path`: relative, without `..`, and an existing directory of
/// the image (resolved inside its merged layers, as the container will see it).
fn check_sub_path(sub: &str, image: &str, lower: &[PathBuf], field: &str) -> Result<(), Error> {
    let invalid = |why: String| Error::invalid(format!("{field}.image_sub_path: {why}"));
    let path = std::path::Path::new(sub);
    if path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid(format!(
            "`{sub}` must be a relative path without `..`"
        )));
    }
    let layers: Vec<&std::path::Path> = lower.iter().map(PathBuf::as_path).collect();
    match mount_api::stat_in_layers(&layers, sub) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
        Ok(_) => Err(invalid(format!(
            "`{sub}` in image `{image}` is not a directory (berth mounts directories of images only)"
        ))),
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Err(Error::not_found(
            format!("{field}.image_sub_path: `{sub}` does not exist in image `{image}`"),
        )),
        Err(e) => Err(Error::internal(format!(
            "{field}.image_sub_path: look up `{sub}` in image `{image}`: {e}"
        ))),
    }
}

/// Who holds an image volume's layers: one holder per container mount.
fn holder(container_id: &str, index: usize) -> String {
    format!("{container_id}/mounts/{index}")
}

/// Keeps the layers of `rec`'s image volumes while the container exists (image removal and GC
/// leave them in place).
pub fn hold(state: &DaemonState, rec: &ContainerRecord) {
    for v in &rec.image_volumes {
        if let Some(image) = state.images.resolve(&v.image_id) {
            state.images.hold(&holder(&rec.id, v.index), &image);
        }
    }
}

/// Ends the holds of [`hold`], removing layers no image needs any more.
pub async fn release(state: &DaemonState, rec: &ContainerRecord) -> Result<(), Error> {
    for v in &rec.image_volumes {
        state
            .images
            .release(&holder(&rec.id, v.index))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "release image volume {} of {}: {e}",
                    v.image, rec.id
                ))
            })?;
    }
    Ok(())
}

/// The shim's form of CRI mount `index` of `rec`.
pub fn mount_spec(rec: &ContainerRecord, index: usize, m: &cri::Mount) -> MountSpec {
    let idmap = mappings(m, "").ok().flatten();
    let volume = rec.image_volumes.iter().find(|v| v.index == index);
    MountSpec {
        destination: m.container_path.clone(),
        source: m.host_path.clone(),
        tmpfs: false,
        options: String::new(),
        readonly: m.readonly || volume.is_some(),
        propagation: match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => 1,
            Ok(cri::MountPropagation::PropagationBidirectional) => 2,
            _ => 0,
        },
        recursive_read_only: m.recursive_read_only,
        image_sub_path: if volume.is_some() {
            m.image_sub_path.clone()
        } else {
            String::new()
        },
        image_layers: volume
            .map(|v| v.lower.iter().map(|p| p.display().to_string()).collect())
            .unwrap_or_default(),
        uid_mappings: idmap
            .as_ref()
            .map(|m| IdMap::to_proto(&m.uids))
            .unwrap_or_default(),
        gid_mappings: idmap
            .as_ref()
            .map(|m| IdMap::to_proto(&m.gids))
            .unwrap_or_default(),
    }
}
