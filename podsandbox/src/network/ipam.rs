//! Host-local IPAM: one file per allocated address under `<state_dir>/ipam/`,
//! named after the address and holding the pod id, created with `O_EXCL` so
//! two allocations (even from two processes) can never share an address.
//!
//! Which pod holds which address is also kept in memory (read from the files at first use),
//! so an allocation or a lookup does not read every file. A reservation is not fsynced: it
//! describes a live veth, which a machine crash takes with it; after one, a file may come
//! back empty or be gone, and the start-up sweep releases addresses no pod holds.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::error::NetworkError;

/// Name of the file remembering the last allocated address.
const LAST_RESERVED: &str = "last_reserved_ip";

/// Address allocator for one pod CIDR, persisted in a directory.
#[derive(Debug)]
pub(crate) struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    /// Each pod's address, once read from the files; the lock also keeps in-process
    /// allocations in order (`O_EXCL` is what makes them safe).
    owners: Mutex<Option<HashMap<String, Ipv4Addr>>>,
}

impl Ipam {
    /// An allocator over `cidr` storing its files in `dir`; `gateway` is never handed out.
    pub(crate) fn new(dir: PathBuf, cidr: Ipv4Net, gateway: Ipv4Addr) -> Ipam {
        Ipam {
            dir,
            cidr,
            gateway,
            owners: Mutex::new(None),
        }
    }

    /// Path of the file recording `ip`.
    pub(crate) fn ip_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Allocates the next free address after the last allocated one (wrapping).
    pub(crate) fn allocate(&self, pod_id: &str) -> Result<Ipv4Addr, NetworkError> {
        let mut guard = self.owners();
        fs::create_dir_all(&self.dir).map_err(self.file_err(pod_id, &self.dir))?;
        let owners = self.loaded(&mut guard, pod_id)?;
        if let Some(&ip) = owners.get(pod_id) {
            return Err(NetworkError::AlreadyAttached {
                pod_id: pod_id.to_string(),
                ip,
            });
        }
        for ip in self.candidates(self.last_reserved()) {
            if self.try_reserve(pod_id, ip)? {
                owners.insert(pod_id.to_string(), ip);
                self.save_last_reserved(pod_id, ip)?;
                return Ok(ip);
            }
        }
        Err(NetworkError::IpamExhausted {
            pod_id: pod_id.to_string(),
            cidr: self.cidr,
        })
    }

    /// Releases every address held by `pod_id`; returns them (empty if none).
    pub(crate) fn release(&self, pod_id: &str) -> Result<Vec<Ipv4Addr>, NetworkError> {
        // Loaded first, so that a later first read of the files cannot bring the pod back.
        if let Ok(owners) = self.loaded(&mut self.owners(), pod_id) {
            owners.remove(pod_id);
        }
        // From the files, which also finds an address the map lost track of.
        let mut released = Vec::new();
        for (ip, owner) in self.allocations(pod_id)? {
            if owner != pod_id {
                continue;
            }
            let path = self.ip_file(ip);
            match fs::remove_file(&path) {
                Ok(()) => released.push(ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.file_err(pod_id, &path)(e)),
            }
        }
        Ok(released)
    }

    /// The address held by `pod_id`, if any.
    pub(crate) fn lookup(&self, pod_id: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let mut guard = self.owners();
        Ok(self.loaded(&mut guard, pod_id)?.get(pod_id).copied())
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, Ipv4Addr>>> {
        self.owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pods' addresses, read from the files the first time.
    fn loaded<'a>(
        &self,
        owners: &'a mut Option<HashMap<String, Ipv4Addr>>,
        pod_id: &str,
    ) -> Result<&'a mut HashMap<String, Ipv4Addr>, NetworkError> {
        if owners.is_none() {
            let read = self.allocations(pod_id)?;
            *owners = Some(read.into_iter().map(|(ip, pod)| (pod, ip)).collect());
        }
        Ok(owners.get_or_insert_with(HashMap::new))
    }

    /// Every allocation as (address, pod id); `pod_id` only names the caller in errors.
    pub(crate) fn allocations(
        &self,
        pod_id: &str,
    ) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.file_err(pod_id, &self.dir)(e)),
        };
        let mut allocations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(self.file_err(pod_id, &self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(owner) => allocations.push((ip, owner.trim().to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.file_err(pod_id, &entry.path())(e)),
            }
        }
        allocations.sort();
        Ok(allocations)
    }

    /// Every usable host address, starting right after `last` and wrapping.
    fn candidates(&self, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.cidr.network()) + 1;
        let count = u32::from(self.cidr.broadcast()).saturating_sub(first);
        let start = last
            .map(u32::from)
            .filter(|ip| (first..first + count).contains(ip))
            .map_or(0, |ip| ip + 1 - first);
        (0..count)
            .map(move |i| Ipv4Addr::from(first + (start + i) % count))
            .filter(move |ip| *ip != self.gateway)
    }

    /// Creates the file for `ip` exclusively; false when it is already taken.
    fn try_reserve(&self, pod_id: &str, ip: Ipv4Addr) -> Result<bool, NetworkError> {
        let path = self.ip_file(ip);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(self.file_err(pod_id, &path)(e)),
        };
        // Not fsynced (see the module doc).
        let written = file.write_all(pod_id.as_bytes());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(self.file_err(pod_id, &path)(e));
        }
        Ok(true)
    }

    /// The last allocated address, if recorded and readable.
    fn last_reserved(&self) -> Option<Ipv4Addr> {
        let text = fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?;
        text.trim().parse().ok()
    }

    /// Records `ip` as the last allocated address (atomically, via rename).
    fn save_last_reserved(&self, pod_id: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
        let path = self.dir.join(LAST_RESERVED);
        let tmp = self
            .dir
            .join(format!(".{LAST_RESERVED}.{}", std::process::id()));
        fs::write(&tmp, ip.to_string())
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(self.file_err(pod_id, &path))
    }

    fn file_err(&self, pod_id: &str, path: &Path) -> impl FnOnce(io::Error) -> NetworkError {
        let (pod_id, path) = (pod_id.to_string(), path.to_path_buf());
        move |source| NetworkError::Ipam {
            pod_id,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, cidr: &str) -> Ipam {
        let cidr: Ipv4Net = cidr.parse().expect("valid cidr");
        let gateway = cidr.hosts().next().expect("cidr has hosts");
        Ipam::new(dir.join("ipam"), cidr, gateway)
    }

    #[test]
    fn allocate_skips_gateway_and_continues_after_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.1.2.0/29");
        let first = ipam.allocate("a").expect("allocate a");
        let second = ipam.allocate("b").expect("allocate b");
        assert_eq!(first, Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(second, Ipv4Addr::new(10, 1, 2, 3));
        ipam.release("a").expect("release a");
        // The freed .2 is not reused before the range wraps.
        assert_eq!(
            ipam.allocate("c").expect("allocate c"),
            Ipv4Addr::new(10, 1, 2, 4)
        );
    }

    #[test]
    fn allocate_wraps_and_reports_exhaustion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.1.2.0/30");
        assert_eq!(
            ipam.allocate("a").expect("allocate a"),
            Ipv4Addr::new(10, 1, 2, 2)
        );
        assert!(matches!(
            ipam.allocate("b"),
            Err(NetworkError::IpamExhausted { .. })
        ));
        ipam.release("a").expect("release a");
        assert_eq!(
            ipam.allocate("b").expect("allocate b"),
            Ipv4Addr::new(10, 1, 2, 2)
        );
    }

    #[test]
    fn allocate_rejects_a_pod_that_already_has_an_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.1.2.0/24");
        let ip = ipam.allocate("a").expect("allocate a");
        assert!(
            matches!(ipam.allocate("a"), Err(NetworkError::AlreadyAttached { ip: got, .. }) if got == ip)
        );
        assert_eq!(ipam.lookup("a").expect("lookup"), Some(ip));
    }

    #[test]
    fn a_released_pod_is_forgotten_and_an_empty_file_is_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.1.2.0/24");
        // What a machine crash may leave of an unsynced reservation.
        fs::create_dir_all(dir.path().join("ipam")).expect("mkdir");
        fs::write(dir.path().join("ipam/10.1.2.9"), "").expect("write");
        let ip = ipam.allocate("a").expect("allocate a");
        assert_eq!(ipam.release("a").expect("release"), vec![ip]);
        assert_eq!(ipam.lookup("a").expect("lookup"), None);
        assert!(ipam.allocate("a").is_ok(), "a released pod attaches again");
        assert_eq!(
            ipam.release("").expect("release the empty one"),
            vec![Ipv4Addr::new(10, 1, 2, 9)]
        );
    }

    #[test]
    fn release_is_idempotent_and_state_survives_a_new_allocator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ipam(dir.path(), "10.1.2.0/24")
            .allocate("a")
            .expect("allocate a");
        let again = ipam(dir.path(), "10.1.2.0/24");
        assert_eq!(again.lookup("a").expect("lookup"), Some(ip));
        assert_ne!(again.allocate("b").expect("allocate b"), ip);
        assert_eq!(again.release("a").expect("release"), vec![ip]);
        assert!(again.release("a").expect("release twice").is_empty());
    }
}
