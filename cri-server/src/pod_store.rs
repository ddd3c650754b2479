//! Pod sandbox records: in memory for lookups, persisted atomically under
//! `<root_dir>/pods/<id>/pod.json` so a restarted berthd finds its pods again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use podsandbox::pod::PodHostState;
use proto::cri::{PodSandboxConfig, PodSandboxMetadata};
use serde::{Deserialize, Serialize};

/// A pod's lifecycle state as berth tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Being created; a crash here leaves a pod that start-up marks NotReady.
    Creating,
    Ready,
    NotReady,
}

/// One pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub phase: PodPhase,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub host: PodHostState,
}

impl PodRecord {
    pub fn metadata(&self) -> PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// The name that must be unique among pods: kubelet's metadata tuple.
pub fn name_key(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// All pod records, with a per-pod lock serializing operations on one pod.
pub struct PodStore {
    dir: PathBuf,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Lookup outcomes for an ID or ID prefix.
pub enum Lookup {
    Found(Box<PodRecord>),
    Missing,
    Ambiguous(usize),
}

impl PodStore {
    /// Loads every record under `<root>/pods`; unreadable ones are logged and skipped.
    pub fn open(root: &Path) -> std::io::Result<PodStore> {
        let dir = root.join("pods");
        std::fs::create_dir_all(&dir)?;
        let mut pods = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let file = entry.path().join("pod.json");
            match std::fs::read(&file).map(|b| serde_json::from_slice::<PodRecord>(&b)) {
                Ok(Ok(rec)) => {
                    pods.insert(rec.id.clone(), rec);
                }
                Ok(Err(e)) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping unreadable pod record")
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping pod dir without record")
                }
            }
        }
        Ok(PodStore {
            dir,
            pods: Mutex::new(pods),
            locks: Mutex::new(BTreeMap::new()),
        })
    }

    fn pods(&self) -> MutexGuard<'_, BTreeMap<String, PodRecord>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock serializing operations on pod `id`.
    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Records a new pod unless another has the same metadata; `Err(existing id)` otherwise.
    pub fn reserve(&self, rec: PodRecord) -> Result<(), String> {
        let mut pods = self.pods();
        let key = name_key(&rec.metadata());
        if let Some(existing) = pods.values().find(|p| name_key(&p.metadata()) == key) {
            return Err(existing.id.clone());
        }
        pods.insert(rec.id.clone(), rec.clone());
        drop(pods);
        if let Err(e) = self.persist(&rec) {
            self.pods().remove(&rec.id);
            return Err(format!("<persist failed: {e}>"));
        }
        Ok(())
    }

    /// Saves a changed record.
    pub fn update(&self, rec: PodRecord) -> std::io::Result<()> {
        self.persist(&rec)?;
        self.pods().insert(rec.id.clone(), rec);
        Ok(())
    }

    fn persist(&self, rec: &PodRecord) -> std::io::Result<()> {
        let dir = self.dir.join(&rec.id);
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        images::fsutil::write_atomic(&dir.join("pod.json"), &bytes)
    }

    /// Forgets a pod and deletes its record.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        self.pods().remove(id);
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match std::fs::remove_dir_all(self.dir.join(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn get(&self, id: &str) -> Option<PodRecord> {
        self.pods().get(id).cloned()
    }

    /// Finds a pod by full ID or unique ID prefix.
    pub fn lookup(&self, id_or_prefix: &str) -> Lookup {
        let pods = self.pods();
        if let Some(p) = pods.get(id_or_prefix) {
            return Lookup::Found(Box::new(p.clone()));
        }
        let hits: Vec<&PodRecord> = pods
            .values()
            .filter(|p| p.id.starts_with(id_or_prefix))
            .collect();
        match hits.as_slice() {
            [] => Lookup::Missing,
            [one] => Lookup::Found(Box::new((*one).clone())),
            many => Lookup::Ambiguous(many.len()),
        }
    }

    pub fn list(&self) -> Vec<PodRecord> {
        self.pods().values().cloned().collect()
    }
}
