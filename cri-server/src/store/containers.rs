//! Container records: in memory for lookups, persisted atomically under
//! `<root_dir>/containers/<id>/container.json`.

use std::path::{Path, PathBuf};

use proto::cri::{ContainerConfig, ContainerMetadata};
use serde::{Deserialize, Serialize};

/// The process part of a container, resolved (`container::spec` derives it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A container's lifecycle state as berth tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
}

/// One container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// The image as the request named it, its ID and the reference kubelet shows.
    pub image: String,
    pub image_id: String,
    pub image_ref: String,
    pub process: ProcessSpec,
    pub phase: ContainerPhase,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// Snapshot dirs, top layer first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Host mountpoint of the root.
    pub rootfs: PathBuf,
    pub cgroup: String,
    pub log_path: String,
    /// The pod's log directory `log_path` must stay beneath (empty in records from before it
    /// was kept: the shim then only refuses a symlink as the file itself).
    #[serde(default)]
    pub log_directory: String,
    /// Where the shim records the exit.
    pub status_path: PathBuf,
    pub stop_signal: i32,
    /// Image volumes (`Mount.image`), resolved and held at creation.
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

impl ContainerRecord {
    pub fn metadata(&self) -> ContainerMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

impl crate::store::records::Record for ContainerRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// All container records (`<root_dir>/containers/<id>/container.json`, beside the
/// container's upper and work dirs).
pub type ContainerStore = crate::store::records::RecordStore<ContainerRecord>;

/// Opens the container records under `<root>/containers`.
pub fn open(root: &Path) -> std::io::Result<ContainerStore> {
    ContainerStore::open(&root.join("containers"), "container.json")
}

/// Records a new container unless its pod already has one with the same name and attempt.
pub fn reserve(
    store: &ContainerStore,
    rec: ContainerRecord,
) -> Result<(), crate::store::records::ReserveError> {
    let (pod, m) = (rec.pod_id.clone(), rec.metadata());
    store.reserve(rec, |c| {
        c.pod_id == pod && c.metadata().name == m.name && c.metadata().attempt == m.attempt
    })
}

/// The containers of a pod.
pub fn of_pod(store: &ContainerStore, pod_id: &str) -> Vec<ContainerRecord> {
    store.filter(|c| c.pod_id == pod_id)
}

/// An image mounted as a volume, resolved when the container was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    /// Index of the mount in `config.mounts`.
    pub index: usize,
    /// The image as the mount named it.
    pub image: String,
    /// Its image ID (config digest).
    pub image_id: String,
    /// Its layer snapshot dirs, top first.
    pub lower: Vec<PathBuf>,
}
