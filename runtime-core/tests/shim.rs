//! berth-shim as a real process: namespaces created and pinned, detached from its parent,
//! answering on its socket, and leaving nothing behind on shutdown. Needs root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::shim::ShimSpec;
use runtime_core::shim::{ShimBinary, client};

const TIMEOUT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[derive(Debug)]
struct ShimUnderTest {
    pid: u32,
    socket: PathBuf,
    ns_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ShimUnderTest {
    fn drop(&mut self) {
        // Kill only the shim this test started, by PID, and unpin what it left.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        for ns in ["net", "ipc", "uts", "pid"] {
            let _ = nix::mount::umount2(&self.ns_dir.join(ns), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn start(new_pid: bool, sysctls: &[(&str, &str)]) -> Result<ShimUnderTest, client::ShimError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("shim.sock");
    let ns_dir = dir.path().join("ns");
    let spec = ShimSpec {
        pod_id: "pod-under-test".into(),
        socket_path: socket.display().to_string(),
        ns_dir: ns_dir.display().to_string(),
        new_net: true,
        new_ipc: true,
        new_uts: true,
        new_pid,
        hostname: "berth-test-pod".into(),
        sysctls: sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        log_path: dir.path().join("shim.log").display().to_string(),
        cgroup_procs: vec![],
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pid = runtime.block_on(client::spawn(
        &ShimBinary::sealed(env!("CARGO_BIN_EXE_berth-shim")).expect("sealed shim"),
        &spec,
        dir.path(),
        TIMEOUT,
    ))?;
    Ok(ShimUnderTest {
        pid,
        socket,
        ns_dir,
        _dir: dir,
    })
}

fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat ns").ino()
}

fn parent_pid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("PPid")
}

#[test]
fn shim_pins_fresh_namespaces_and_is_detached() {
    if !is_root() {
        eprintln!("skipped: creating namespaces needs root");
        return;
    }
    let shim = start(true, &[("net.ipv4.ip_unprivileged_port_start", "0")]).expect("spawn shim");
    assert_ne!(
        parent_pid(shim.pid),
        std::process::id(),
        "shim must be reparented away from its starter"
    );
    for ns in ["net", "ipc", "uts"] {
        let pinned = ns_inode(&shim.ns_dir.join(ns));
        let shim_ns = ns_inode(Path::new(&format!("/proc/{}/ns/{ns}", shim.pid)));
        let own_ns = ns_inode(Path::new(&format!("/proc/self/ns/{ns}")));
        assert_eq!(pinned, shim_ns, "{ns} pinned is the shim's");
        assert_ne!(pinned, own_ns, "{ns} is a new namespace");
    }
    let pong = block_on(client::ping(&shim.socket, TIMEOUT)).expect("ping");
    assert_eq!(pong.pod_id, "pod-under-test");
    assert_eq!(pong.shim_pid, shim.pid);
    assert!(pong.reaper_pid > 0, "shared pid namespace has a reaper");
    let pid_ns = ns_inode(&shim.ns_dir.join("pid"));
    assert_eq!(
        pid_ns,
        ns_inode(Path::new(&format!("/proc/{}/ns/pid", pong.reaper_pid)))
    );
    let uts = format!("--uts={}", shim.ns_dir.join("uts").display());
    assert_eq!(
        nsenter(&[&uts, "cat", "/proc/sys/kernel/hostname"]),
        "berth-test-pod"
    );
    let net = format!("--net={}", shim.ns_dir.join("net").display());
    assert_eq!(
        nsenter(&[&net, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]),
        "0"
    );
    assert!(
        nsenter(&[&net, "ip", "-o", "link", "show", "lo"]).contains("UP"),
        "lo is up"
    );

    block_on(client::shutdown(&shim.socket, TIMEOUT)).expect("shutdown");
    assert!(!shim.socket.exists(), "socket removed");
    assert!(
        !shim.ns_dir.exists(),
        "ns dir removed: {:?}",
        std::fs::read_dir(&shim.ns_dir).map(|d| d.count())
    );
    wait_gone(shim.pid);
    wait_gone(pong.reaper_pid);
}

fn nsenter(args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        if zombie {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_sysctl_fails_start_with_the_reason_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: creating namespaces needs root");
        return;
    }
    let err = start(false, &[("net.no.such.key", "1")]).expect_err("bad sysctl");
    let msg = err.to_string();
    assert!(msg.contains("net.no.such.key"), "{msg}");
}

#[test]
fn shutdown_after_the_reaper_was_killed_is_prompt() {
    if !is_root() {
        eprintln!("skipped: creating namespaces needs root");
        return;
    }
    let shim = start(true, &[]).expect("spawn shim");
    let pong = block_on(client::ping(&shim.socket, TIMEOUT)).expect("ping");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pong.reaper_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill reaper");
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    block_on(client::shutdown(&shim.socket, TIMEOUT)).expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    wait_gone(shim.pid);
}

/// Runs one async client call to completion.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A shim started ahead of its pod waits, named `berth-spare`, detached from its starter, and
/// exits once its starter's end of the spec pipe closes without a spec (its berthd is gone).
#[test]
fn a_spare_shim_waits_detached_and_exits_when_no_spec_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = ShimBinary::sealed(env!("CARGO_BIN_EXE_berth-shim")).expect("sealed shim");
    let spare = block_on(client::spawn_spare(&bin, dir.path(), TIMEOUT)).expect("spare shim");
    let pid = spare.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim_end(), runtime_core::shim::SPARE_NAME);
    assert_ne!(parent_pid(pid), std::process::id(), "a spare is detached");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&dir.path().display().to_string()),
        "a spare names its berthd's state dir"
    );
    drop(spare);
    wait_gone(pid);
}
