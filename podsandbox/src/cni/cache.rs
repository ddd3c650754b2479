//! The on-disk record of each ADD, so CHECK and DEL work after a restart.
//!
//! One file per attachment, `<cache_dir>/<network>/<pod_id>.json`, written
//! atomically (temp file, fsync, rename, fsync of the directory).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

/// Format tag of cache entries; others are ignored.
pub(crate) const KIND: &str = "berth-cni-cache/v1";

/// Everything needed to repeat CHECK or DEL exactly as the ADD saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheEntry {
    pub(crate) kind: String,
    pub(crate) network: String,
    pub(crate) pod_id: String,
    pub(crate) if_name: String,
    pub(crate) cni_args: String,
    /// Capability arguments offered to plugins (`portMappings`).
    pub(crate) capability_args: Value,
    /// The network config list the ADD ran with.
    pub(crate) config: Value,
    /// The final ADD result.
    pub(crate) result: Value,
}

/// Where the entry of one attachment lives; both names are validated path-safe.
pub(crate) fn entry_path(cache_dir: &Path, network: &str, pod_id: &str) -> PathBuf {
    cache_dir.join(network).join(format!("{pod_id}.json"))
}

/// Reads an entry; `Ok(None)` when there is none.
pub(crate) fn read(path: &Path) -> Result<Option<CacheEntry>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let entry: CacheEntry =
        serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))?;
    if entry.kind != KIND {
        return Err(format!("{}: unknown kind {:?}", path.display(), entry.kind));
    }
    Ok(Some(entry))
}

/// Writes an entry atomically and durably; blocking.
pub(crate) fn write(path: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    let cache_error = |source| CniError::Cache {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| cache_error(io::Error::other("cache path has no parent")))?;
    fs::create_dir_all(dir).map_err(cache_error)?;
    let bytes = serde_json::to_vec(entry).map_err(|e| cache_error(io::Error::other(e)))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(cache_error)?;
    temp.write_all(&bytes).map_err(cache_error)?;
    temp.as_file().sync_all().map_err(cache_error)?;
    temp.persist(path).map_err(|e| cache_error(e.error))?;
    sync_dir(dir).map_err(cache_error)
}

/// Removes an entry; a missing entry is fine. Blocking.
pub(crate) fn remove(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CniError::Cache {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match path.parent() {
        Some(dir) => sync_dir(dir).map_err(|source| CniError::Cache {
            path: path.to_path_buf(),
            source,
        }),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
