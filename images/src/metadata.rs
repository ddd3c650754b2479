//! Image records, persisted atomically in `<root_dir>/images.json`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::fsutil;
use crate::reference::ImageRef;

/// One pulled image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image ID: the config digest.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Compressed size of config and layers, as registries and kubelet count it.
    pub size: u64,
    /// `User` from the image config.
    pub user: String,
    pub pinned: bool,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Every content-store blob this image holds (index, manifest, config).
    pub blobs: Vec<String>,
    /// Snapshot chain IDs, bottom layer first.
    pub chain_ids: Vec<String>,
    /// Seconds since the epoch of the last pull.
    pub pulled_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DbFile {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

const DB_VERSION: u32 = 1;

/// All image records, in memory and on disk.
#[derive(Debug)]
pub struct ImageDb {
    path: PathBuf,
    images: BTreeMap<String, ImageRecord>,
}

impl ImageDb {
    /// Loads `<root>/images.json` (absent means empty). A file that does not parse is an error:
    /// it is never silently replaced.
    pub fn open(root: &Path) -> Result<ImageDb, ImageError> {
        let path = root.join("images.json");
        let images = match std::fs::read(&path) {
            Ok(bytes) => {
                let db: DbFile = serde_json::from_slice(&bytes).map_err(|e| {
                    ImageError::io(format!("parse {}", path.display()), io::Error::other(e))
                })?;
                if db.version != DB_VERSION {
                    return Err(ImageError::io(
                        format!("{}", path.display()),
                        io::Error::other(format!("unknown images.json version {}", db.version)),
                    ));
                }
                db.images
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(ImageError::io(format!("read {}", path.display()), e)),
        };
        Ok(ImageDb { path, images })
    }

    fn save(&self) -> Result<(), ImageError> {
        let file = DbFile {
            version: DB_VERSION,
            images: self.images.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| ImageError::io("encode images.json", io::Error::other(e)))?;
        fsutil::write_atomic(&self.path, &bytes)
            .map_err(|e| ImageError::io(format!("write {}", self.path.display()), e))
    }

    /// Adds or refreshes an image. Its tags move to it from any other image; names it already
    /// had are kept.
    pub fn upsert(&mut self, mut rec: ImageRecord) -> Result<(), ImageError> {
        for other in self.images.values_mut().filter(|o| o.id != rec.id) {
            other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
        }
        if let Some(old) = self.images.get(&rec.id) {
            merge_unique(&mut rec.repo_tags, &old.repo_tags);
            merge_unique(&mut rec.repo_digests, &old.repo_digests);
            merge_unique(&mut rec.blobs, &old.blobs);
            rec.pinned |= old.pinned;
        }
        self.images.insert(rec.id.clone(), rec);
        self.save()
    }

    /// Removes an image by ID, returning it if it was there.
    pub fn remove(&mut self, id: &str) -> Result<Option<ImageRecord>, ImageError> {
        let removed = self.images.remove(id);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    pub fn list(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    /// Finds an image by ID (`sha256:<hex>`, bare hex, or a unique hex prefix of 12 or more
    /// digits), by tag or by digest reference, normalized like a pull.
    pub fn resolve(&self, name: &str) -> Option<&ImageRecord> {
        if let Some(rec) = self.images.get(name) {
            return Some(rec);
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if let Some(d) = Digest::from_hex(hex) {
            if let Some(rec) = self.images.get(&d.to_string()) {
                return Some(rec);
            }
        } else if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = self.images.values().filter(|r| r.id[7..].starts_with(hex));
            if let (Some(one), None) = (hits.next(), hits.next()) {
                return Some(one);
            }
        }
        let r = ImageRef::parse(name).ok()?;
        match r.digest() {
            Some(d) => {
                let want = r.repo_digest(d);
                self.images
                    .values()
                    .find(|i| i.repo_digests.contains(&want))
            }
            None => {
                let want = r.repo_tag()?;
                self.images.values().find(|i| i.repo_tags.contains(&want))
            }
        }
    }
}

fn merge_unique(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id_seed: &[u8], tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(id_seed).to_string(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![format!("docker.io/library/busybox@{}", Digest::of(b"m"))],
            size: 1,
            user: String::new(),
            pinned: false,
            manifest_digest: Digest::of(b"m").to_string(),
            blobs: vec![],
            chain_ids: vec![],
            pulled_at: 0,
        }
    }

    #[test]
    fn tag_moves_to_the_newer_image_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = ImageDb::open(dir.path()).expect("open");
        db.upsert(rec(b"a", &["docker.io/library/busybox:latest"]))
            .expect("a");
        db.upsert(rec(b"b", &["docker.io/library/busybox:latest"]))
            .expect("b");
        let db = ImageDb::open(dir.path()).expect("reopen");
        let a = db.resolve(&Digest::of(b"a").to_string()).expect("a by id");
        assert!(a.repo_tags.is_empty());
        let latest = db.resolve("busybox").expect("by short name");
        assert_eq!(latest.id, Digest::of(b"b").to_string());
    }

    #[test]
    fn resolves_by_hex_prefix_digest_reference_and_bare_hex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = ImageDb::open(dir.path()).expect("open");
        let r = rec(b"a", &["docker.io/library/busybox:1"]);
        let id = r.id.clone();
        db.upsert(r).expect("upsert");
        assert!(db.resolve(&id[7..19]).is_some(), "12-digit prefix");
        assert!(db.resolve(&id[7..]).is_some(), "bare hex");
        assert!(
            db.resolve(&format!("busybox@{}", Digest::of(b"m")))
                .is_some()
        );
        assert!(db.resolve("busybox:2").is_none());
        assert!(db.resolve("not a ref!").is_none());
    }

    #[test]
    fn corrupt_db_is_an_error_not_a_wipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("images.json"), b"{garbage").expect("write");
        assert!(ImageDb::open(dir.path()).is_err());
    }
}
