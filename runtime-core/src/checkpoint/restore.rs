//! The shim's side of a restore: `criu restore` run as a child of the shim, so the restored
//! tree's root (a sibling of CRIU, `--restore-sibling`) is the shim's child, reaped and
//! logged like any container process.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::archive::{CHECKPOINT_DIR, DESCRIPTORS, STDIO_KEYS};
use super::criu::{self, NET_NS_KEY, RestoreOptions};

/// fd numbers the handed-in files get in CRIU's process (above anything CRIU opens first).
const FD_NET: i32 = 100;
const FD_STDIN: i32 = 101;
const FD_STDOUT: i32 = 102;
const FD_STDERR: i32 = 103;

/// One restore.
pub struct Restore<'a> {
    pub id: &'a str,
    /// The extracted checkpoint archive.
    pub dir: &'a Path,
    /// The container's mounted root.
    pub root: &'a Path,
    /// The pod's namespaces: `net` (inherited), `ipc` and `uts` (joined) when the container
    /// shares them.
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// `cgroup.procs` files of the container's cgroup: CRIU runs there, so the tree is born in it.
    pub cgroup_procs: &'a [PathBuf],
    /// Host sources of the mounts dumped as external, by path in the container.
    pub external_mounts: Vec<(String, PathBuf)>,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub timeout: Duration,
}

/// Restores the tree; its root's PID (a child of the calling process).
pub fn restore(r: Restore<'_>) -> Result<Pid, String> {
    let criu = criu::find().map_err(|e| e.to_string())?;
    let images = r.dir.join(CHECKPOINT_DIR);
    let keys = stdio_keys(&images);
    let key = |i: usize| keys.get(i).filter(|k| !k.is_empty()).cloned();
    let net = match &r.net_ns {
        Some(p) => Some(
            std::fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(|e| format!("open the pod's network namespace {}: {e}", p.display()))?,
        ),
        None => None,
    };
    // A stdin dumped as external but not asked for now: /dev/null, as a fresh start gets.
    let null = match (&r.stdin, key(0)) {
        (None, Some(_)) => Some(
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| format!("open /dev/null: {e}"))?,
        ),
        _ => None,
    };
    // The fds CRIU's process gets: (the file, its number there, its key).
    let mut handed: Vec<(&OwnedFd, i32, String)> = Vec::new();
    if let Some(fd) = &net {
        handed.push((fd, FD_NET, NET_NS_KEY.into()));
    }
    if let (Some(fd), Some(k)) = (r.stdin.as_ref().or(null.as_ref()), key(0)) {
        handed.push((fd, FD_STDIN, k));
    }
    if let Some(k) = key(1) {
        handed.push((&r.stdout, FD_STDOUT, k));
    }
    if let Some(k) = key(2).filter(|k| Some(k) != key(1).as_ref()) {
        handed.push((&r.stderr, FD_STDERR, k));
    }
    let pidfile = r.dir.join("restore.pid");
    let _ = std::fs::remove_file(&pidfile);
    let options = RestoreOptions {
        images_dir: images,
        work_dir: r.dir.to_path_buf(),
        root: r.root.to_path_buf(),
        pidfile: pidfile.clone(),
        inherit_fds: handed.iter().map(|(_, n, k)| (*n, k.clone())).collect(),
        join_ns: [("ipc", &r.ipc_ns), ("uts", &r.uts_ns)]
            .into_iter()
            .filter_map(|(kind, p)| p.clone().map(|p| (kind, p)))
            .collect(),
        external_mounts: r.external_mounts.clone(),
    };
    let moves: Vec<(i32, i32)> = handed
        .iter()
        .map(|(fd, n, _)| (fd.as_raw_fd(), *n))
        .collect();
    let procs: Vec<PathBuf> = r.cgroup_procs.to_vec();
    let mut cmd = Command::new(&criu);
    cmd.args(criu::restore_args(&options))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec: only write(2) to cgroup files (std's
    // fs::write allocates, which glibc's fork-safe allocator allows in a single-threaded
    // parent like the shim) and dup2/fcntl on fds the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                std::fs::write(p, b"0")?;
            }
            for (from, to) in &moves {
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("run {}: {e}", criu.display()))?;
    let deadline = Instant::now() + r.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "restore container {}: criu restore did not finish within {:?} and was killed",
                    r.id, r.timeout
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for criu restore: {e}")),
        }
    };
    if !status.success() {
        return Err(format!(
            "restore container {}: criu restore failed: {}",
            r.id,
            criu::log_reason(&r.dir.join("restore.log"), "")
        ));
    }
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| format!("restore container {}: criu wrote no pid file", r.id))?;
    Ok(Pid::from_raw(pid))
}

/// The dumped stdio keys: berth's `stdio-keys.json`, else the pipes of runc's
/// `descriptors.json` (an archive written by another runtime).
fn stdio_keys(images: &Path) -> Vec<String> {
    let read = |name: &str| -> Option<Vec<String>> {
        serde_json::from_slice(&std::fs::read(images.join(name)).ok()?).ok()
    };
    read(STDIO_KEYS).unwrap_or_else(|| {
        read(DESCRIPTORS)
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                if d.starts_with("pipe:") {
                    d
                } else {
                    String::new()
                }
            })
            .collect()
    })
}
