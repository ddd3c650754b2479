//! The persistence both pod and container records use: one JSON file per record under
//! `<root_dir>/<kind>/<id>/<file>`, written atomically, mirrored in memory, plus a lock per
//! record that serializes operations on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record kept by a [`RecordStore`].
pub trait Record: Clone + Serialize + DeserializeOwned {
    /// The record's ID (its directory name).
    fn id(&self) -> &str;
}

/// Records of one kind.
pub struct RecordStore<T> {
    dir: PathBuf,
    file: &'static str,
    records: Mutex<BTreeMap<String, T>>,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes [`RecordStore::modify`] calls so each sees the result of the one before.
    modifications: Mutex<()>,
}

/// Why [`RecordStore::reserve`] added nothing.
#[derive(Debug)]
pub enum ReserveError {
    /// An existing record clashes with the new one: its ID.
    Conflict(String),
    /// Saving the new record failed (the disk is full, say); nothing of it was kept.
    Io(std::io::Error),
}

/// Lookup outcomes for an ID or ID prefix.
pub enum Lookup<T> {
    Found(Box<T>),
    Missing,
    Ambiguous(usize),
}

impl<T: Record> RecordStore<T> {
    /// Loads every `<dir>/<id>/<file>`; unreadable records are logged and skipped.
    pub fn open(dir: &Path, file: &'static str) -> std::io::Result<RecordStore<T>> {
        std::fs::create_dir_all(dir)?;
        let mut records = BTreeMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path().join(file);
            match std::fs::read(&path).map(|b| serde_json::from_slice::<T>(&b)) {
                Ok(Ok(rec)) => {
                    records.insert(rec.id().to_string(), rec);
                }
                Ok(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable record")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "skipping directory without a record")
                }
            }
        }
        Ok(RecordStore {
            dir: dir.to_path_buf(),
            file,
            records: Mutex::new(records),
            locks: Mutex::new(BTreeMap::new()),
            modifications: Mutex::new(()),
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, T>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Directory of a record (also holds whatever else belongs to it).
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The lock serializing operations on record `id`.
    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Adds and saves `rec` unless `conflicts` finds an existing record it clashes with.
    /// Check and insert happen under one lock; a record that cannot be saved is forgotten
    /// again, its directory included.
    pub fn reserve(&self, rec: T, conflicts: impl Fn(&T) -> bool) -> Result<(), ReserveError> {
        self.reserve_as(rec, conflicts, true)
    }

    /// [`reserve`](Self::reserve) for a record whose loss in a machine crash costs nothing
    /// the start-up sweep does not reclaim: written atomically, fsynced in the background
    /// after this returns (as [`update_live`](Self::update_live)).
    pub fn reserve_live(&self, rec: T, conflicts: impl Fn(&T) -> bool) -> Result<(), ReserveError> {
        self.reserve_as(rec, conflicts, false)
    }

    fn reserve_as(
        &self,
        rec: T,
        conflicts: impl Fn(&T) -> bool,
        durable: bool,
    ) -> Result<(), ReserveError> {
        let mut map = self.map();
        if let Some(existing) = map.values().find(|r| conflicts(r)) {
            return Err(ReserveError::Conflict(existing.id().to_string()));
        }
        map.insert(rec.id().to_string(), rec.clone());
        drop(map);
        match self.write(&rec, durable) {
            Ok(path) => {
                if !durable {
                    background_sync(path);
                }
                Ok(())
            }
            Err(e) => {
                self.map().remove(rec.id());
                let _ = std::fs::remove_dir_all(self.dir.join(rec.id()));
                Err(ReserveError::Io(e))
            }
        }
    }

    /// Saves a changed record.
    pub fn update(&self, rec: T) -> std::io::Result<()> {
        self.persist(&rec)?;
        self.map().insert(rec.id().to_string(), rec);
        Ok(())
    }

    /// Saves a changed record whose change only describes live processes (a pod became Ready
    /// or NotReady, a container got its cgroup or is Running): atomically as [`update`], so a
    /// berthd that crashes and restarts sees it, but fsynced in the background after this
    /// returns instead of before. A machine crash ends those processes anyway, and may at
    /// worst bring back the record as it was before the change, which start-up recovery
    /// then reconciles as it does any record whose processes are gone. Keeps two fsyncs off
    /// the pod and container start paths (docs/performance.md).
    ///
    /// [`update`]: Self::update
    pub fn update_live(&self, rec: T) -> std::io::Result<()> {
        let path = self.write(&rec, false)?;
        self.map().insert(rec.id().to_string(), rec);
        background_sync(path);
        Ok(())
    }

    /// Changes the stored record `id` in place: `change` edits a copy of the current record and
    /// says whether it changed anything; a change is saved, then becomes visible, and the new
    /// record is returned. Two observers racing to make the same transition (say, Running to
    /// Exited) thus agree on which of them made it. `Ok(None)`: no such record, or no change.
    pub fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut T) -> bool,
    ) -> std::io::Result<Option<T>> {
        let _serial = self.modifications.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut rec) = self.get(id) else {
            return Ok(None);
        };
        if !change(&mut rec) {
            return Ok(None);
        }
        self.persist(&rec)?;
        let mut map = self.map();
        // Removed meanwhile: do not bring it back.
        if !map.contains_key(id) {
            return Ok(None);
        }
        map.insert(id.to_string(), rec.clone());
        Ok(Some(rec))
    }

    fn persist(&self, rec: &T) -> std::io::Result<()> {
        self.write(rec, true).map(drop)
    }

    /// Writes the record's file atomically, durably (fsynced) or not; returns its path.
    fn write(&self, rec: &T, durable: bool) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(rec.id());
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        let path = dir.join(self.file);
        if durable {
            images::fsutil::write_atomic(&path, &bytes)?;
        } else {
            images::fsutil::write_atomic_unsynced(&path, &bytes)?;
        }
        Ok(path)
    }

    /// Forgets a record and deletes its directory.
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

    pub fn get(&self, id: &str) -> Option<T> {
        self.map().get(id).cloned()
    }

    /// Finds a record by full ID or unique ID prefix.
    pub fn lookup(&self, id_or_prefix: &str) -> Lookup<T> {
        let map = self.map();
        if let Some(r) = map.get(id_or_prefix) {
            return Lookup::Found(Box::new(r.clone()));
        }
        let hits: Vec<&T> = map
            .values()
            .filter(|r| r.id().starts_with(id_or_prefix))
            .collect();
        match hits.as_slice() {
            [] => Lookup::Missing,
            [one] => Lookup::Found(Box::new((*one).clone())),
            many => Lookup::Ambiguous(many.len()),
        }
    }

    /// The record with this ID or unique ID prefix.
    pub fn find(&self, id_or_prefix: &str) -> Option<T> {
        match self.lookup(id_or_prefix) {
            Lookup::Found(r) => Some(*r),
            Lookup::Missing | Lookup::Ambiguous(_) => None,
        }
    }

    pub fn list(&self) -> Vec<T> {
        self.map().values().cloned().collect()
    }

    /// Records for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        self.map().values().filter(|r| keep(r)).cloned().collect()
    }
}

/// Queues `path` for [`images::fsutil::sync_file_and_dir`] on berthd's record syncer: one
/// thread that takes every path queued meanwhile and syncs each once. If the thread cannot be
/// started, syncs here.
fn background_sync(path: PathBuf) {
    static SYNCER: OnceLock<Option<Sender<PathBuf>>> = OnceLock::new();
    let syncer = SYNCER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("record-sync".into())
            .stack_size(64 << 10)
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = std::collections::BTreeSet::from([first]);
                    batch.extend(rx.try_iter());
                    for path in batch {
                        if let Err(e) = images::fsutil::sync_file_and_dir(&path) {
                            tracing::warn!(file = %path.display(), error = %e, "sync record");
                        }
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    let unsent = match syncer {
        Some(tx) => tx.send(path).err().map(|e| e.0),
        None => Some(path),
    };
    if let Some(path) = unsent {
        let _ = images::fsutil::sync_file_and_dir(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Thing {
        id: String,
        name: String,
    }

    impl Record for Thing {
        fn id(&self) -> &str {
            &self.id
        }
    }

    fn thing(id: &str, name: &str) -> Thing {
        Thing {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn records_persist_conflict_and_resolve_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: RecordStore<Thing> = RecordStore::open(dir.path(), "thing.json").expect("open");
        store
            .reserve(thing("abc123", "a"), |_| false)
            .expect("first");
        let err = store
            .reserve(thing("def456", "a"), |t| t.name == "a")
            .expect_err("conflict");
        assert!(matches!(err, ReserveError::Conflict(id) if id == "abc123"));
        assert!(!dir.path().join("def456").exists());
        store
            .reserve(thing("abd999", "b"), |t| t.name == "b")
            .expect("second");
        assert!(matches!(store.lookup("ab"), Lookup::Ambiguous(2)));
        assert!(matches!(store.lookup("abc"), Lookup::Found(t) if t.id == "abc123"));
        assert!(matches!(store.lookup("zz"), Lookup::Missing));
        let reopened: RecordStore<Thing> =
            RecordStore::open(dir.path(), "thing.json").expect("reopen");
        assert_eq!(reopened.list().len(), 2);
        reopened.remove("abc123").expect("remove");
        reopened.remove("abc123").expect("remove twice");
        assert!(!dir.path().join("abc123").exists());
    }

    #[test]
    fn live_updates_are_seen_after_a_restart_and_syncing_a_removed_one_is_harmless() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: RecordStore<Thing> = RecordStore::open(dir.path(), "thing.json").expect("open");
        store
            .reserve_live(thing("a1", "created"), |_| false)
            .expect("add");
        let clash = store.reserve_live(thing("a2", "created"), |t| t.name == "created");
        assert!(matches!(clash, Err(ReserveError::Conflict(id)) if id == "a1"));
        let reopened: RecordStore<Thing> =
            RecordStore::open(dir.path(), "thing.json").expect("reopen");
        assert_eq!(reopened.get("a1").map(|t| t.name), Some("created".into()));
        store.update_live(thing("a1", "running")).expect("live");
        assert_eq!(store.get("a1").map(|t| t.name), Some("running".into()));
        let reopened: RecordStore<Thing> =
            RecordStore::open(dir.path(), "thing.json").expect("reopen");
        assert_eq!(reopened.get("a1").map(|t| t.name), Some("running".into()));
        // No temp file is left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("a1"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["thing.json"]);
        store.update_live(thing("a1", "stopped")).expect("live");
        store.remove("a1").expect("remove");
        // The syncer finds nothing to sync and says nothing.
        images::fsutil::sync_file_and_dir(&dir.path().join("a1").join("thing.json"))
            .expect("a removed file is not an error");
    }

    #[test]
    fn modify_applies_a_change_once_and_persists_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: RecordStore<Thing> = RecordStore::open(dir.path(), "thing.json").expect("open");
        store.reserve(thing("a1", "old"), |_| false).expect("add");
        let rename = |t: &mut Thing| {
            if t.name != "old" {
                return false;
            }
            t.name = "new".into();
            true
        };
        let changed = store.modify("a1", rename).expect("modify");
        assert_eq!(changed.map(|t| t.name), Some("new".to_string()));
        assert!(
            store.modify("a1", rename).expect("again").is_none(),
            "second is a no-op"
        );
        assert!(store.modify("zz", rename).expect("missing").is_none());
        let reopened: RecordStore<Thing> =
            RecordStore::open(dir.path(), "thing.json").expect("reopen");
        assert_eq!(reopened.get("a1").map(|t| t.name), Some("new".to_string()));
    }
}
