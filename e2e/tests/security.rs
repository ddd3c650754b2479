//! Attacks on the executor and the shim, each performed against a real berthd: a non-root
//! process regaining root through inherited capabilities, a container reaching the host's root
//! through the PID namespace's init, a container started with no device filter, mounts over
//! `/proc`, and the setup processes' `/proc/<pid>/exe` pointing at a writable host binary.
//! Each test fails on a berthd without the protection it checks. Needs root (CI runs as root).

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::containers::{Env, env, env_started, read_log, security};
use e2e::daemon::BerthdOptions;
use proto::cri::{self, Int64Value, Mount, NamespaceMode};

/// The capabilities containerd gives a container by default (CapBnd of such a process).
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// Waits until the container's log has a line starting with `marker`; all lines so far.
async fn log_until(e: &Env, pc: &cri::PodSandboxConfig, c_name: &str, marker: &str) -> Vec<String> {
    let path = Path::new(&pc.log_directory).join(format!("{c_name}/0.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = read_log(&path);
        if lines.iter().any(|l| l.starts_with(marker)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no `{marker}` in the log: {lines:?}"
        );
        let _ = e;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn field<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

const CAP_PROBE: &str = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status; \
    (echo pwned >> /etc/passwd) 2>/dev/null && echo wrote-passwd || echo passwd-denied";

/// Row 1: a non-root process has no effective, permitted, inheritable or ambient capability
/// (only the bounding set keeps the configured ones), in the container and in an exec: with
/// CAP_DAC_OVERRIDE effective it could rewrite root's files, with CAP_SETUID become root.
#[tokio::test]
async fn non_root_process_has_no_capabilities_but_its_bounding_set() {
    let Some(e) = env().await else { return };
    let pc = e.pod("nonroot");
    let pod = e.run_pod(&pc).await;
    let script = format!("{CAP_PROBE}; echo done; exec sleep 3600");
    let mut c = e.container("nonroot", &["/bin/sh", "-c", &script]);
    let sc = security(&mut c);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.no_new_privs = true;
    let id = e.run(&pod, &pc, c).await;
    let main = log_until(&e, &pc, "nonroot", "done").await;
    let r = e
        .exec_sync(&id, &["/bin/sh", "-c", CAP_PROBE], 10)
        .await
        .expect("ExecSync");
    let exec: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(String::from)
        .collect();
    for (what, lines) in [("container", &main), ("exec", &exec)] {
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(
                field(lines, set),
                "0000000000000000",
                "{what} {set}: {lines:?}"
            );
        }
        assert_eq!(field(lines, "CapBnd"), DEFAULT_CAPS, "{what}: {lines:?}");
        assert!(
            lines.iter().any(|l| l == "passwd-denied"),
            "{what}: uid 1000 rewrote /etc/passwd: {lines:?}"
        );
    }
}

/// A pod config sharing one PID namespace among its containers.
fn shared_pid_pod(e: &Env, name: &str) -> cri::PodSandboxConfig {
    let mut pc = e.pod(name);
    if let Some(ns) = pc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = NamespaceMode::Pod as i32;
    }
    pc
}

/// A container in the shared PID namespace with CAP_SYS_PTRACE added.
fn ptrace_container(e: &Env, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    let mut c = e.container(name, cmd);
    let sc = security(&mut c);
    sc.namespace_options = Some(cri::NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    });
    sc.capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    c
}

/// Row 4: the PID namespace's init (berth-pod-init) gives a container with CAP_SYS_PTRACE no
/// way to the host: its root is empty and private, it holds no capability and no fd.
#[tokio::test]
async fn shared_pid_init_leads_nowhere() {
    let Some(e) = env().await else { return };
    let pc = shared_pid_pod(&e, "pidinit");
    let pod = e.run_pod(&pc).await;
    // A directory only the host has: berthd's own temp dir.
    let marker = e.d.dir().display().to_string();
    let script = format!(
        "echo comm=$(cat /proc/1/comm); echo root:; ls -a /proc/1/root/ 2>&1; \
         test -e /proc/1/root{marker} && echo HOST-ROOT-VISIBLE; \
         grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/1/status; \
         echo fds=$(ls /proc/1/fd 2>&1 | tr '\\n' ' '); echo end"
    );
    let c = ptrace_container(&e, "probe", &["/bin/sh", "-c", &script]);
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert!(
        lines.contains(&"comm=berth-pod-init".to_string()),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "HOST-ROOT-VISIBLE"), "{lines:?}");
    let listing: Vec<&String> = lines
        .iter()
        .skip_while(|l| *l != "root:")
        .skip(1)
        .take_while(|l| !l.starts_with("Cap"))
        .collect();
    assert!(
        listing.iter().all(|l| *l == "." || *l == ".."),
        "the init's root is not empty: {listing:?}"
    );
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            field(&lines, set),
            "0000000000000000",
            "init's {set}: {lines:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l == "fds="),
        "the init kept fds: {lines:?}"
    );

    // A working directory through the init's root must not start the container in the host.
    let script = format!("pwd; test -e .{marker} && echo HOST-CWD; ls -a; echo end");
    let mut c = ptrace_container(&e, "cwd", &["/bin/sh", "-c", &script]);
    c.working_dir = "/proc/1/root".into();
    let created = e.create(&pod, &pc, c).await.expect("CreateContainer");
    match e.start(&created).await {
        Err(status) => assert!(status.message().contains("working directory"), "{status:?}"),
        Ok(()) => {
            let st = e.wait_exited(&created).await;
            let lines = read_log(&Path::new(&pc.log_directory).join("cwd/0.log"));
            panic!(
                "started with cwd /proc/1/root (exit {}): {lines:?}",
                st.exit_code
            );
        }
    }
}

/// Row 7: without a device cgroup a container with CAP_MKNOD reads the host's disk. berthd
/// that cannot find its cgroups must refuse to run containers at all.
#[tokio::test]
async fn no_container_runs_without_a_device_filter() {
    // berthd in a mount namespace where /sys/fs/cgroup is an empty ramfs: no cgroups found.
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -t ramfs berth-no-cgroups /sys/fs/cgroup && exec \"$@\"",
        "sh",
    ]
    .map(String::from)
    .to_vec();
    let opts = BerthdOptions {
        wrapper,
        ..Default::default()
    };
    let Some(started) = env_started("", opts).await else {
        return;
    };
    let e = match started {
        Err(err) => {
            let msg = err.to_string();
            assert!(
                msg.contains("cgroup"),
                "berthd failed for another reason: {msg}"
            );
            return;
        }
        Ok(e) => e,
    };
    // berthd started: perform the attack to show what that allows.
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let script =
        format!("mknod /tmp/hostdisk b {major} {minor} && head -c 4096 /tmp/hostdisk | wc -c");
    let pc = e.pod("nodev");
    let pod = e.run_pod(&pc).await;
    let c = e.container("nodev", &["/bin/sh", "-c", &script]);
    let started = match e.create(&pod, &pc, c).await {
        Ok(id) => e.start(&id).await.map(|()| id),
        Err(status) => Err(status),
    };
    match started {
        Ok(id) => {
            let st = e.wait_exited(&id).await;
            let lines = read_log(&Path::new(&pc.log_directory).join("nodev/0.log"));
            panic!(
                "a container ran without cgroups (exit {}); reading the host disk {major}:{minor} gave {lines:?}",
                st.exit_code
            );
        }
        Err(status) => assert!(status.message().contains("cgroup"), "{status:?}"),
    }
}

/// Row 2: a CRI mount onto `/proc` (directly, or through a path that resolves there) could
/// hide the files the executor writes to confine the process; it is refused.
#[tokio::test]
async fn mounts_onto_proc_are_refused() {
    let Some(e) = env().await else { return };
    let host = tempfile::tempdir().expect("host dir");
    let pc = e.pod("procmount");
    let pod = e.run_pod(&pc).await;
    for (i, target) in ["/proc/sys/kernel", "//proc/./self/attr", "/proc"]
        .iter()
        .enumerate()
    {
        let name = format!("procmount{i}");
        let mut c = e.container(&name, &["/bin/sh", "-c", "ls /proc/self/attr; echo ran"]);
        c.mounts = vec![Mount {
            container_path: (*target).into(),
            host_path: host.path().display().to_string(),
            ..Default::default()
        }];
        let outcome = match e.create(&pod, &pc, c).await {
            Ok(id) => e.start(&id).await.map(|()| id),
            Err(status) => Err(status),
        };
        match outcome {
            Err(status) => assert!(status.message().contains("/proc"), "{target}: {status:?}"),
            Ok(id) => {
                e.wait_exited(&id).await;
                panic!("a container started with a mount on {target}");
            }
        }
    }
}

/// Row 2, the indirect way: a volume holding a symlink to `/proc/sys`, and a second mount
/// through it. The path looks harmless; it resolves onto procfs and is refused at start.
#[tokio::test]
async fn mounts_through_a_symlink_into_proc_are_refused() {
    let Some(e) = env().await else { return };
    let volume = tempfile::tempdir().expect("volume");
    std::os::unix::fs::symlink("/proc/sys", volume.path().join("link")).expect("symlink");
    let other = tempfile::tempdir().expect("other");
    let pc = e.pod("proclink");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "proclink",
        &["/bin/sh", "-c", "ls /proc/sys/kernel; echo ran"],
    );
    c.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/data/link/kernel".into(),
            host_path: other.path().display().to_string(),
            ..Default::default()
        },
    ];
    let id = e.create(&pod, &pc, c).await.expect("CreateContainer");
    match e.start(&id).await {
        Err(status) => assert!(
            status.message().contains("resolves into /proc"),
            "{status:?}"
        ),
        Ok(()) => {
            e.wait_exited(&id).await;
            let lines = read_log(&Path::new(&pc.log_directory).join("proclink/0.log"));
            panic!(
                "a container started with a mount on /proc/sys/kernel through a symlink: {lines:?}"
            );
        }
    }
}

/// F_GET_SEALS of `/proc/<pid>/exe`: the seals of a memfd, an error for a host file.
fn exe_seals(pid: i32) -> Result<i32, String> {
    let exe = std::fs::File::open(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("open /proc/{pid}/exe: {e}"))?;
    // SAFETY: fcntl F_GET_SEALS on an fd we own.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        let link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        return Err(format!(
            "/proc/{pid}/exe is {} (not a sealed memfd): {}",
            link.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(seals)
}

const WRITE_SEALS: i32 =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `berth-shim exec` helpers of berthd `parent` (their command line ends in `exec`).
fn exec_helpers(parent: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && cmd.ends_with(b"berth-shim\0exec\0")
        })
        .collect()
}

/// Row 8: the processes that set up a container or an exec (the shim and `berth-shim exec`,
/// and their children until `execve`) run from a sealed memfd, so a container process that
/// opens `/proc/<pid>/exe` of one of them cannot reach a writable host binary
/// (CVE-2019-5736).
#[tokio::test]
async fn setup_processes_run_from_a_sealed_binary() {
    let Some(e) = env().await else { return };
    let pc = shared_pid_pod(&e, "exe");
    let pod = e.run_pod(&pc).await;
    let shims = e2e::cleanup::shims_under(e.d.dir());
    assert!(!shims.is_empty(), "no shim found");
    for shim in &shims {
        let seals = exe_seals(*shim).unwrap_or_else(|m| panic!("shim {shim}: {m}"));
        assert_eq!(
            seals & WRITE_SEALS,
            WRITE_SEALS,
            "shim {shim} seals {seals:#x}"
        );
    }
    // A container that watches its PID namespace for processes whose exe is a shim: the
    // exec setup children, between fork and execve.
    let watch = "while true; do for p in /proc/[0-9]*; do \
         l=$(readlink $p/exe 2>/dev/null); case \"$l\" in *berth-shim*) echo \"seen $l\";; esac; \
         done; done";
    let c = ptrace_container(&e, "watcher", &["/bin/sh", "-c", watch]);
    let id = e.run(&pod, &pc, c).await;
    // An exec helper lives as long as its exec: check it while one sleeps.
    let parent = e.d.pid().expect("berthd pid");
    let sleeper = {
        let rt = e.d.runtime().await.expect("client");
        let id = id.clone();
        tokio::spawn(async move {
            let mut rt = rt;
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: id,
                cmd: vec!["sleep".into(), "2".into()],
                timeout: 10,
            })
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let helpers = loop {
        let found = exec_helpers(parent);
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !helpers.is_empty(),
        "no exec helper of berthd {parent} found"
    );
    for helper in &helpers {
        let seals = exe_seals(*helper).unwrap_or_else(|m| panic!("exec helper {helper}: {m}"));
        assert_eq!(
            seals & WRITE_SEALS,
            WRITE_SEALS,
            "helper {helper} seals {seals:#x}"
        );
    }
    sleeper.await.expect("join").expect("ExecSync sleep");
    // Execs while the watcher looks: whatever it sees must not be a host path.
    for _ in 0..30 {
        e.exec_sync(&id, &["true"], 10).await.expect("ExecSync");
    }
    let log = read_log(&Path::new(&pc.log_directory).join("watcher/0.log"));
    let host_paths: Vec<&String> = log.iter().filter(|l| !l.contains("/memfd:")).collect();
    assert!(
        host_paths.is_empty(),
        "setup processes ran from a host binary: {host_paths:?}"
    );
    eprintln!("the watcher saw {} setup processes", log.len());
}
