//! Unpacked layers ("snapshots"), shared between images, keyed by chain ID:
//! `snapshots/<chain-hex>/fs` holds the layer's diff in overlayfs lower-dir form (whiteouts as
//! 0/0 character devices, opaque dirs marked with `trusted.overlay.opaque`), so containers stack
//! them as overlay lowerdirs. A snapshot only appears under its final name once complete.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::fsutil;

/// What berth records beside each snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub chain_id: String,
    pub diff_id: String,
    /// Digest of the compressed blob it was unpacked from.
    pub blob_digest: String,
    pub blob_size: u64,
    /// Bytes of file content unpacked.
    pub unpacked_bytes: u64,
    /// Tar entries unpacked (roughly the inodes used).
    pub entries: u64,
}

/// The snapshot store rooted at `<root_dir>/snapshots`.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating if needed) the store and removes snapshots left half-built or
    /// half-removed by a crash.
    pub fn open(root: &Path) -> Result<SnapshotStore, ImageError> {
        let dir = root.join("snapshots");
        fsutil::ensure_dir(&dir)
            .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
        let swept = fsutil::remove_temp_entries(&dir)
            .map_err(|e| ImageError::io(format!("clean {}", dir.display()), e))?;
        if swept > 0 {
            tracing::info!(
                count = swept,
                "removed snapshots left by an interrupted pull or removal"
            );
        }
        Ok(SnapshotStore { dir })
    }

    /// Directory of a snapshot.
    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex())
    }

    /// The diff directory containers use as an overlay lowerdir.
    pub fn fs_path(&self, chain: &Digest) -> PathBuf {
        self.path(chain).join("fs")
    }

    /// Whether a complete snapshot exists.
    pub fn exists(&self, chain: &Digest) -> bool {
        self.path(chain).join("layer.json").exists()
    }

    /// Starts building a snapshot in a temp directory; commit it or drop it to discard.
    pub fn prepare(&self, chain: &Digest) -> Result<PendingSnapshot, ImageError> {
        let tmp = self.dir.join(fsutil::temp_name(chain.hex()));
        let fs_dir = tmp.join("fs");
        fs::create_dir_all(&fs_dir)
            .map_err(|e| ImageError::io(format!("create {}", fs_dir.display()), e))?;
        Ok(PendingSnapshot {
            tmp,
            target: self.path(chain),
            done: false,
        })
    }

    /// Chain IDs of every complete snapshot.
    pub fn list(&self) -> Result<Vec<Digest>, ImageError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| ImageError::io(format!("list {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(d) = entry.file_name().to_str().and_then(Digest::from_hex) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes a snapshot: renamed to a temp name first, so a crash midway never leaves a
    /// partial snapshot under its real name.
    pub fn remove(&self, chain: &Digest) -> Result<(), ImageError> {
        let path = self.path(chain);
        let trash = self
            .dir
            .join(fsutil::temp_name(&format!("rm-{}", chain.hex())));
        match fs::rename(&path, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io(format!("remove snapshot {chain}"), e)),
        }
        fsutil::remove_any(&trash)
            .map_err(|e| ImageError::io(format!("remove snapshot {chain}"), e))
    }

    /// Disk bytes and inodes used by all snapshots (walks the tree: use for tests and
    /// reconciliation; [`SnapshotStore::recorded_usage`] is the cheap figure).
    pub fn usage(&self) -> (u64, u64) {
        tree_usage(&self.dir)
    }

    /// Unpacked bytes and entries of all snapshots, from their recorded info.
    pub fn recorded_usage(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for chain in self.list().unwrap_or_default() {
            if let Some(info) = self.info(&chain) {
                total.0 += info.unpacked_bytes;
                total.1 += info.entries;
            }
        }
        total
    }

    /// The recorded info of a complete snapshot.
    pub fn info(&self, chain: &Digest) -> Option<SnapshotInfo> {
        let bytes = fs::read(self.path(chain).join("layer.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Where the snapshots live (the image filesystem's mountpoint for ImageFsInfo).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A snapshot being unpacked. Dropping it without [`PendingSnapshot::commit`] removes it.
#[derive(Debug)]
pub struct PendingSnapshot {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl PendingSnapshot {
    /// The directory to unpack the layer into.
    pub fn fs_dir(&self) -> PathBuf {
        self.tmp.join("fs")
    }

    /// Records `info` and moves the snapshot to its final name. If another pull committed the
    /// same chain first, this one is discarded: the content is identical by construction.
    pub fn commit(mut self, info: &SnapshotInfo) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(info)
            .map_err(|e| ImageError::io("encode snapshot info", io::Error::other(e)))?;
        fsutil::write_atomic(&self.tmp.join("layer.json"), &json)
            .map_err(|e| ImageError::io(format!("write {}", self.tmp.display()), e))?;
        match fs::rename(&self.tmp, &self.target) {
            Ok(()) => {}
            Err(e) if self.target.join("layer.json").exists() => {
                tracing::debug!(error = %e, target = %self.target.display(), "snapshot already committed");
                return Ok(()); // Drop removes our copy.
            }
            Err(e) => {
                return Err(ImageError::io(
                    format!("commit {}", self.target.display()),
                    e,
                ));
            }
        }
        self.done = true;
        if let Some(parent) = self.target.parent() {
            let _ = fsutil::sync_dir(parent);
        }
        Ok(())
    }
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = fsutil::remove_any(&self.tmp)
        {
            tracing::warn!(dir = %self.tmp.display(), error = %e, "remove discarded snapshot");
        }
    }
}

/// Disk bytes (allocated blocks) and inodes under `dir`, not following symlinks; hard-linked
/// files count once.
pub fn tree_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(chain: &Digest) -> SnapshotInfo {
        SnapshotInfo {
            chain_id: chain.to_string(),
            diff_id: chain.to_string(),
            blob_digest: chain.to_string(),
            blob_size: 1,
            unpacked_bytes: 1,
            entries: 1,
        }
    }

    #[test]
    fn dropped_pending_snapshot_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let chain = Digest::of(b"layer");
        let pending = store.prepare(&chain).expect("prepare");
        fs::write(pending.fs_dir().join("f"), b"x").expect("write");
        drop(pending);
        assert!(!store.exists(&chain));
        assert_eq!(fs::read_dir(store.dir()).expect("ls").count(), 0);
    }

    #[test]
    fn committed_snapshot_is_listed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let chain = Digest::of(b"layer");
        let pending = store.prepare(&chain).expect("prepare");
        fs::write(pending.fs_dir().join("f"), b"x").expect("write");
        pending.commit(&info(&chain)).expect("commit");
        assert!(store.exists(&chain));
        assert_eq!(store.list().expect("list"), vec![chain.clone()]);
        assert!(store.usage().1 >= 3);
        // A second commit of the same chain is a no-op that cleans up after itself.
        let again = store.prepare(&chain).expect("prepare");
        again.commit(&info(&chain)).expect("commit twice");
        assert_eq!(fs::read_dir(store.dir()).expect("ls").count(), 1);
        store.remove(&chain).expect("remove");
        assert!(!store.exists(&chain));
        store.remove(&chain).expect("remove twice");
    }

    #[test]
    fn reopening_sweeps_interrupted_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("open");
        let pending = store.prepare(&Digest::of(b"l")).expect("prepare");
        std::mem::forget(pending); // as if berthd died mid-unpack
        assert_eq!(fs::read_dir(store.dir()).expect("ls").count(), 1);
        SnapshotStore::open(dir.path()).expect("reopen");
        assert_eq!(fs::read_dir(store.dir()).expect("ls").count(), 0);
    }
}
