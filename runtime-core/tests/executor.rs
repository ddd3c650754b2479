//! The native executor against the real kernel: containers from a busybox rootfs built here,
//! checked by what they print. Needs root (CI runs as root); the host's dynamic busybox
//! (`apt-get install busybox`) provides the userland.
//!
//! Tests hold one lock: they compare process-wide state (fds, children, mounts) before and
//! after spawning, which concurrent tests in the same process would disturb.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use runtime_core::executor::{
    self, ContainerProcess, ExecError, Mount, MountKind, PidNamespace, Propagation, Rlimit, Rootfs,
    Stdio, User,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &str = "sh cat ls id mount sleep echo hostname grep ps touch mkdir readlink stat \
                       env pwd wc head true false test";
/// containerd's default capabilities as a mask (CapEff of a default root container).
const DEFAULT_CAPS_MASK: u64 = 0xa80425fb;

use common::serial;

fn runnable(test: &str) -> bool {
    common::runnable("executor", test)
}

// ---------------------------------------------------------------------------------------
// Fixture: a busybox rootfs in a tempdir, mounted as an overlay by spawn
// ---------------------------------------------------------------------------------------

struct Fixture {
    dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("berth-executor-")
            .tempdir()
            .expect("tempdir");
        let fixture = Fixture {
            lower: dir.path().join("lower"),
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            target: dir.path().join("rootfs"),
            dir,
        };
        build_busybox_rootfs(&fixture.lower);
        fs::create_dir(&fixture.upper).expect("upper");
        fs::create_dir(&fixture.work).expect("work");
        fixture
    }

    fn rootfs(&self) -> Rootfs {
        Rootfs::Overlay {
            lower: vec![self.lower.clone()],
            upper: self.upper.clone(),
            work: self.work.clone(),
            target: self.target.clone(),
        }
    }

    /// A default container running `sh -c script`, with its output captured.
    fn shell(&self, script: &str) -> (ContainerProcess, Output) {
        self.process(&["sh", "-c", script])
    }

    fn process(&self, args: &[&str]) -> (ContainerProcess, Output) {
        let (stdout_rx, stdout_tx) = pipe();
        let (stderr_rx, stderr_tx) = pipe();
        let spec = ContainerProcess {
            id: "executor-test".into(),
            rootfs: self.rootfs(),
            readonly_rootfs: false,
            mounts: vec![],
            net_ns: None,
            ipc_ns: None,
            uts_ns: None,
            pid_ns: PidNamespace::New,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: User::default(),
            capabilities: Some(executor::default_capabilities()),
            no_new_privs: false,
            privileged: false,
            masked_paths: executor::default_masked_paths(),
            readonly_paths: executor::default_readonly_paths(),
            oom_score_adj: None,
            rlimits: vec![],
            cgroup_procs: vec![],
            seccomp: None,
            apparmor: None,
            stdio: Stdio {
                stdin: None,
                stdout: stdout_tx,
                stderr: stderr_tx,
            },
            user_ns: None,
        };
        (spec, Output::collect(stdout_rx, stderr_rx))
    }

    /// Lines of the test process's mountinfo below the fixture's directory.
    fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp.starts_with(&dir)))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = executor::cleanup_rootfs(&self.target);
    }
}

/// Busybox with its libraries at their `ldd` paths, applet links, users and groups.
fn build_busybox_rootfs(root: &Path) {
    for dir in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/berth",
    ] {
        fs::create_dir_all(root.join(dir)).expect("rootfs dir");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    copy_host_file(Path::new(BUSYBOX), root);
    for library in shared_libraries() {
        copy_host_file(&library, root);
    }
    let available = command_stdout(Command::new(BUSYBOX).arg("--list"));
    for applet in APPLETS.split_whitespace() {
        if available.lines().any(|a| a.trim() == applet) {
            symlink("busybox", root.join("bin").join(applet)).expect("applet link");
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nberth:x:1000:1000:berth:/home/berth:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nextra:x:2000:berth\nberth:x:1000:\n",
    )
    .expect("group");
}

/// Copies `host` (symlinks followed) to the same path below `root`.
fn copy_host_file(host: &Path, root: &Path) {
    let dest = root.join(host.strip_prefix("/").expect("absolute"));
    fs::create_dir_all(dest.parent().expect("parent")).expect("library dir");
    fs::copy(host, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", host.display()));
}

fn shared_libraries() -> Vec<PathBuf> {
    let stdout = command_stdout(Command::new("ldd").arg(BUSYBOX));
    let libraries: Vec<PathBuf> = stdout
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    assert!(
        !libraries.is_empty(),
        "ldd {BUSYBOX} lists no libraries: install the dynamic busybox (apt-get install busybox)"
    );
    libraries
}

fn command_stdout(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e} (apt-get install busybox)"));
    assert!(output.status.success(), "{command:?} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

// ---------------------------------------------------------------------------------------
// Running containers
// ---------------------------------------------------------------------------------------

/// The container's stdout and stderr, read by threads so a chatty container never blocks.
struct Output {
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Output {
    fn collect(stdout: OwnedFd, stderr: OwnedFd) -> Output {
        let read = |fd: OwnedFd| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = fs::File::from(fd).read_to_string(&mut text);
                text
            })
        };
        Output {
            stdout: read(stdout),
            stderr: read(stderr),
        }
    }

    fn finish(self) -> (String, String) {
        let stdout = self.stdout.join().expect("stdout reader");
        let stderr = self.stderr.join().expect("stderr reader");
        (stdout, stderr)
    }
}

/// What a finished container did.
struct Finished {
    status: WaitStatus,
    stdout: String,
    stderr: String,
}

/// Spawns, drops the test's copies of the container's stdio, waits and collects its output.
fn run(spec: ContainerProcess, output: Output) -> Finished {
    let pid = executor::spawn(&spec).unwrap_or_else(|e| panic!("spawn: {e}"));
    drop(spec);
    let status = wait(pid);
    let (stdout, stderr) = output.finish();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Runs a container that must exit 0 and returns its stdout.
fn run_ok(spec: ContainerProcess, output: Output) -> String {
    let finished = run(spec, output);
    assert!(
        matches!(finished.status, WaitStatus::Exited(_, 0)),
        "container failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished.stdout
}

/// Waits for `pid` (a container this test spawned), killing it after [`TIMEOUT`].
fn wait(pid: Pid) -> WaitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            WaitStatus::StillAlive => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                panic!("container {pid} still running after {TIMEOUT:?}");
            }
            status => return status,
        }
    }
}

/// Zombie children of the test process.
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .collect()
}

/// A default masked file with content on this host (`/proc/kcore` is missing on kernels
/// without CONFIG_PROC_KCORE).
fn masked_file() -> &'static str {
    ["/proc/kcore", "/proc/timer_list", "/proc/keys"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("no maskable /proc file on this host")
}

/// The lines a script printed after `echo @@name`, up to the next marker.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let marker = format!("@@{name}\n");
    let start = out
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in:\n{out}"))
        + marker.len();
    let rest = &out[start..];
    &rest[..rest.find("@@").unwrap_or(rest.len())]
}

fn ns_link(path: &str) -> String {
    fs::read_link(path)
        .unwrap_or_else(|e| panic!("readlink {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
        .trim()
        .to_string()
}

fn hex_field(status: &str, field: &str) -> u64 {
    u64::from_str_radix(&status_field(status, field), 16).expect("hex capability set")
}

/// Namespaces of a pod, held by an `unshare` helper this test starts and kills by PID.
struct PodNamespaces {
    child: Child,
}

impl PodNamespaces {
    const HOSTNAME: &str = "berth-exec-pod";

    fn start() -> PodNamespaces {
        let script = format!("hostname {} && echo ready && exec sleep 60", Self::HOSTNAME);
        let mut child = Command::new("unshare")
            .args(["--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child"])
            .args(["sh", "-c", &script])
            .stdout(ProcessStdio::piped())
            .spawn()
            .expect("start unshare helper");
        let stdout = child.stdout.take().expect("helper stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("helper ready");
        assert_eq!(line.trim(), "ready", "unshare helper did not start");
        PodNamespaces { child }
    }

    /// The helper's namespace file; for `pid`, the namespace its child (PID 1) lives in.
    fn path(&self, ns: &str) -> PathBuf {
        let file = if ns == "pid" { "pid_for_children" } else { ns };
        PathBuf::from(format!("/proc/{}/ns/{file}", self.child.id()))
    }

    fn link(&self, ns: &str) -> String {
        ns_link(&self.path(ns).to_string_lossy())
    }
}

impl Drop for PodNamespaces {
    fn drop(&mut self) {
        // --kill-child takes the helper's sleep with it.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A cgroup this test creates (pids controller, else the v2 root) and removes.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn create() -> Option<TestCgroup> {
        let parent = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists())?;
        let dir = parent.join(format!("berth-test-executor-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create test cgroup");
        Some(TestCgroup { dir })
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The calling thread's namespaces, cwd and open fds: what `spawn` must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct ShimState {
    namespaces: Vec<String>,
    cwd: PathBuf,
    fds: BTreeSet<String>,
}

impl ShimState {
    fn capture() -> ShimState {
        let namespaces = [
            "mnt",
            "net",
            "ipc",
            "uts",
            "pid",
            "pid_for_children",
            "cgroup",
        ]
        .iter()
        .map(|ns| ns_link(&format!("/proc/thread-self/ns/{ns}")))
        .collect();
        let fds = fs::read_dir("/proc/thread-self/fd")
            .expect("fds")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ShimState {
            namespaces,
            cwd: std::env::current_dir().expect("cwd"),
            fds,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn new_pid_namespace_container_is_pid_1_in_its_rootfs_with_system_mounts() {
    if !runnable("new_pid_namespace_container_is_pid_1_in_its_rootfs_with_system_mounts") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (spec, output) = fixture.shell(
        "cat /proc/1/cmdline; echo; echo pid=$$; readlink /proc/self/ns/pid; \
         echo @@root; ls /; echo @@mounts; mount; echo @@dev; ls /dev; \
         echo @@status; cat /proc/self/status; echo x > /dev/null && echo null-ok",
    );
    let out = run_ok(spec, output);
    assert!(
        out.starts_with("sh\0-c\0"),
        "PID 1 is not the container:\n{out}"
    );
    assert!(out.contains("\npid=1\n"), "{out}");
    assert_ne!(
        out.lines().nth(2),
        Some(ns_link("/proc/self/ns/pid").as_str()),
        "same pid namespace as the test"
    );
    let root = section(&out, "root");
    for entry in ["bin", "etc", "home", "proc", "sys", "dev", "tmp"] {
        assert!(root.lines().any(|l| l == entry), "no /{entry} in:\n{root}");
    }
    let mounts = section(&out, "mounts");
    for expected in [
        "proc on /proc type proc (rw,nosuid,nodev,noexec",
        "tmpfs on /dev type tmpfs (rw,nosuid",
        "devpts on /dev/pts type devpts (rw,nosuid,noexec",
        "shm on /dev/shm type tmpfs (rw,nosuid,nodev,noexec",
        "mqueue on /dev/mqueue type mqueue (rw,nosuid,nodev,noexec",
        "sysfs on /sys type sysfs (ro,nosuid,nodev,noexec",
        "proc on /proc/sys type proc (ro,",
    ] {
        assert!(mounts.contains(expected), "no `{expected}` in:\n{mounts}");
    }
    let dev = section(&out, "dev");
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr",
        "ptmx", "pts", "shm", "mqueue",
    ] {
        assert!(dev.lines().any(|l| l == node), "no /dev/{node} in:\n{dev}");
    }
    assert!(
        !dev.lines().any(|l| l == "kmsg"),
        "host device leaked:\n{dev}"
    );
    assert_eq!(hex_field(&out, "CapEff"), DEFAULT_CAPS_MASK);
    assert_eq!(hex_field(&out, "CapBnd"), DEFAULT_CAPS_MASK);
    assert_eq!(hex_field(&out, "CapInh"), 0);
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
    assert!(out.contains("null-ok"), "{out}");
}

#[test]
fn joins_pod_namespaces_and_cgroup_and_stays_the_callers_child() {
    if !runnable("joins_pod_namespaces_and_cgroup_and_stays_the_callers_child") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let pod = PodNamespaces::start();
    let cgroup = TestCgroup::create();
    let (mut spec, output) = fixture.shell(
        "hostname; for ns in net ipc uts pid; do readlink /proc/self/ns/$ns; done; \
         cat /proc/1/cmdline; echo; cat /proc/self/cgroup; read line; echo got $line",
    );
    spec.net_ns = Some(pod.path("net"));
    spec.ipc_ns = Some(pod.path("ipc"));
    spec.uts_ns = Some(pod.path("uts"));
    spec.pid_ns = PidNamespace::Join(pod.path("pid"));
    spec.cgroup_procs = cgroup.iter().map(|c| c.dir.join("cgroup.procs")).collect();
    let (stdin_rx, stdin_tx) = pipe();
    spec.stdio.stdin = Some(stdin_rx);

    let pid = executor::spawn(&spec).expect("spawn");
    drop(spec);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("container status");
    assert_eq!(
        status_field(&status, "PPid"),
        std::process::id().to_string()
    );
    fs::File::from(stdin_tx)
        .write_all(b"hello\n")
        .expect("write stdin");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let (out, err) = output.finish();

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], PodNamespaces::HOSTNAME, "{out}\n{err}");
    for (i, ns) in ["net", "ipc", "uts", "pid"].iter().enumerate() {
        assert_eq!(lines[i + 1], pod.link(ns), "{ns} namespace");
    }
    assert!(
        lines[5].starts_with("sleep\u{0}60"),
        "PID 1 is not the pod's: {out}"
    );
    match &cgroup {
        Some(cgroup) => assert!(
            out.contains(&cgroup.name()),
            "not in {}: {out}",
            cgroup.name()
        ),
        None => eprintln!("cgroup join not checked: no pids or v2 cgroup hierarchy"),
    }
    assert!(out.ends_with("got hello\n"), "{out}");
}

#[test]
fn host_pid_namespace_shares_the_callers_pids() {
    if !runnable("host_pid_namespace_shares_the_callers_pids") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, output) = fixture.shell("readlink /proc/self/ns/pid; echo $$");
    spec.pid_ns = PidNamespace::Host;
    let pid = executor::spawn(&spec).expect("spawn");
    drop(spec);
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let (out, _) = output.finish();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [ns_link("/proc/self/ns/pid"), pid.to_string()]);
}

#[test]
fn non_root_user_gets_its_groups_capabilities_and_no_new_privs() {
    if !runnable("non_root_user_gets_its_groups_capabilities_and_no_new_privs") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, output) = fixture.shell("id; cat /proc/self/status");
    spec.user = User {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![2000],
    };
    spec.capabilities = Some(vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()]);
    spec.no_new_privs = true;
    let out = run_ok(spec, output);
    let id = out.lines().next().expect("id output");
    for part in ["uid=1000(berth)", "gid=1000(berth)", "2000(extra)"] {
        assert!(id.contains(part), "no {part} in `{id}`");
    }
    // As under runc: only the bounding set keeps the capabilities of a non-root process.
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(hex_field(&out, set), 0, "{set}");
    }
    assert_eq!(hex_field(&out, "CapBnd"), 0x420);
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
}

#[test]
fn privileged_container_gets_all_capabilities_rw_sys_and_host_devices() {
    if !runnable("privileged_container_gets_all_capabilities_rw_sys_and_host_devices") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, output) = fixture.shell("cat /proc/self/status; mount; ls /dev");
    spec.privileged = true;
    spec.capabilities = None;
    let out = run_ok(spec, output);
    let own = fs::read_to_string("/proc/self/status").expect("own status");
    assert_eq!(hex_field(&out, "CapBnd"), hex_field(&own, "CapBnd"));
    assert_eq!(hex_field(&out, "CapEff"), hex_field(&own, "CapBnd"));
    assert!(out.contains("sysfs on /sys type sysfs (rw,"), "{out}");
    for masked in [masked_file(), "/sys/firmware"] {
        assert!(
            !out.contains(&format!(" on {masked} ")),
            "{masked} masked: {out}"
        );
    }
    let host_device = fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .filter(|e| {
            e.file_type()
                .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_char_device(&t))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            ![
                "null", "zero", "full", "random", "urandom", "tty", "ptmx", "console",
            ]
            .contains(&n.as_str())
        });
    match host_device {
        Some(name) => assert!(
            out.lines().any(|l| l == name),
            "no host /dev/{name}:\n{out}"
        ),
        None => eprintln!("host device copy not checked: no extra character device on the host"),
    }
}

#[test]
fn bind_and_tmpfs_mounts_masked_and_readonly_paths_apply() {
    if !runnable("bind_and_tmpfs_mounts_masked_and_readonly_paths_apply") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let host = fixture.dir.path().join("host");
    fs::create_dir_all(host.join("rw")).expect("rw source");
    fs::create_dir_all(host.join("ro")).expect("ro source");
    fs::write(host.join("ro/data"), "read-only data\n").expect("ro file");
    fs::write(host.join("greeting"), "hello from the host\n").expect("file source");
    // An image symlink pointing out of the rootfs must resolve inside it.
    let escape = format!("/berth-executor-escape-{}", std::process::id());
    symlink(&escape, fixture.lower.join("escape")).expect("escape symlink");

    let bind = |destination: &str, source: PathBuf, readonly: bool| Mount {
        destination: destination.into(),
        source,
        kind: MountKind::Bind {
            readonly,
            recursive_readonly: false,
            propagation: Propagation::Private,
            idmap: None,
        },
    };
    let tmpfs = |destination: &str, options: &str| Mount {
        destination: destination.into(),
        source: PathBuf::from("tmpfs"),
        kind: MountKind::Tmpfs {
            options: options.into(),
        },
    };
    let masked_file = masked_file();
    let (mut spec, output) = fixture.shell(&format!(
        "cat /data/ro/data; touch /data/rw/created && echo rw-ok; \
         touch /data/ro/x 2>/dev/null || echo ro-denied; cat /etc/greeting; \
         test -d /data/new && echo new-ok; echo masked=$(wc -c < {masked_file}); \
         echo masked-dir=$(ls /sys/firmware | wc -l); \
         mount; test -d /escape/inner && echo escape-inside",
    ));
    spec.mounts = vec![
        bind("/data/rw", host.join("rw"), false),
        bind("/data/ro", host.join("ro"), true),
        bind("/data/new", host.join("missing/dir"), false),
        bind("/etc/greeting", host.join("greeting"), true),
        tmpfs("/scratch", "size=1m,mode=1777,noexec"),
        tmpfs("/escape/inner", "size=1m"),
    ];
    let out = run_ok(spec, output);
    for expected in [
        "read-only data\n",
        "rw-ok\n",
        "ro-denied\n",
        "hello from the host\n",
        "new-ok\n",
        "masked=0\n",
        "masked-dir=0\n",
        "tmpfs on /scratch type tmpfs (rw,noexec,relatime,size=1024k",
        " on /data/ro type ",
        "proc on /proc/sys type proc (ro,",
        "escape-inside\n",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains(" on /data/ro type ") && l.contains("(ro,")),
        "{out}"
    );
    assert!(
        host.join("rw/created").exists(),
        "rw bind did not reach the host"
    );
    assert!(
        host.join("missing/dir").is_dir(),
        "missing bind source not created"
    );
    assert!(
        !Path::new(&escape).exists(),
        "mount destination escaped the rootfs"
    );
    assert!(fixture.upper.join(&escape[1..]).join("inner").is_dir());
}

#[test]
fn readonly_rootfs_is_enforced() {
    if !runnable("readonly_rootfs_is_enforced") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, output) = fixture
        .shell("touch /newfile 2>/dev/null || echo rootfs-ro; touch /dev/shm/ok && echo shm-rw");
    spec.readonly_rootfs = true;
    let out = run_ok(spec, output);
    assert_eq!(out, "rootfs-ro\nshm-rw\n");
    assert!(!fixture.upper.join("newfile").exists());
}

#[test]
fn cwd_env_path_lookup_rlimits_and_oom_score_are_applied() {
    if !runnable("cwd_env_path_lookup_rlimits_and_oom_score_are_applied") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, output) = fixture
        .shell("pwd; echo \"$GREETING\"; ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj");
    spec.cwd = "/home/berth".into();
    spec.env = vec!["PATH=/bin".into(), "GREETING=hello world".into()];
    spec.rlimits = vec![Rlimit {
        resource: "RLIMIT_NOFILE".into(),
        soft: 123,
        hard: 456,
    }];
    spec.oom_score_adj = Some(500);
    let out = run_ok(spec, output);
    assert_eq!(out, "/home/berth\nhello world\n123\n456\n500\n");

    // A command without '/' is found through the container's PATH.
    let (spec, output) = fixture.process(&["echo", "found", "via", "PATH"]);
    assert_eq!(run_ok(spec, output), "found via PATH\n");
}

#[test]
fn exit_code_propagates_to_waitpid() {
    if !runnable("exit_code_propagates_to_waitpid") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (spec, output) = fixture.shell("exit 7");
    let finished = run(spec, output);
    assert!(
        matches!(finished.status, WaitStatus::Exited(_, 7)),
        "{:?}",
        finished.status
    );
}

#[test]
fn missing_command_fails_precisely_and_leaves_only_the_overlay() {
    if !runnable("missing_command_fails_precisely_and_leaves_only_the_overlay") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    for (args, message) in [
        (
            &["/bin/nope"][..],
            "exec `/bin/nope`: No such file or directory",
        ),
        (
            &["nope"][..],
            "exec `nope`: executable file not found in $PATH",
        ),
    ] {
        let (spec, _output) = fixture.process(args);
        match executor::spawn(&spec) {
            Err(e @ ExecError::Container { .. }) => assert_eq!(e.to_string(), message),
            other => panic!("{args:?}: expected a container error, got {other:?}"),
        }
    }
    assert_eq!(zombie_children(), Vec::<String>::new());
    let mounts = fixture.mounts();
    assert_eq!(mounts.len(), 1, "{mounts:#?}");
    assert!(mounts[0].contains(" - overlay "), "{mounts:#?}");
    executor::cleanup_rootfs(&fixture.target).expect("cleanup");
    assert_eq!(fixture.mounts(), Vec::<String>::new());
    assert!(!fixture.target.exists());
    executor::cleanup_rootfs(&fixture.target).expect("second cleanup");
}

#[test]
fn missing_cwd_fails_precisely() {
    if !runnable("missing_cwd_fails_precisely") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, _output) = fixture.shell("true");
    spec.cwd = "/missing".into();
    let err = executor::spawn(&spec).expect_err("missing cwd");
    assert_eq!(
        err.to_string(),
        "chdir `/missing`: No such file or directory"
    );
    assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT));
    assert_eq!(zombie_children(), Vec::<String>::new());
}

#[test]
fn spawn_leaves_the_callers_namespaces_cwd_and_fds_untouched() {
    if !runnable("spawn_leaves_the_callers_namespaces_cwd_and_fds_untouched") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let pod = PodNamespaces::start();
    let before = ShimState::capture();
    for pid_ns in [
        PidNamespace::New,
        PidNamespace::Join(pod.path("pid")),
        PidNamespace::Host,
    ] {
        let (mut spec, output) = fixture.shell("true");
        spec.pid_ns = pid_ns;
        spec.net_ns = Some(pod.path("net"));
        run_ok(spec, output);
    }
    let (mut spec, output) = fixture.shell("true");
    spec.cwd = "/missing".into();
    executor::spawn(&spec).expect_err("missing cwd");
    drop(spec);
    output.finish();
    assert_eq!(ShimState::capture(), before);
    assert_eq!(zombie_children(), Vec::<String>::new());
}

#[test]
fn restart_reuses_the_mounted_overlay_and_cleanup_is_idempotent() {
    if !runnable("restart_reuses_the_mounted_overlay_and_cleanup_is_idempotent") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (spec, output) = fixture.shell("echo first run > /state");
    run_ok(spec, output);
    assert_eq!(fixture.mounts().len(), 1, "{:#?}", fixture.mounts());
    let (spec, output) = fixture.shell("cat /state");
    assert_eq!(run_ok(spec, output), "first run\n");
    assert_eq!(fixture.mounts().len(), 1, "{:#?}", fixture.mounts());
    executor::cleanup_rootfs(&fixture.target).expect("cleanup");
    assert_eq!(fixture.mounts(), Vec::<String>::new());
    executor::cleanup_rootfs(&fixture.target).expect("second cleanup");
}

#[test]
fn invalid_specs_fail_before_mounting_or_forking() {
    if !runnable("invalid_specs_fail_before_mounting_or_forking") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let (mut spec, _output) = fixture.shell("true");
    spec.capabilities = Some(vec!["CAP_FLY".into()]);
    let err = executor::spawn(&spec).expect_err("unknown capability");
    assert_eq!(
        err.to_string(),
        "invalid container process `executor-test`: unknown capability `CAP_FLY`"
    );
    spec.capabilities = None;
    spec.cwd = "relative".into();
    assert!(matches!(
        executor::spawn(&spec),
        Err(ExecError::InvalidSpec { .. })
    ));
    assert!(
        !fixture.target.exists(),
        "rootfs mounted for an invalid spec"
    );

    spec.cwd = "/".into();
    let missing = fixture.dir.path().join("no-such-layer");
    spec.rootfs = Rootfs::Overlay {
        lower: vec![missing.clone()],
        upper: fixture.upper.clone(),
        work: fixture.work.clone(),
        target: fixture.target.clone(),
    };
    let err = executor::spawn(&spec).expect_err("missing layer");
    assert_eq!(
        err.to_string(),
        format!(
            "overlay lowerdir {}: No such file or directory",
            missing.display()
        )
    );
    assert_eq!(fixture.mounts(), Vec::<String>::new());
}

#[test]
fn shared_and_slave_binds_propagate_as_asked() {
    if !runnable("shared_and_slave_binds_propagate_as_asked") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    // A shared mount of the test's own, like kubelet's /var/lib/kubelet on a systemd host.
    let source = SharedMount::create(&fixture.dir.path().join("shared"));
    for dir in ["from-container", "from-host"] {
        fs::create_dir(source.path.join(dir)).expect("propagation dir");
    }
    let (mut spec, output) = fixture.shell(
        "mount -t tmpfs container-tmpfs /bidi/from-container && echo mounted; read line; \
         test -e /slave/from-host/marker && echo host-mount-seen",
    );
    spec.privileged = true;
    spec.capabilities = None;
    let bind = |destination: &str, propagation| Mount {
        destination: destination.into(),
        source: source.path.clone(),
        kind: MountKind::Bind {
            readonly: false,
            recursive_readonly: false,
            propagation,
            idmap: None,
        },
    };
    spec.mounts = vec![
        bind("/bidi", Propagation::RShared),
        bind("/slave", Propagation::RSlave),
    ];
    let (stdin_rx, stdin_tx) = pipe();
    spec.stdio.stdin = Some(stdin_rx);
    let pid = executor::spawn(&spec).expect("spawn");
    drop(spec);

    let from_container = source.path.join("from-container");
    let deadline = Instant::now() + TIMEOUT;
    while fixture
        .mounts()
        .iter()
        .all(|m| !m.contains(" container-tmpfs "))
    {
        assert!(
            Instant::now() < deadline,
            "container mount never reached the host"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let from_host = source.path.join("from-host");
    let none = None::<&str>;
    nix::mount::mount(
        Some("tmpfs"),
        &from_host,
        Some("tmpfs"),
        MsFlags::empty(),
        none,
    )
    .expect("host mount");
    fs::write(from_host.join("marker"), "").expect("marker");
    fs::File::from(stdin_tx)
        .write_all(b"go\n")
        .expect("write stdin");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let (out, err) = output.finish();
    assert_eq!(out, "mounted\nhost-mount-seen\n", "stderr: {err}");
    assert!(from_container.exists());
}

/// A bind mount of a test directory onto itself, made shared; unmounted with everything
/// below it on drop.
struct SharedMount {
    path: PathBuf,
}

impl SharedMount {
    fn create(path: &Path) -> SharedMount {
        fs::create_dir_all(path).expect("shared dir");
        let none = None::<&str>;
        nix::mount::mount(Some(path), path, none, MsFlags::MS_BIND, none).expect("bind");
        let mount = SharedMount {
            path: path.to_path_buf(),
        };
        nix::mount::mount(none, path, none, MsFlags::MS_SHARED, none).expect("make shared");
        mount
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn container_starts_with_default_signal_dispositions_and_mask() {
    if !runnable("container_starts_with_default_signal_dispositions_and_mask") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    // No shell: busybox ash ignores SIGQUIT for the commands it runs.
    let (spec, output) = fixture.process(&["cat", "/proc/self/status"]);
    // Like the shim, which reads these from a signalfd; the test harness also ignores SIGPIPE.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGCHLD);
    blocked.add(Signal::SIGTERM);
    blocked.thread_block().expect("block signals");
    let pid = executor::spawn(&spec);
    blocked.thread_unblock().expect("unblock signals");
    let pid = pid.expect("spawn");
    drop(spec);
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let (out, _) = output.finish();
    assert_eq!(hex_field(&out, "SigBlk"), 0, "{out}");
    assert_eq!(hex_field(&out, "SigIgn"), 0, "{out}");
}

#[test]
fn terminal_on_stdin_becomes_the_controlling_terminal() {
    if !runnable("terminal_on_stdin_becomes_the_controlling_terminal") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let (mut spec, _unused) = fixture.process(&["cat", "/proc/self/stat"]);
    spec.stdio = Stdio {
        stdin: Some(pty.slave.try_clone().expect("dup slave")),
        stdout: pty.slave.try_clone().expect("dup slave"),
        stderr: pty.slave,
    };
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        // Reading the master ends with EIO once the last slave fd is closed.
        let _ = fs::File::from(pty.master).read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let pid = executor::spawn(&spec).expect("spawn");
    drop(spec);
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let stat = reader.join().expect("pty reader");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // state, ppid, pgrp, session, tty_nr: PID 1 leads its own session, with a terminal.
    assert_eq!(fields.get(3), Some(&"1"), "{stat}");
    assert_ne!(fields.get(4), Some(&"0"), "no controlling terminal: {stat}");
}

#[test]
fn new_and_host_pid_namespaces_work_while_the_caller_holds_a_pod_pid_namespace() {
    if !runnable("new_and_host_pid_namespaces_work_while_the_caller_holds_a_pod_pid_namespace") {
        return;
    }
    let _serial = serial();
    let fixture = Fixture::new();
    let script = "readlink /proc/self/ns/pid; echo $$";
    // Output readers first: no thread can be created while pid_for_children is not this
    // thread's own namespace (the shim has no threads).
    let (new_spec, new_output) = fixture.shell(script);
    let (mut host_spec, host_output) = fixture.shell(script);
    host_spec.pid_ns = PidNamespace::Host;
    // Like a shim of a pod with a shared PID namespace: this thread's children are born in the
    // pod's namespace, whose PID 1 is a reaper.
    let pod = PodPidNamespace::enter();
    let own = ns_link("/proc/thread-self/ns/pid");
    let pod_ns = ns_link("/proc/thread-self/ns/pid_for_children");
    assert_ne!(own, pod_ns);

    let out = run_ok(new_spec, new_output);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0] != own && lines[0] != pod_ns,
        "not a new namespace: {out}"
    );
    assert_eq!(lines[1], "1");
    let out = run_ok(host_spec, host_output);
    assert_eq!(out.lines().next(), Some(own.as_str()));

    assert_eq!(ns_link("/proc/thread-self/ns/pid_for_children"), pod_ns);
    drop(pod);
    assert_eq!(ns_link("/proc/thread-self/ns/pid_for_children"), own);
}

/// This thread's `pid_for_children` switched to a new namespace with a `sleep` as PID 1;
/// restored, and the sleep killed by PID, on drop.
struct PodPidNamespace {
    own: fs::File,
    reaper: Child,
}

impl PodPidNamespace {
    fn enter() -> PodPidNamespace {
        let own = fs::File::open("/proc/thread-self/ns/pid").expect("own pid namespace");
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).expect("unshare pid");
        let reaper = Command::new("sleep").arg("60").spawn();
        let restore = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWPID);
        let reaper = match reaper {
            Ok(reaper) => reaper,
            Err(e) => {
                restore.expect("restore pid namespace");
                panic!("start pod reaper: {e}");
            }
        };
        let pod = PodPidNamespace { own, reaper };
        let pod_ns = format!("/proc/{}/ns/pid", pod.reaper.id());
        let pod_ns = fs::File::open(pod_ns).expect("pod pid namespace");
        nix::sched::setns(pod_ns, nix::sched::CloneFlags::CLONE_NEWPID).expect("enter pod ns");
        pod
    }
}

impl Drop for PodPidNamespace {
    fn drop(&mut self) {
        let _ = nix::sched::setns(&self.own, nix::sched::CloneFlags::CLONE_NEWPID);
        let _ = kill(Pid::from_raw(self.reaper.id() as i32), Signal::SIGKILL);
        let _ = self.reaper.wait();
    }
}
