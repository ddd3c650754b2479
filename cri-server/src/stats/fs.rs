//! Writable-layer usage: bytes and inodes of a container's overlay upper directory.
//!
//! The kernel keeps no per-directory totals, so the upper dir is walked (like `du -x`:
//! allocated blocks, hard links counted once, not crossing into other filesystems). A walk
//! is cached per container for a time proportional to what it cost
//! ([`LayerUsageCache::ttl_for`]): small layers are fresh on every kubelet poll, huge ones
//! cost at most about 2% of one core.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time a walk's result is reused.
pub const MIN_LAYER_TTL: Duration = Duration::from_secs(1);
/// The longest time a walk's result is reused.
pub const MAX_LAYER_TTL: Duration = Duration::from_secs(60);
/// A result is reused for this many times the walk's duration (between the two bounds).
pub const LAYER_TTL_FACTOR: u32 = 50;

/// Space a writable layer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// Allocated bytes (`st_blocks` × 512) of every file, directory and link.
    pub bytes: u64,
    /// Inodes (hard links counted once), the upper directory itself included.
    pub inodes: u64,
    /// When the walk finished, in nanoseconds since the epoch.
    pub at_ns: i64,
    /// The mount point of the filesystem holding the layer.
    pub mountpoint: String,
}

/// Bytes and inodes under `dir` without leaving its filesystem; entries that vanish during
/// the walk are skipped.
fn walk_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let root = std::fs::symlink_metadata(dir)?;
    let device = root.dev();
    let (mut bytes, mut inodes) = (root.blocks() * 512, 1u64);
    let mut linked: HashSet<u64> = HashSet::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.nlink() > 1 && !linked.insert(meta.ino()) {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
        }
    }
    Ok((bytes, inodes))
}

/// The mount point in `mountinfo` (the text of `/proc/self/mountinfo`) of the filesystem
/// holding `path`: the longest mount point that contains it.
fn mountpoint_of(path: &Path, mountinfo: &str) -> Option<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|mount| path.starts_with(mount))
        .max_by_key(|mount| mount.components().count())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match escape.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Size and inodes of the filesystem holding a writable layer (`statvfs`): the container's
/// limit is the whole filesystem, as with cAdvisor for overlay layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsCapacity {
    /// Total size in bytes.
    pub bytes: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Inodes free.
    pub inodes_free: u64,
}

/// The capacity of the filesystem holding `path`.
pub fn fs_capacity(path: &Path) -> std::io::Result<FsCapacity> {
    let fs = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(FsCapacity {
        bytes: fs.blocks().saturating_mul(fs.fragment_size()),
        inodes: fs.files(),
        inodes_free: fs.files_free(),
    })
}

/// The device node of block device `major:minor` as cAdvisor names it (`/dev/sda`), from the
/// `DEVNAME` in `<sys_root>/dev/block/<major>:<minor>/uevent`; `major:minor` if unknown.
pub fn block_device_name(sys_root: &Path, major: u64, minor: u64) -> String {
    let uevent = sys_root.join(format!("dev/block/{major}:{minor}/uevent"));
    std::fs::read_to_string(uevent)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|name| format!("/dev/{}", name.trim()))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// Walk results per container, and mount points per device.
#[derive(Debug, Default)]
pub struct LayerUsageCache {
    entries: Mutex<HashMap<String, Cached>>,
    mountpoints: Mutex<HashMap<u64, String>>,
}

#[derive(Debug, Clone)]
struct Cached {
    usage: LayerUsage,
    walked: Instant,
    ttl: Duration,
}

impl LayerUsageCache {
    /// How long a walk that took `cost` is reused.
    fn ttl_for(cost: Duration) -> Duration {
        (cost * LAYER_TTL_FACTOR).clamp(MIN_LAYER_TTL, MAX_LAYER_TTL)
    }

    /// The usage of container `id`'s upper dir `upper`: cached, or walked now.
    pub fn usage(&self, id: &str, upper: &Path) -> std::io::Result<LayerUsage> {
        if let Some(cached) = self.lock_entries().get(id)
            && cached.walked.elapsed() < cached.ttl
        {
            return Ok(cached.usage.clone());
        }
        let started = Instant::now();
        let (bytes, inodes) = walk_usage(upper)?;
        let cost = started.elapsed();
        let usage = LayerUsage {
            bytes,
            inodes,
            at_ns: crate::store::ids::now_ns(),
            mountpoint: self.mountpoint(upper),
        };
        tracing::debug!(
            container_id = id,
            bytes,
            inodes,
            walk_us = cost.as_micros() as u64,
            "writable layer walked"
        );
        self.lock_entries().insert(
            id.to_string(),
            Cached {
                usage: usage.clone(),
                walked: Instant::now(),
                ttl: Self::ttl_for(cost),
            },
        );
        Ok(usage)
    }

    /// Forgets containers for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock_entries().retain(|id, _| keep(id));
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mount point holding `dir`, looked up once per device.
    fn mountpoint(&self, dir: &Path) -> String {
        let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else {
            return String::new();
        };
        let mut known = self.mountpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mountpoint) = known.get(&device) {
            return mountpoint.clone();
        }
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let found = mountpoint_of(&canonical, &mountinfo)
            .map(|m| m.display().to_string())
            .unwrap_or_default();
        known.insert(device, found.clone());
        found
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn walk_counts_files_dirs_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (empty_bytes, empty_inodes) = walk_usage(dir.path()).expect("walk empty");
        assert_eq!(empty_inodes, 1, "the directory itself");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/data"), vec![7u8; 1 << 20]).expect("write");
        std::fs::hard_link(dir.path().join("sub/data"), dir.path().join("link")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("sym")).expect("symlink");
        let (bytes, inodes) = walk_usage(dir.path()).expect("walk");
        assert_eq!(inodes, 4, "root, sub, data (linked twice), sym");
        assert!(bytes >= empty_bytes + (1 << 20), "{bytes}");
        assert!(
            bytes < empty_bytes + (1 << 20) + (64 << 10),
            "link not double counted: {bytes}"
        );
    }

    #[test]
    fn unreadable_subdirectories_fail_the_walk_but_a_missing_root_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = walk_usage(&dir.path().join("missing")).expect_err("no dir");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        // Root bypasses permissions, so only check the mode change does not break the walk.
        let sub = dir.path().join("locked");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let walked = walk_usage(dir.path());
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(walked.expect("root reads anything").1, 2);
        } else {
            assert!(walked.is_err());
        }
    }

    #[test]
    fn mountpoint_is_the_longest_containing_mount() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:25 / /var/lib rw - ext4 /dev/sdb1 rw
31 22 0:26 / /var/lib/berth\\040data rw - xfs /dev/sdc1 rw
32 22 0:27 / /var/lib/berthx rw - xfs /dev/sdd1 rw
";
        let find =
            |p: &str| mountpoint_of(Path::new(p), mountinfo).map(|m| m.display().to_string());
        assert_eq!(
            find("/var/lib/berth data/containers/c1/upper").as_deref(),
            Some("/var/lib/berth data")
        );
        assert_eq!(
            find("/var/lib/berth/containers").as_deref(),
            Some("/var/lib"),
            "component-wise"
        );
        assert_eq!(find("/srv").as_deref(), Some("/"));
        assert_eq!(mountpoint_of(Path::new("relative"), mountinfo), None);
    }

    #[test]
    fn capacity_of_the_filesystem_holding_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = fs_capacity(dir.path()).expect("statvfs");
        assert!(cap.bytes > 0 && cap.inodes_free <= cap.inodes, "{cap:?}");
        assert_eq!(
            fs_capacity(&dir.path().join("missing"))
                .expect_err("missing")
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn block_devices_are_named_from_uevent() {
        let sys = tempfile::tempdir().expect("tempdir");
        let dev = sys.path().join("dev/block/8:16");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::write(
            dev.join("uevent"),
            "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n",
        )
        .expect("uevent");
        assert_eq!(block_device_name(sys.path(), 8, 16), "/dev/sdb");
        assert_eq!(block_device_name(sys.path(), 253, 0), "253:0");
    }

    #[test]
    fn ttl_grows_with_the_cost_of_a_walk_within_bounds() {
        assert_eq!(
            LayerUsageCache::ttl_for(Duration::from_micros(50)),
            MIN_LAYER_TTL
        );
        assert_eq!(
            LayerUsageCache::ttl_for(Duration::from_millis(100)),
            Duration::from_secs(5)
        );
        assert_eq!(
            LayerUsageCache::ttl_for(Duration::from_secs(10)),
            MAX_LAYER_TTL
        );
    }

    #[test]
    fn cached_usage_is_reused_within_its_ttl_and_retain_drops_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = LayerUsageCache::default();
        let first = cache.usage("c1", dir.path()).expect("walk");
        assert!(!first.mountpoint.is_empty());
        std::fs::write(dir.path().join("new"), vec![1u8; 1 << 16]).expect("write");
        assert_eq!(cache.usage("c1", dir.path()).expect("cached"), first);
        cache.retain(|_| false);
        assert_eq!(cache.usage("c1", dir.path()).expect("walk again").inodes, 2);
    }
}
