//! CreateContainer from a checkpoint archive (`config.image.image` is the archive's absolute
//! path, as with CRI-O): the archive is extracted, the request's image and process are
//! replaced by the checkpointed ones, the archive's writable-layer diff becomes the new
//! container's, and StartContainer has the shim restore the process tree with CRIU instead of
//! executing the command. The archive format and CRIU handling are `runtime_core::checkpoint`.

use std::path::{Path, PathBuf};

use proto::cri::{CreateContainerRequest, ImageSpec, KeyValue};
use runtime_core::checkpoint::archive;
use tonic::Status;

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

/// `Some` when the request's image is a checkpoint archive's path.
pub async fn from_archive(
    state: &DaemonState,
    req: &CreateContainerRequest,
) -> Result<Option<Restoring>, Status> {
    let Some(config) = req.config.as_ref() else {
        return Ok(None);
    };
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    // Image references never start with `/`.
    if !image.starts_with('/') {
        return Ok(None);
    }
    let field = format!("config.image.image `{image}`");
    let path = PathBuf::from(&image);
    if !path.is_file() {
        return Err(Status::invalid_argument(format!(
            "{field}: no checkpoint archive at this path"
        )));
    }
    let extracted = state
        .config
        .root_dir
        .join("checkpoint-restore")
        .join(crate::store::ids::new_id());
    let restoring = Restoring {
        request: req.clone(),
        extracted: extracted.clone(),
    };
    let read = tokio::task::spawn_blocking(move || {
        if !archive::is_archive(&path) {
            return Err(Status::invalid_argument(format!(
                "{field}: not a checkpoint archive (no config.dump and checkpoint/ in it)"
            )));
        }
        archive::extract(&path, &extracted)
            .map_err(|e| Status::invalid_argument(format!("{field}: extract: {e}")))?;
        archive::read_dumps(&extracted)
            .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
    })
    .await
    .map_err(|e| Status::internal(format!("restore task: {e}")))?;
    let (dump, spec) = read?;
    if spec.process.terminal {
        return Err(Status::failed_precondition(format!(
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
        Status::invalid_argument(format!(
            "config.image.image `{image}`: config.dump names no image"
        ))
    })?;
    if spec.process.args.is_empty() {
        return Err(Status::invalid_argument(format!(
            "config.image.image `{image}`: spec.dump has no process.args"
        )));
    }
    let mut restoring = restoring;
    let c = restoring
        .request
        .config
        .as_mut()
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
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

impl Restoring {
    /// Moves the extracted archive into the new container's directory and applies its
    /// writable-layer diff to the container's (empty) upper dir.
    pub fn apply(&self, rec: &ContainerRecord) -> Result<(), Status> {
        let dir = rec.upper.parent().unwrap_or(Path::new("/")).join("restore");
        std::fs::rename(&self.extracted, &dir).map_err(|e| {
            crate::errors::io_status(&format!("move the checkpoint into {}", dir.display()), &e)
        })?;
        archive::apply_rootfs_diff(&dir, &rec.upper).map_err(|e| {
            Status::invalid_argument(format!(
                "config.image.image: apply the checkpoint's rootfs-diff.tar: {e}"
            ))
        })
    }
}
