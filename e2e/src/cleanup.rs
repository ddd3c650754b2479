//! Leaves the host as a test found it: whatever a test's berthd created (pods, containers,
//! shims, mounts, cgroups) is removed when the test's `Berthd` is dropped, even if the test
//! failed halfway or killed berthd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::cri::{ListPodSandboxRequest, RemovePodSandboxRequest};

/// How long the graceful part (RemovePodSandbox through the daemon) may take.
const GRACEFUL: Duration = Duration::from_secs(20);

/// Removes every pod through the daemon's own RPCs (the normal cleanup path).
pub fn remove_pods_via_daemon(socket: &Path) {
    let socket = socket.to_path_buf();
    let work = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let _ = tokio::time::timeout(GRACEFUL, remove_all(&socket)).await;
        });
    });
    let _ = work.join();
}

async fn remove_all(socket: &Path) {
    let Ok(channel) = crate::channel::connect(socket).await else {
        return;
    };
    let mut rt = proto::cri::runtime_service_client::RuntimeServiceClient::new(channel);
    let Ok(pods) = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for pod in pods.into_inner().items {
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id,
            })
            .await;
    }
}

/// The fallback when the daemon is gone or failed: kills the shims it started (spare or not:
/// found by `dir` on their command line) and every process left in the pods' cgroups, unmounts what is
/// mounted under `dir`, and removes the pods' cgroups.
pub fn force_cleanup(dir: &Path, root_dir: &Path) {
    let cgroups = pod_cgroups(root_dir);
    for pid in named_under(dir, "") {
        kill(pid);
    }
    for cg in &cgroups {
        for pid in cgroup_pids(cg) {
            kill(pid);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    unmount_under(dir);
    for cg in &cgroups {
        remove_cgroup_tree(cg);
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// PIDs of live (not zombie) pod shims whose command line names a path under `dir` (their
/// berthd's state dir): processes named `berth-shim`, not the spare one waiting for a pod.
pub fn shims_under(dir: &Path) -> Vec<i32> {
    named_under(dir, "berth-shim")
}

/// PIDs of live shims under `dir` still waiting for a pod (named `berth-spare`, as
/// `runtime_core::shim::SPARE_NAME`).
pub fn spares_under(dir: &Path) -> Vec<i32> {
    named_under(dir, "berth-spare")
}

/// Live shim processes under `dir` named `name` (`""`: any name, also one just exec'd).
fn named_under(dir: &Path, name: &str) -> Vec<i32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("berth-shim")
                && cmd.contains(&needle)
                && crate::pods::process_alive(*pid as u32)
        })
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            name.is_empty() || comm.trim_end() == name
        })
        .collect()
}

/// Pod cgroup paths recorded in the daemon's pod records.
fn pod_cgroups(root_dir: &Path) -> Vec<String> {
    std::fs::read_dir(root_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("pod.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["host"]["cgroup"].as_str().map(String::from))
        .filter(|c| !c.is_empty())
        .collect()
}

/// Every hierarchy's directory for a relative cgroup path.
fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(cgroup))
        .filter(|p| p.is_dir())
        .collect()
}

/// Every directory of a cgroup's tree in every hierarchy, each parent before its children.
pub fn cgroup_tree(cgroup: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = cgroup_dirs(cgroup);
    while let Some(d) = stack.pop() {
        stack.extend(
            std::fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
        all.push(d);
    }
    all
}

fn cgroup_pids(cgroup: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_tree(cgroup)
        .iter()
        .flat_map(|d| {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn remove_cgroup_tree(cgroup: &str) {
    // Children before parents.
    for d in cgroup_tree(cgroup).iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let mut mounts = crate::pods::mounts_under(dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}
