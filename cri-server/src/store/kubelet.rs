//! What kubelet hands berth at run time (`UpdateRuntimeConfig`), kept across restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

/// What kubelet last told berth through `UpdateRuntimeConfig`, kept across restarts in
/// `<root_dir>/kubelet-runtime-config.json` (kubelet only calls again when its value changes).
#[derive(Debug)]
pub struct KubeletConfig {
    path: PathBuf,
    pod_cidr: Mutex<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    pod_cidr: String,
}

impl KubeletConfig {
    /// Loads the saved value under `root_dir` (none yet, or unreadable: empty, logged).
    pub fn open(root_dir: &Path) -> KubeletConfig {
        let path = root_dir.join("kubelet-runtime-config.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "ignoring unreadable kubelet runtime config");
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        KubeletConfig {
            path,
            pod_cidr: Mutex::new(saved.pod_cidr),
        }
    }

    /// The pod CIDR kubelet last sent (empty if none).
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a new pod CIDR (written atomically; unchanged values are not written).
    pub fn set_pod_cidr(&self, cidr: &str) -> std::io::Result<()> {
        let mut current = self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner());
        if *current == cidr {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&Saved {
            pod_cidr: cidr.to_string(),
        })
        .map_err(std::io::Error::other)?;
        images::fsutil::write_atomic(&self.path, &bytes)?;
        *current = cidr.to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_cidr_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = KubeletConfig::open(dir.path());
        assert_eq!(k.pod_cidr(), "");
        k.set_pod_cidr("10.244.3.0/24").expect("save");
        assert_eq!(KubeletConfig::open(dir.path()).pod_cidr(), "10.244.3.0/24");
    }
}
