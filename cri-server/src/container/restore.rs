//! CreateContainer from a checkpoint, as CRI-O does: `config.image.image` is either a checkpoint
//! archive's absolute path, or a pulled image built from an archive (Kubernetes' documented
//! `buildah add … checkpoint.tar /` + `buildah config --annotation=<checkpoint annotation>`
//! flow), recognised by its manifest's annotation ([`archive::IMAGE_ANNOTATIONS`]). The
//! checkpoint is extracted (the image's layer copied), the request's image and process are
//! replaced by the checkpointed ones, the archive's writable-layer diff becomes the new
//! container's, and StartContainer has the shim restore the process tree with CRIU instead of
//! executing the command. The archive format and CRIU handling are `runtime_core::checkpoint`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use proto::cri::{CreateContainerRequest, ImageSpec, KeyValue};
use runtime_core::checkpoint::archive;

use crate::state::DaemonState;
use crate::store::containers::ContainerRecord;

/// A CreateContainer being served from an archive.
pub struct Restoring {
    /// The request with the checkpoint's image and process.
    pub request: CreateContainerRequest,
    /// The extracted archive, moved into the container's directory by [`Restoring::apply`]
    /// (removed if the creation fails before).
    extracted: PathBuf,
}

impl Drop for Restoring {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.extracted);
    }
}

/// The extracted checkpoint of a Created container that is to be restored ("" if none).
pub fn restore_dir(rec: &ContainerRecord) -> String {
    rec.upper
        .parent()
        .map(|d| d.join("restore"))
        .filter(|d| d.join(archive::CHECKPOINT_DIR).is_dir())
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// `Some` when the request's image is a checkpoint archive's path or a pulled checkpoint image.
pub async fn from_archive(
    state: &DaemonState,
    req: &CreateContainerRequest,
) -> Result<Option<Restoring>, Error> {
    let Some(config) = req.config.as_ref() else {
        return Ok(None);
    };
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image.is_empty() {
        return Ok(None);
    }
    let field = format!("config.image.image `{image}`");
    let extracted = state
        .config
        .root_dir
        .join("checkpoint-restore")
        .join(crate::store::ids::new_id());
    let restoring = Restoring {
        request: req.clone(),
        extracted: extracted.clone(),
    };
    // Image references never start with `/`.
    let read = if image.starts_with('/') {
        let path = PathBuf::from(&image);
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "{field}: no checkpoint archive at this path"
            )));
        }
        tokio::task::spawn_blocking(move || {
            if !archive::is_archive(&path) {
                return Err(Error::invalid(format!(
                    "{field}: not a checkpoint archive (no config.dump and checkpoint/ in it)"
                )));
            }
            archive::extract(&path, &extracted)
                .map_err(|e| Error::invalid(format!("{field}: extract: {e}")))?;
            archive::read_dumps(&extracted).map_err(|e| Error::invalid(format!("{field}: {e}")))
        })
        .await
        .map_err(|e| Error::internal(format!("restore task: {e}")))?
    } else {
        let Some(layer) = checkpoint_image_layer(state, &image, &field)? else {
            return Ok(None);
        };
        // The layer stays while it is copied, even if the image is removed meanwhile.
        let holder = format!("checkpoint-restore:{}", crate::store::ids::new_id());
        state.images.hold(&holder, &layer.1);
        let copied = tokio::task::spawn_blocking(move || {
            let src = layer.0;
            if !archive::is_extracted(&src) {
                return Err(Error::invalid(format!(
                    "{field}: the image has a checkpoint annotation but its layer holds no \
                     checkpoint (no config.dump and checkpoint/ at its root)"
                )));
            }
            archive::copy_tree(&src, &extracted)
                .map_err(|e| Error::io(&format!("{field}: copy the checkpoint"), &e))?;
            archive::read_dumps(&extracted).map_err(|e| Error::invalid(format!("{field}: {e}")))
        })
        .await
        .map_err(|e| Error::internal(format!("restore task: {e}")));
        if let Err(e) = state.images.release(&holder).await {
            tracing::warn!(error = %e, "release the checkpoint image's layer");
        }
        copied?
    };
    let (dump, spec) = read?;
    if spec.process.terminal {
        return Err(Error::failed_precondition(format!(
            "config.image.image `{image}`: the checkpointed container has a TTY, which berth does not restore"
        )));
    }
    let checkpointed_image = [
        &dump.rootfs_image_name,
        &dump.rootfs_image_ref,
        &dump.rootfs_image,
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .cloned()
    .ok_or_else(|| {
        Error::invalid(format!(
            "config.image.image `{image}`: config.dump names no image"
        ))
    })?;
    if spec.process.args.is_empty() {
        return Err(Error::invalid(format!(
            "config.image.image `{image}`: spec.dump has no process.args"
        )));
    }
    let mut restoring = restoring;
    let c = restoring
        .request
        .config
        .as_mut()
        .ok_or_else(|| Error::invalid("config is required"))?;
    c.image = Some(ImageSpec {
        image: checkpointed_image,
        ..Default::default()
    });
    c.command = spec.process.args.clone();
    c.args = Vec::new();
    c.working_dir = spec.process.cwd.clone();
    c.envs = spec
        .process
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| KeyValue {
            key: k.into(),
            value: v.into(),
        })
        .collect();
    Ok(Some(restoring))
}

/// The unpacked layer (and record) of `image` when it is a pulled checkpoint image; `None` for
/// any other image, pulled or not (CreateContainer then goes on as usual).
fn checkpoint_image_layer(
    state: &DaemonState,
    image: &str,
    field: &str,
) -> Result<Option<(PathBuf, images::ImageRecord)>, Error> {
    let Some(rec) = state.images.resolve(image) else {
        return Ok(None);
    };
    // A manifest berth cannot read back is no reason to refuse an ordinary image.
    let annotations = match state.images.annotations(&rec) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(image, error = %e, "read the image's manifest annotations");
            return Ok(None);
        }
    };
    let Some(name) = archive::checkpoint_image_name(&annotations) else {
        return Ok(None);
    };
    tracing::info!(image, container = name, "restoring from a checkpoint image");
    match state.images.lower_dirs(&rec).as_slice() {
        [layer] => Ok(Some((layer.clone(), rec))),
        layers => Err(Error::invalid(format!(
            "{field}: a checkpoint image has one layer (the archive's files, as `buildah add` \
             makes it); this one has {}",
            layers.len()
        ))),
    }
}

impl Restoring {
    /// Moves the extracted archive into the new container's directory and applies its
    /// writable-layer diff to the container's (empty) upper dir.
    pub fn apply(&self, rec: &ContainerRecord) -> Result<(), Error> {
        let dir = rec.upper.parent().unwrap_or(Path::new("/")).join("restore");
        std::fs::rename(&self.extracted, &dir)
            .map_err(|e| Error::io(&format!("move the checkpoint into {}", dir.display()), &e))?;
        archive::apply_rootfs_diff(&dir, &rec.upper).map_err(|e| {
            // The tar crate says where in its message and why in the source.
            let why = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Error::invalid(format!(
                "config.image.image: apply the checkpoint's rootfs-diff.tar: {e}{why}"
            ))
        })
    }
}
