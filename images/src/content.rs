//! Content-addressed blobs: manifests, indexes and image configs under `content/sha256/<hex>`.
//!
//! Layers are not kept as compressed blobs: they are verified while streaming and unpacked
//! straight into snapshots (see `snapshot`), which is what containers use.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::fsutil;

/// The blob store rooted at `<root_dir>/content`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store and sweeps temp files of interrupted writes.
    pub fn open(root: &Path) -> Result<ContentStore, ImageError> {
        let dir = root.join("content").join("sha256");
        fsutil::ensure_dir(&dir)
            .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
        fsutil::remove_temp_entries(&dir)
            .map_err(|e| ImageError::io(format!("clean {}", dir.display()), e))?;
        Ok(ContentStore { dir })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// Whether the blob is stored.
    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).exists()
    }

    /// Reads a stored blob, checking it still matches its digest.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let bytes = fs::read(self.path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(d.to_string()),
            _ => ImageError::io(format!("read blob {d}"), e),
        })?;
        if Digest::of(&bytes) != *d {
            return Err(ImageError::Corrupt {
                reference: "content store".into(),
                digest: d.to_string(),
                message: "stored blob no longer matches its digest".into(),
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` under `d` after checking they hash to it.
    pub fn write(&self, d: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = Digest::of(bytes);
        if actual != *d {
            return Err(ImageError::Corrupt {
                reference: "content store".into(),
                digest: d.to_string(),
                message: format!("content hashes to {actual}"),
            });
        }
        if self.has(d) {
            return Ok(());
        }
        fsutil::write_atomic(&self.path(d), bytes)
            .map_err(|e| ImageError::io(format!("write blob {d}"), e))
    }

    /// Removes a blob; absent is fine.
    pub fn remove(&self, d: &Digest) -> Result<(), ImageError> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(format!("remove blob {d}"), e)),
        }
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, ImageError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| ImageError::io(format!("list {}", self.dir.display()), e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(Digest::from_hex))
            .collect())
    }

    /// Total bytes and file count of the stored blobs.
    pub fn usage(&self) -> (u64, u64) {
        crate::snapshot::tree_usage(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_reject_wrong_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let d = Digest::of(b"manifest");
        store.write(&d, b"manifest").expect("write");
        assert!(store.has(&d));
        assert_eq!(store.read(&d).expect("read"), b"manifest");
        let err = store.write(&Digest::of(b"x"), b"y").expect_err("mismatch");
        assert!(err.to_string().contains("hashes to"), "{err}");
        store.remove(&d).expect("remove");
        store.remove(&d).expect("remove again");
        assert!(matches!(store.read(&d), Err(ImageError::NotFound(_))));
    }
}
