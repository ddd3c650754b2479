//! The on-disk image store: blobs, snapshots and image records under berth's root dir.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::{self, ImageConfig, Manifest};
use crate::metadata::{ImageDb, ImageRecord};
use crate::snapshot::SnapshotStore;

/// Blobs, snapshots and records together; removal garbage-collects what no image uses.
#[derive(Debug)]
pub struct ImageStore {
    pub content: ContentStore,
    pub snapshots: SnapshotStore,
    db: Mutex<ImageDb>,
    /// Snapshots in use by containers (holder id → chain IDs): never garbage-collected.
    holds: Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl ImageStore {
    /// Opens the store under `root`, sweeping what an interrupted pull or removal left.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        Ok(ImageStore {
            content: ContentStore::open(root)?,
            snapshots: SnapshotStore::open(root)?,
            db: Mutex::new(ImageDb::open(root)?),
            holds: Mutex::new(Default::default()),
        })
    }

    fn db(&self) -> MutexGuard<'_, ImageDb> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.db().list().cloned().collect()
    }

    /// Finds an image by ID, ID prefix, tag or digest reference.
    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        self.db().resolve(name).cloned()
    }

    /// Records a pulled image (its blobs and snapshots must already be stored).
    pub fn record(&self, rec: ImageRecord) -> Result<(), ImageError> {
        self.db().upsert(rec)
    }

    /// The image's config as stored.
    pub fn config(&self, rec: &ImageRecord) -> Result<(ImageConfig, Vec<u8>), ImageError> {
        let d =
            Digest::parse(&rec.id).map_err(|e| ImageError::NotFound(format!("{}: {e}", rec.id)))?;
        let bytes = self.content.read(&d)?;
        let config = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::io(format!("parse config {}", rec.id), std::io::Error::other(e))
        })?;
        Ok((config, bytes))
    }

    /// The annotations of the image's manifest, over those of the index it was pulled
    /// through (if any): where checkpoint images (`buildah config --annotation`) say so.
    pub fn annotations(
        &self,
        rec: &ImageRecord,
    ) -> Result<std::collections::BTreeMap<String, String>, ImageError> {
        let parse = |digest: &str| -> Result<Manifest, ImageError> {
            let d = Digest::parse(digest)
                .map_err(|e| ImageError::NotFound(format!("{}: {e}", rec.id)))?;
            let bytes = self.content.read(&d)?;
            manifest::parse(&bytes, None).map_err(|e| {
                ImageError::io(format!("parse manifest {digest}"), std::io::Error::other(e))
            })
        };
        let mut out = std::collections::BTreeMap::new();
        if let Some(top) = rec.blobs.first().filter(|t| **t != rec.manifest_digest)
            && let Manifest::Index(index) = parse(top)?
        {
            out.extend(index.annotations);
        }
        if let Manifest::Image(m) = parse(&rec.manifest_digest)? {
            out.extend(m.annotations);
        }
        Ok(out)
    }

    /// Keeps `rec`'s snapshots while `holder` (a container) uses them.
    pub fn hold(&self, holder: &str, rec: &ImageRecord) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.insert(holder.to_string(), rec.chain_ids.clone());
    }

    /// Drops `holder`'s hold and removes the snapshots that neither an image nor another
    /// holder uses any more (their image was removed while the container lived).
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        let chains = {
            let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            holds.remove(holder).unwrap_or_default()
        };
        let db = self.db();
        for chain in chains {
            let by_image = db.list().any(|r| r.chain_ids.contains(&chain));
            if !by_image
                && !self.held(&chain)
                && let Ok(d) = Digest::parse(&chain)
            {
                self.snapshots.remove(&d)?;
            }
        }
        Ok(())
    }

    fn held(&self, chain: &String) -> bool {
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.values().any(|c| c.contains(chain))
    }

    /// Removes the snapshots and blobs that no image uses and no container holds (what a
    /// failed pull stored before it failed); returns how many. The caller makes sure no pull
    /// is running (one may be about to record an image using them).
    pub fn remove_unused(&self) -> Result<usize, ImageError> {
        let db = self.db();
        let chains: HashSet<String> = db.list().flat_map(|r| r.chain_ids.clone()).collect();
        let blobs: HashSet<String> = db.list().flat_map(|r| r.blobs.clone()).collect();
        let mut removed = 0;
        for chain in self.snapshots.list()? {
            let name = chain.to_string();
            if !chains.contains(&name) && !self.held(&name) {
                self.snapshots.remove(&chain)?;
                removed += 1;
            }
        }
        for blob in self.content.list()? {
            if !blobs.contains(&blob.to_string()) {
                self.content.remove(&blob)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the image `name` resolves to, then every snapshot and blob no remaining image
    /// (nor running container) uses. `Ok(None)` if there was no such image.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let mut db = self.db();
        let Some(rec) = db.resolve(name).cloned() else {
            return Ok(None);
        };
        db.remove(&rec.id)?;
        let still_used = |pick: fn(&ImageRecord) -> &Vec<String>, s: &String| {
            db.list().any(|other| pick(other).contains(s))
        };
        // Snapshots a container still uses (its image or an image volume) stay: the last
        // holder's release removes them.
        for chain in rec
            .chain_ids
            .iter()
            .filter(|c| !still_used(|r| &r.chain_ids, c) && !self.held(c))
        {
            if let Ok(d) = Digest::parse(chain) {
                self.snapshots.remove(&d)?;
            }
        }
        for blob in rec.blobs.iter().filter(|b| !still_used(|r| &r.blobs, b)) {
            if let Ok(d) = Digest::parse(blob) {
                self.content.remove(&d)?;
            }
        }
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotInfo;

    fn snapshot(store: &ImageStore, seed: &[u8]) -> String {
        let chain = Digest::of(seed);
        let pending = store.snapshots.prepare(&chain).expect("prepare");
        pending
            .commit(&SnapshotInfo {
                chain_id: chain.to_string(),
                diff_id: chain.to_string(),
                blob_digest: chain.to_string(),
                blob_size: 1,
                unpacked_bytes: 1,
                entries: 1,
            })
            .expect("commit");
        chain.to_string()
    }

    #[test]
    fn removing_an_image_keeps_the_snapshots_a_container_holds_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        let chain = snapshot(&store, b"layer");
        let rec = ImageRecord {
            id: Digest::of(b"config").to_string(),
            repo_tags: vec!["docker.io/library/data:1".into()],
            repo_digests: vec![],
            size: 1,
            user: String::new(),
            pinned: false,
            manifest_digest: Digest::of(b"manifest").to_string(),
            blobs: vec![],
            chain_ids: vec![chain.clone()],
            pulled_at: 0,
        };
        store.record(rec.clone()).expect("record");
        store.hold("ctr/mounts/0", &rec);
        let d = Digest::parse(&chain).expect("digest");
        store.remove("data:1").expect("remove").expect("was there");
        assert!(
            store.snapshots.exists(&d),
            "held snapshot survives the image"
        );
        store.release("ctr/mounts/0").expect("release");
        assert!(
            !store.snapshots.exists(&d),
            "the last holder's release removes it"
        );
    }

    #[test]
    fn annotations_are_the_manifests_over_its_indexs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},
            "layers":[],"annotations":{"org.criu.checkpoint.container.name":"counter","a":"manifest"}}"#;
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[],"annotations":{"a":"index","b":"index"}}"#;
        let (md, id) = (Digest::of(manifest), Digest::of(index));
        store.content.write(&md, manifest).expect("manifest");
        store.content.write(&id, index).expect("index");
        let mut rec = ImageRecord {
            id: Digest::of(b"config").to_string(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 1,
            user: String::new(),
            pinned: false,
            manifest_digest: md.to_string(),
            blobs: vec![md.to_string()],
            chain_ids: vec![],
            pulled_at: 0,
        };
        let a = store.annotations(&rec).expect("annotations");
        assert_eq!(
            a.get("org.criu.checkpoint.container.name")
                .map(String::as_str),
            Some("counter")
        );
        assert_eq!(a.get("b"), None);
        rec.blobs = vec![id.to_string(), md.to_string()];
        let a = store.annotations(&rec).expect("annotations");
        assert_eq!(a.get("a").map(String::as_str), Some("manifest"));
        assert_eq!(a.get("b").map(String::as_str), Some("index"));
    }
}
