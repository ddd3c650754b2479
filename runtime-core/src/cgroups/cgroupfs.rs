//! Reading and writing cgroupfs files with the cgroup and file named in every error.
//!
//! Writes open files without `O_CREAT`, like runc: cgroupfs cannot create files, and a missing
//! interface file (controller not enabled) should fail as "No such file", not "Permission denied".

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::warn;

use super::{Cgroup, CgroupError};

/// Writes `value` to the existing cgroup interface file `file`.
pub(crate) fn write(cgroup: &str, file: &Path, value: &str) -> Result<(), CgroupError> {
    let io_err = |e| CgroupError::io(cgroup, format!("write {value:?} to"), file.to_path_buf(), e);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .map_err(io_err)?;
    f.write_all(value.as_bytes()).map_err(io_err)
}

/// Reads a whole interface file.
pub(crate) fn read(cgroup: &str, file: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(file).map_err(|e| CgroupError::io(cgroup, "read", file.to_path_buf(), e))
}

/// Reads an interface file, `None` if it does not exist.
pub(crate) fn read_if_exists(cgroup: &str, file: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io(cgroup, "read", file.to_path_buf(), e)),
    }
}

/// Reads a file holding one unsigned number.
pub(crate) fn read_u64(cgroup: &str, file: &Path) -> Result<u64, CgroupError> {
    parse_u64(cgroup, file, &read(cgroup, file)?)
}

/// Like [`read_u64`], `None` if the file does not exist.
pub(crate) fn read_u64_if_exists(cgroup: &str, file: &Path) -> Result<Option<u64>, CgroupError> {
    read_if_exists(cgroup, file)?
        .map(|text| parse_u64(cgroup, file, &text))
        .transpose()
}

fn parse_u64(cgroup: &str, file: &Path, text: &str) -> Result<u64, CgroupError> {
    let text = text.trim();
    text.parse()
        .map_err(|e| CgroupError::parse(cgroup, file.to_path_buf(), format!("{text:?}: {e}")))
}

/// Reads and parses an interface file with `parse`, `None` if it does not exist.
pub(crate) fn read_parsed_if_exists<T>(
    cgroup: &str,
    file: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, CgroupError> {
    read_if_exists(cgroup, file)?
        .map(|text| parse(&text).map_err(|r| CgroupError::parse(cgroup, file.to_path_buf(), r)))
        .transpose()
}

/// Like [`read_flat_keyed`], an empty map if the file does not exist.
pub(crate) fn read_flat_keyed_if_exists(
    cgroup: &str,
    file: &Path,
) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(read_parsed_if_exists(cgroup, file, parse_flat_keyed)?.unwrap_or_default())
}

/// The names of the files in `dir` (empty if it does not exist).
pub(crate) fn file_names(cgroup: &str, dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io(cgroup, "list", dir.to_path_buf(), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io(cgroup, "list", dir.to_path_buf(), e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Reads a flat-keyed file (`key value` per line) such as `memory.stat` or `cpu.stat`.
pub(crate) fn read_flat_keyed(
    cgroup: &str,
    file: &Path,
) -> Result<BTreeMap<String, u64>, CgroupError> {
    let text = read(cgroup, file)?;
    parse_flat_keyed(&text).map_err(|reason| CgroupError::parse(cgroup, file.to_path_buf(), reason))
}

/// The value of `key` in the flat-keyed `file`, which must be present.
pub(crate) fn flat_key(
    cgroup: &str,
    file: &Path,
    map: &BTreeMap<String, u64>,
    key: &str,
) -> Result<u64, CgroupError> {
    map.get(key)
        .copied()
        .ok_or_else(|| CgroupError::parse(cgroup, file.to_path_buf(), format!("no {key} line")))
}

/// The process IDs in `dir/cgroup.procs`; an error if the cgroup does not exist.
pub(crate) fn read_procs(cgroup: &str, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = dir.join("cgroup.procs");
    parse_procs(cgroup, &file, &read(cgroup, &file)?)
}

/// Like [`read_procs`], but a cgroup that does not exist holds no processes.
pub(crate) fn read_procs_if_exists(cgroup: &str, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = dir.join("cgroup.procs");
    match read_if_exists(cgroup, &file)? {
        Some(text) => parse_procs(cgroup, &file, &text),
        None => Ok(Vec::new()),
    }
}

fn parse_procs(cgroup: &str, file: &Path, text: &str) -> Result<Vec<u32>, CgroupError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .map_err(|e| CgroupError::parse(cgroup, file.to_path_buf(), format!("{l:?}: {e}")))
        })
        .collect()
}

/// The processes of the cgroup at `dir` and of all cgroups beneath it (none if it is absent).
pub(crate) fn subtree_procs(cgroup: &str, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut pids = read_procs_if_exists(cgroup, dir)?;
    for child in child_dirs(cgroup, dir)? {
        pids.extend(subtree_procs(cgroup, &child)?);
    }
    Ok(pids)
}

/// The child cgroups (subdirectories) of `dir`; none if `dir` is absent.
fn child_dirs(cgroup: &str, dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let io_err = |e| CgroupError::io(cgroup, "list", dir.to_path_buf(), e);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        if entry.file_type().map_err(io_err)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Creates the directory `dir` (not its parents); `true` if it was created, `false` if it existed.
pub(crate) fn make_dir(cgroup: &str, dir: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::io(cgroup, "create", dir.to_path_buf(), e)),
    }
}

/// Removes the cgroup at `dir` and every cgroup beneath it; absent is fine. Retries briefly on
/// EBUSY while the cgroup is empty (the kernel releases exiting tasks asynchronously), and fails
/// with [`CgroupError::Busy`] at once if processes are still in it.
pub(crate) fn remove_tree(cgroup: &str, dir: &Path) -> Result<(), CgroupError> {
    for child in child_dirs(cgroup, dir)? {
        remove_tree(cgroup, &child)?;
    }
    let mut delay = Duration::from_millis(10);
    let mut retries_left = 5;
    loop {
        let err = match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => e,
        };
        if err.raw_os_error() != Some(Errno::EBUSY as i32) || retries_left == 0 {
            return Err(CgroupError::io(cgroup, "remove", dir.to_path_buf(), err));
        }
        let pids = read_procs_if_exists(cgroup, dir)?;
        if !pids.is_empty() {
            let (cgroup, dir) = (cgroup.to_string(), dir.to_path_buf());
            return Err(CgroupError::Busy { cgroup, dir, pids });
        }
        retries_left -= 1;
        thread::sleep(delay);
        delay *= 2;
    }
}

/// Sends SIGKILL to each of `pids`; processes that already exited are fine.
pub(crate) fn kill_pids(cgroup: &str, pids: &[u32]) -> Result<(), CgroupError> {
    for &pid in pids {
        let raw = i32::try_from(pid).map_err(|_| {
            CgroupError::parse(
                cgroup,
                PathBuf::from("cgroup.procs"),
                format!("pid {pid} out of range"),
            )
        })?;
        match kill(Pid::from_raw(raw), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    cgroup: cgroup.to_string(),
                    pid,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Polls `done` with a growing interval until it returns true, failing after `timeout`.
pub(crate) fn poll_until(
    cgroup: &str,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    // Freezing a cgroup of sleeping tasks takes a fraction of a millisecond.
    let mut delay = Duration::from_micros(100);
    while !done()? {
        if start.elapsed() >= timeout {
            return Err(CgroupError::Timeout {
                cgroup: cgroup.to_string(),
                what: what.to_string(),
                waited: start.elapsed(),
            });
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
    Ok(())
}

/// How long [`kill_until_empty`] keeps signalling before giving up.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Repeats `signal_round` until `list` reports no processes, for at most [`KILL_TIMEOUT`].
pub(crate) fn kill_until_empty(
    cgroup: &str,
    list: impl Fn() -> Result<Vec<u32>, CgroupError>,
    signal_round: impl Fn() -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    // A killed process is usually gone within a fraction of a millisecond: look again soon.
    let mut delay = Duration::from_micros(250);
    loop {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= KILL_TIMEOUT {
            return Err(CgroupError::Timeout {
                cgroup: cgroup.to_string(),
                what: format!("killing processes {pids:?}"),
                waited: start.elapsed(),
            });
        }
        signal_round()?;
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// One round of `kill_all` without `cgroup.kill`: freeze (when `can_freeze`, so nothing forks
/// meanwhile), SIGKILL every process `list` returns, thaw. A failed freeze only costs that race.
pub(crate) fn freeze_kill_thaw(
    cgroup: &dyn Cgroup,
    can_freeze: bool,
    list: impl Fn() -> Result<Vec<u32>, CgroupError>,
) -> Result<(), CgroupError> {
    let frozen = can_freeze
        && match cgroup.freeze() {
            Ok(()) => true,
            Err(e) => {
                warn!(cgroup = %cgroup.path(), error = %e, "freezing before kill failed; killing unfrozen");
                false
            }
        };
    let killed = list().and_then(|pids| kill_pids(cgroup.path(), &pids));
    if frozen {
        cgroup.thaw()?;
    }
    killed
}

/// Parses a flat-keyed file: one `key value` pair per line, values unsigned.
pub(crate) fn parse_flat_keyed(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {line:?} is not \"key value\""));
        };
        let value = value.parse().map_err(|e| format!("line {line:?}: {e}"))?;
        map.insert(key.to_string(), value);
    }
    Ok(map)
}
