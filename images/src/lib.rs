//! berth's image store: pulls from registries, content-addressed blobs, layer snapshots keyed
//! by chain ID, and image metadata.
//!
//! [`Images`] is the entry point `cri-server` uses: pull, list, resolve, remove, usage.

pub mod content;
pub mod decompress;
pub mod digest;
pub mod error;
pub mod fsutil;
pub mod layered;
pub mod manifest;
pub mod metadata;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::ImageError;
pub use metadata::ImageRecord;
pub use registry::{Credential, RegistryOptions};

use pull::{PullOutcome, Puller};
use registry::RegistryClient;
use store::ImageStore;

/// Default number of layers downloaded and unpacked at once, across all pulls.
pub const DEFAULT_PARALLEL_LAYERS: usize = 4;

/// Space used by the image filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The image service's state: store plus puller. Pulls and removals exclude each other
/// (a removal's garbage collection never deletes a snapshot a running pull relies on).
pub struct Images {
    store: Arc<ImageStore>,
    puller: Puller,
    gc: tokio::sync::RwLock<()>,
    root: PathBuf,
}

impl Images {
    /// Opens the store under `root` (berth's root dir).
    pub fn open(
        root: &Path,
        registry: RegistryOptions,
        parallel_layers: usize,
    ) -> Result<Images, ImageError> {
        let store = Arc::new(ImageStore::open(root)?);
        let puller = Puller::new(
            store.clone(),
            RegistryClient::new(registry)?,
            parallel_layers,
        );
        Ok(Images {
            store,
            puller,
            gc: tokio::sync::RwLock::new(()),
            root: root.to_path_buf(),
        })
    }

    /// Pulls an image; returns its ID and what was fetched. A pull that fails leaves nothing:
    /// the layers it finished before the failure are removed too, unless another pull (which
    /// may need them) is running; a later failed pull then removes them.
    pub async fn pull(
        &self,
        image: &str,
        cred: Option<&Credential>,
    ) -> Result<PullOutcome, ImageError> {
        let result = {
            let _guard = self.gc.read().await;
            let result = self.puller.pull(image, cred).await;
            self.puller.sweep_inflight();
            result
        };
        if result.is_err() {
            self.remove_unused_if_idle().await;
        }
        result
    }

    /// Removes what no image uses, if no pull or removal is running.
    async fn remove_unused_if_idle(&self) {
        let Ok(_guard) = self.gc.try_write() else {
            return;
        };
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.remove_unused()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "removed layers and blobs of a failed pull"),
            Ok(Err(e)) => tracing::warn!(error = %e, "remove layers and blobs of a failed pull"),
            Err(e) => tracing::warn!(error = %e, "remove layers and blobs of a failed pull"),
        }
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.list()
    }

    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        self.store.resolve(name)
    }

    /// The stored image config (parsed, and raw JSON).
    pub fn config(
        &self,
        rec: &ImageRecord,
    ) -> Result<(manifest::ImageConfig, Vec<u8>), ImageError> {
        self.store.config(rec)
    }

    /// The image's manifest annotations (over its index's).
    pub fn annotations(
        &self,
        rec: &ImageRecord,
    ) -> Result<std::collections::BTreeMap<String, String>, ImageError> {
        self.store.annotations(rec)
    }

    /// Removes an image and what only it used; `Ok(None)` if absent.
    pub async fn remove(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let _guard = self.gc.write().await;
        let store = self.store.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|e| ImageError::io("remove image", std::io::Error::other(e)))?
    }

    /// Removes snapshots and blobs that belong to no image and no container (left by a pull
    /// that crashed before recording its image); run at start-up, after containers re-held
    /// their images. Returns how many were removed.
    pub async fn remove_orphans(&self) -> Result<usize, ImageError> {
        let _guard = self.gc.write().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.remove_unused())
            .await
            .map_err(|e| ImageError::io("remove orphan snapshots", std::io::Error::other(e)))?
    }

    /// Bytes and inodes of unpacked layers plus stored blobs.
    pub fn usage(&self) -> FsUsage {
        let (snap_bytes, snap_inodes) = self.store.snapshots.recorded_usage();
        let (blob_bytes, blob_files) = self.store.content.usage();
        FsUsage {
            bytes: snap_bytes + blob_bytes,
            inodes: snap_inodes + blob_files,
        }
    }

    /// The directory holding the image filesystem (for ImageFsInfo's mountpoint).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image's unpacked layers as overlay lower dirs, top layer first.
    pub fn lower_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.chain_ids
            .iter()
            .rev()
            .filter_map(|c| digest::Digest::parse(c).ok())
            .map(|d| self.store.snapshots.fs_path(&d))
            .collect()
    }

    /// Keeps the image's layers while a container (`holder`) uses them, even if the image is
    /// removed meanwhile.
    pub fn hold(&self, holder: &str, rec: &ImageRecord) {
        self.store.hold(holder, rec);
    }

    /// Ends `holder`'s use of its image's layers, removing any no image needs any more.
    pub async fn release(&self, holder: &str) -> Result<(), ImageError> {
        let _guard = self.gc.write().await;
        let store = self.store.clone();
        let holder = holder.to_string();
        tokio::task::spawn_blocking(move || store.release(&holder))
            .await
            .map_err(|e| ImageError::io("release image layers", std::io::Error::other(e)))?
    }

    /// The snapshot store, for building container root filesystems.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }
}
