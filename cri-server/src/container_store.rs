//! Container records: in memory for lookups, persisted atomically under
//! `<root_dir>/containers/<id>/container.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use proto::cri::{ContainerConfig, ContainerMetadata};
use serde::{Deserialize, Serialize};

use crate::container_spec::ProcessSpec;

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
    /// Where the shim records the exit.
    pub status_path: PathBuf,
    pub stop_signal: i32,
}

impl ContainerRecord {
    pub fn metadata(&self) -> ContainerMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// All container records, with a per-container lock serializing operations on one container.
pub struct ContainerStore {
    dir: PathBuf,
    containers: Mutex<BTreeMap<String, ContainerRecord>>,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ContainerStore {
    /// Loads every record under `<root>/containers`; unreadable ones are logged and skipped.
    pub fn open(root: &Path) -> std::io::Result<ContainerStore> {
        let dir = root.join("containers");
        std::fs::create_dir_all(&dir)?;
        let mut containers = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let file = entry.path().join("container.json");
            match std::fs::read(&file).map(|b| serde_json::from_slice::<ContainerRecord>(&b)) {
                Ok(Ok(rec)) => {
                    containers.insert(rec.id.clone(), rec);
                }
                Ok(Err(e)) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping unreadable container record")
                }
                Err(_) => {}
            }
        }
        Ok(ContainerStore {
            dir,
            containers: Mutex::new(containers),
            locks: Mutex::new(BTreeMap::new()),
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Directory of a container's persistent state.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Records a new container unless its pod already has one with the same name and
    /// attempt; `Err(existing id)` otherwise.
    pub fn reserve(&self, rec: ContainerRecord) -> Result<(), String> {
        let mut map = self.map();
        let m = rec.metadata();
        if let Some(existing) = map.values().find(|c| {
            c.pod_id == rec.pod_id
                && c.metadata().name == m.name
                && c.metadata().attempt == m.attempt
        }) {
            return Err(existing.id.clone());
        }
        map.insert(rec.id.clone(), rec.clone());
        drop(map);
        if let Err(e) = self.persist(&rec) {
            self.map().remove(&rec.id);
            return Err(format!("<persist failed: {e}>"));
        }
        Ok(())
    }

    pub fn update(&self, rec: ContainerRecord) -> std::io::Result<()> {
        self.persist(&rec)?;
        self.map().insert(rec.id.clone(), rec);
        Ok(())
    }

    fn persist(&self, rec: &ContainerRecord) -> std::io::Result<()> {
        let dir = self.dir.join(&rec.id);
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        images::fsutil::write_atomic(&dir.join("container.json"), &bytes)
    }

    /// Forgets a container and deletes its persistent dir (record, upper and work dirs).
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        self.map().remove(id);
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match std::fs::remove_dir_all(self.dir.join(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        self.map().get(id).cloned()
    }

    /// The container with this ID or unique ID prefix.
    pub fn lookup(&self, id: &str) -> Option<ContainerRecord> {
        let map = self.map();
        if let Some(c) = map.get(id) {
            return Some(c.clone());
        }
        let mut hits = map.values().filter(|c| c.id.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<ContainerRecord> {
        self.map().values().cloned().collect()
    }

    pub fn of_pod(&self, pod_id: &str) -> Vec<ContainerRecord> {
        self.map()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .cloned()
            .collect()
    }
}
