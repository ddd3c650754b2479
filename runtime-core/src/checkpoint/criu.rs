//! Running the `criu` binary: finding it, `criu check`, `criu dump` and `criu restore` with
//! the options berth's containers need, each bounded by a timeout.
//!
//! berth drives CRIU's command line rather than its RPC (`criu swrk`) interface: the options
//! are few and fixed, the command line is what CRIU documents and tests most, and no crate
//! wraps CRIU's protobuf RPC (go-criu is Go only).

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why CRIU could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriuError {
    /// No `criu` binary on `PATH` (nor in `/usr/sbin`, `/sbin`).
    Missing,
    /// `criu check` failed on this host: the kernel lacks what CRIU needs. The text is CRIU's
    /// own error lines.
    Unsupported(String),
    /// CRIU ran and failed; the text is its error lines (from the log when there is one).
    Failed {
        action: &'static str,
        reason: String,
    },
    /// CRIU did not finish in time (it was killed).
    Timeout {
        action: &'static str,
        after: Duration,
    },
    /// CRIU could not be started.
    Spawn(String),
}

impl fmt::Display for CriuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CriuError::Missing => write!(
                f,
                "CRIU is not installed: no `criu` binary on PATH, /usr/sbin or /sbin \
                 (install Debian's `criu` package)"
            ),
            CriuError::Unsupported(reason) => write!(
                f,
                "CRIU cannot checkpoint on this host: `criu check` failed: {reason}"
            ),
            CriuError::Failed { action, reason } => write!(f, "criu {action} failed: {reason}"),
            CriuError::Timeout { action, after } => {
                write!(
                    f,
                    "criu {action} did not finish within {after:?} and was killed"
                )
            }
            CriuError::Spawn(e) => write!(f, "cannot run criu: {e}"),
        }
    }
}

impl std::error::Error for CriuError {}

/// The `criu` binary: `$PATH` first, then `/usr/sbin` and `/sbin` (where Debian puts it and
/// which a non-login PATH may lack).
pub fn find() -> Result<PathBuf, CriuError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("criu"))
        .find(|p| is_executable(p))
        .ok_or(CriuError::Missing)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `criu check`: Ok when CRIU says the kernel has what it needs, else CRIU's reason.
pub fn check(criu: &Path, timeout: Duration) -> Result<(), CriuError> {
    let out = run(criu, &["check".into()], timeout, "check")?;
    if out.success {
        return Ok(());
    }
    Err(CriuError::Unsupported(error_lines(&out.output)))
}

/// What `criu dump` is told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// The container's init process as the host sees it: the root of the dumped tree.
    pub pid: u32,
    /// Where the images go (the archive's `checkpoint/`).
    pub images_dir: PathBuf,
    /// Where CRIU writes its log (`dump.log`) and statistics.
    pub work_dir: PathBuf,
    /// Keep the container running after the dump (kubelet's checkpoint does).
    pub leave_running: bool,
    /// Namespaces that belong to the pod and are not dumped: (kind, inode, key).
    pub external_ns: Vec<ExternalNs>,
    /// Mount points whose source is outside the container (bind mounts from the host), by
    /// their path in the container; the same path is their key.
    pub external_mounts: Vec<String>,
    /// Open files outside the container (a `/dev/null` stdin opened from the host), by their
    /// CRIU key `file[<mnt_id>:<inode>]` (hex).
    pub external_files: Vec<String>,
}

/// A namespace CRIU leaves out of the images and expects to be given back on restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNs {
    /// `net` (the only kind CRIU 3.17 restores from an inherited fd besides `pid`).
    pub kind: &'static str,
    pub inode: u64,
    pub key: String,
}

/// The key the pod's network namespace is dumped under (runc uses the same).
pub const NET_NS_KEY: &str = "extRootNetNS";

/// Options every dump and restore of a berth container uses: established TCP connections and
/// listeners, file locks, unix sockets whose peer is outside (logging sockets), and no CRIU
/// cgroup handling (berth puts the restored tree in its cgroup itself). The network is locked
/// during the dump with nftables (berth's own network needs `nft` anyway; CRIU's default,
/// iptables, is often not installed).
const COMMON: &[&str] = &[
    "--tcp-established",
    "--network-lock",
    "nftables",
    "--file-locks",
    "--ext-unix-sk",
    "--manage-cgroups=ignore",
    "-v4",
];

/// The `criu dump` command line.
pub fn dump_args(o: &DumpOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["dump".into(), "--tree".into(), o.pid.to_string().into()];
    a.push("--images-dir".into());
    a.push(o.images_dir.clone().into());
    a.push("--work-dir".into());
    a.push(o.work_dir.clone().into());
    a.push("--log-file".into());
    a.push("dump.log".into());
    a.extend(COMMON.iter().map(OsString::from));
    if o.leave_running {
        a.push("--leave-running".into());
    }
    for ns in &o.external_ns {
        a.push("--external".into());
        a.push(format!("{}[{}]:{}", ns.kind, ns.inode, ns.key).into());
    }
    for m in &o.external_mounts {
        a.push("--external".into());
        a.push(format!("mnt[{m}]:{m}").into());
    }
    for f in &o.external_files {
        a.push("--external".into());
        a.push(f.into());
    }
    a
}

/// What `criu restore` is told. The fds named here must be open (without close-on-exec) in
/// the process that execs CRIU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    pub images_dir: PathBuf,
    pub work_dir: PathBuf,
    /// The container's mounted root file system.
    pub root: PathBuf,
    /// Where CRIU writes the restored tree's root PID.
    pub pidfile: PathBuf,
    /// fds handed to the restored tree: (fd number in CRIU's process, key) — the pod's network
    /// namespace under [`NET_NS_KEY`], the new stdio pipes under their dumped `pipe:[inode]`.
    pub inherit_fds: Vec<(i32, String)>,
    /// Namespaces joined instead of created: (`ipc`/`uts`, pinned namespace file).
    pub join_ns: Vec<(&'static str, PathBuf)>,
    /// External mounts: (key as dumped, host source now).
    pub external_mounts: Vec<(String, PathBuf)>,
}

/// The `criu restore` command line: detached, the restored root becoming a sibling of CRIU
/// (so a child of whoever forked CRIU: the pod's shim).
pub fn restore_args(o: &RestoreOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["restore".into(), "--images-dir".into()];
    a.push(o.images_dir.clone().into());
    a.push("--work-dir".into());
    a.push(o.work_dir.clone().into());
    a.push("--log-file".into());
    a.push("restore.log".into());
    a.push("--root".into());
    a.push(o.root.clone().into());
    a.push("--pidfile".into());
    a.push(o.pidfile.clone().into());
    a.push("--restore-detached".into());
    a.push("--restore-sibling".into());
    a.extend(COMMON.iter().map(OsString::from));
    for (fd, key) in &o.inherit_fds {
        a.push("--inherit-fd".into());
        a.push(format!("fd[{fd}]:{key}").into());
    }
    for (kind, path) in &o.join_ns {
        a.push("--join-ns".into());
        let mut v = OsString::from(format!("{kind}:"));
        v.push(path);
        a.push(v);
    }
    for (key, source) in &o.external_mounts {
        a.push("--external".into());
        let mut v = OsString::from(format!("mnt[{key}]:"));
        v.push(source);
        a.push(v);
    }
    a
}

/// Runs `criu dump`; on failure the reason is the error lines of `dump.log`.
pub fn dump(criu: &Path, o: &DumpOptions, timeout: Duration) -> Result<(), CriuError> {
    let out = run(criu, &dump_args(o), timeout, "dump")?;
    if out.success {
        return Ok(());
    }
    Err(CriuError::Failed {
        action: "dump",
        reason: log_reason(&o.work_dir.join("dump.log"), &out.output),
    })
}

/// The error lines of a CRIU log (or of `fallback`, CRIU's own output, without a log).
pub fn log_reason(log: &Path, fallback: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let from_log = error_lines(&text);
    if from_log.is_empty() {
        error_lines(fallback)
    } else {
        from_log
    }
}

/// CRIU's error lines (`Error (file:line): message`), joined; else the last non-empty lines.
pub fn error_lines(output: &str) -> String {
    let errors: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("Error") || l.starts_with("Looks bad"))
        .map(|l| match l.find("): ") {
            Some(i) if l.contains("Error (") => l[i + 3..].trim(),
            _ => l.trim(),
        })
        .filter(|l| !l.is_empty())
        .collect();
    let picked: Vec<&str> = if errors.is_empty() {
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].to_vec()
    } else {
        errors.into_iter().take(8).collect()
    };
    let joined = picked.join("; ");
    if joined.is_empty() {
        "no output".to_string()
    } else {
        joined
    }
}

/// CRIU's exit status and its stdout + stderr.
pub struct Output {
    pub success: bool,
    pub output: String,
}

/// Runs criu with `args`, killing it after `timeout`.
pub fn run(
    criu: &Path,
    args: &[OsString],
    timeout: Duration,
    action: &'static str,
) -> Result<Output, CriuError> {
    let mut child = Command::new(criu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CriuError::Spawn(format!("{}: {e}", criu.display())))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CriuError::Timeout {
                    action,
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(CriuError::Spawn(format!("wait for criu: {e}"))),
        }
    };
    let mut output = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut output);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut output);
    }
    Ok(Output {
        success: status.success(),
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: Vec<OsString>) -> Vec<String> {
        a.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dump_marks_pod_namespace_and_host_binds_external() {
        let a = strings(dump_args(&DumpOptions {
            pid: 42,
            images_dir: "/w/checkpoint".into(),
            work_dir: "/w".into(),
            leave_running: true,
            external_ns: vec![ExternalNs {
                kind: "net",
                inode: 4026532000,
                key: NET_NS_KEY.into(),
            }],
            external_mounts: vec!["/etc/hosts".into()],
            external_files: vec!["file[18:5]".into()],
        }))
        .join(" ");
        assert!(a.starts_with("dump --tree 42 --images-dir /w/checkpoint --work-dir /w"));
        assert!(a.contains("--leave-running"));
        assert!(a.contains("--external net[4026532000]:extRootNetNS"));
        assert!(a.contains("--external mnt[/etc/hosts]:/etc/hosts"));
        assert!(a.contains("--external file[18:5]"));
        assert!(a.contains("--tcp-established --network-lock nftables"));
    }

    #[test]
    fn restore_is_detached_sibling_with_inherited_fds_and_joined_namespaces() {
        let a = strings(restore_args(&RestoreOptions {
            images_dir: "/r/checkpoint".into(),
            work_dir: "/r".into(),
            root: "/run/berth/rootfs/c".into(),
            pidfile: "/r/pid".into(),
            inherit_fds: vec![(3, NET_NS_KEY.into()), (4, "pipe:[77]".into())],
            join_ns: vec![("ipc", "/run/berth/ns/p/ipc".into())],
            external_mounts: vec![("/etc/hosts".into(), "/run/berth/pods/p/hosts".into())],
        }))
        .join(" ");
        assert!(a.contains("--restore-detached --restore-sibling"));
        assert!(a.contains("--root /run/berth/rootfs/c"));
        assert!(a.contains("--inherit-fd fd[3]:extRootNetNS"));
        assert!(a.contains("--inherit-fd fd[4]:pipe:[77]"));
        assert!(a.contains("--join-ns ipc:/run/berth/ns/p/ipc"));
        assert!(a.contains("--external mnt[/etc/hosts]:/run/berth/pods/p/hosts"));
    }

    #[test]
    fn error_lines_keep_criu_reasons() {
        let out = "Warn (criu/kerndat.c:1)\nError (criu/vdso.c:300): vdso: Unexpected rt vDSO area bounds\nLooks bad.\n";
        assert_eq!(
            error_lines(out),
            "vdso: Unexpected rt vDSO area bounds; Looks bad."
        );
        assert_eq!(error_lines("a\nb\n\nc\nd\n"), "b; c; d");
        assert_eq!(error_lines(""), "no output");
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_not_a_panic() {
        let e = run(
            Path::new("/nonexistent/criu"),
            &[],
            Duration::from_secs(1),
            "check",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("cannot run criu"), "{e}");
    }
}
