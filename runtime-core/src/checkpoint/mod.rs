//! Container checkpoint and restore with CRIU.
//!
//! **Checkpoint** (berthd, [`checkpoint`]): `criu check`, then `criu dump --leave-running` of
//! the container's process tree, its writable layer and log, packed into an archive in the
//! layout CRI-O and containerd write ([`archive`]). The pod's network namespace is dumped as
//! external (it belongs to the pod, not the container), as are the bind mounts from the host.
//!
//! **Restore** (berth-shim, [`restore`]): CreateContainer from an archive makes a container
//! whose writable layer is the archive's diff; StartContainer has the pod's shim fork a child
//! that joins the container's cgroup and execs `criu restore --restore-detached
//! --restore-sibling`, so the restored tree's root becomes the shim's child like any container
//! process. The pod's network namespace is handed in as an inherited fd, its IPC and UTS
//! namespaces are joined, the new stdio pipes replace the dumped ones by their `pipe:[inode]`
//! keys, and the host binds are mapped to the new container's sources.
//!
//! What is supported and what is not is in `docs/checkpoint.md`.

pub mod archive;
pub mod criu;
pub mod restore;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use criu::CriuError;

/// Why a checkpoint failed.
#[derive(Debug)]
pub enum CheckpointError {
    /// CRIU is missing, cannot work on this host, failed or timed out.
    Criu(CriuError),
    /// The container is set up in a way berth cannot checkpoint (the reason says which).
    Unsupported(String),
    /// Writing the archive failed.
    Io(String),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::Criu(e) => e.fmt(f),
            CheckpointError::Unsupported(m) | CheckpointError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CheckpointError {}

impl From<CriuError> for CheckpointError {
    fn from(e: CriuError) -> Self {
        CheckpointError::Criu(e)
    }
}

/// One checkpoint to make.
pub struct Request<'a> {
    /// The container's init process (host PID).
    pub pid: u32,
    /// Where the archive goes (kubelet's / crictl's `location`).
    pub location: &'a Path,
    /// A directory on the same file system as the container's state, for the work files.
    pub work_parent: &'a Path,
    /// The container's writable layer.
    pub upper: &'a Path,
    /// The container's CRI log, copied in when set.
    pub log_path: Option<&'a Path>,
    pub config: archive::ConfigDump,
    /// The container's OCI runtime spec (written as `spec.dump`).
    pub spec: serde_json::Value,
    /// For all of CRIU's work together.
    pub timeout: Duration,
}

/// Makes the checkpoint archive; nothing is left behind on failure (no archive, no work
/// files) and the container keeps running either way.
pub fn checkpoint(req: &Request<'_>) -> Result<(), CheckpointError> {
    let criu = criu::find()?;
    criu::check(&criu, req.timeout)?;
    let plan = dump_plan(req.pid)?;
    let work = tempdir_in(req.work_parent)?;
    let result = dump_and_pack(&criu, req, plan, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn dump_and_pack(
    criu: &Path,
    req: &Request<'_>,
    plan: DumpPlan,
    work: &Path,
) -> Result<(), CheckpointError> {
    let io = |what: &str, e: std::io::Error| CheckpointError::Io(format!("{what}: {e}"));
    let images = work.join(archive::CHECKPOINT_DIR);
    std::fs::create_dir(&images).map_err(|e| io("create the images dir", e))?;
    std::fs::write(
        images.join(archive::DESCRIPTORS),
        serde_json::to_vec(&plan.descriptors).map_err(|e| io("descriptors", e.into()))?,
    )
    .map_err(|e| io("write descriptors.json", e))?;
    std::fs::write(
        images.join(archive::STDIO_KEYS),
        serde_json::to_vec(&plan.stdio_keys).map_err(|e| io("stdio keys", e.into()))?,
    )
    .map_err(|e| io("write stdio-keys.json", e))?;
    let options = criu::DumpOptions {
        pid: req.pid,
        images_dir: images,
        work_dir: work.to_path_buf(),
        leave_running: true,
        external_ns: plan.external_ns,
        external_mounts: plan.external_mounts,
        external_files: plan
            .stdio_keys
            .iter()
            .filter(|k| k.starts_with("file["))
            .cloned()
            .collect(),
    };
    criu::dump(criu, &options, req.timeout)?;
    let mut config = req.config.clone();
    config.checkpointed_time = archive::rfc3339(now_ns());
    let json = |v: &dyn erased::Json| v.to_vec().map_err(|e| io("encode", e.into()));
    std::fs::write(work.join(archive::CONFIG_DUMP), json(&config)?)
        .map_err(|e| io("write config.dump", e))?;
    std::fs::write(work.join(archive::SPEC_DUMP), json(&req.spec)?)
        .map_err(|e| io("write spec.dump", e))?;
    archive::write_rootfs_diff(req.upper, work).map_err(|e| io("write rootfs-diff.tar", e))?;
    if let Some(log) = req.log_path.filter(|p| p.exists()) {
        std::fs::copy(log, work.join(archive::CONTAINER_LOG))
            .map_err(|e| io("copy the container log", e))?;
    }
    archive::pack(work, req.location)
        .map_err(|e| io(&format!("write {}", req.location.display()), e))
}

mod erased {
    /// Serializes without naming the type (config.dump and spec.dump alike).
    pub trait Json {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec_pretty(self)
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, CheckpointError> {
    let dir = parent.join(format!(
        "checkpoint-work-{}-{}",
        std::process::id(),
        now_ns()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CheckpointError::Io(format!("create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// What the dump of one process tree needs to be told about its surroundings.
#[derive(Debug)]
struct DumpPlan {
    external_ns: Vec<criu::ExternalNs>,
    external_mounts: Vec<String>,
    /// `/proc/<pid>/fd/{0,1,2}` link targets, as runc's descriptors.json.
    descriptors: Vec<String>,
    /// The CRIU key of each of fds 0, 1, 2 that is outside the container, else "".
    stdio_keys: Vec<String>,
}

/// Reads the container's namespaces and mounts; refuses what berth cannot restore.
fn dump_plan(pid: u32) -> Result<DumpPlan, CheckpointError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let unsupported = |m: String| CheckpointError::Unsupported(m);
    let ino = |who: &Path, ns: &str| -> Result<u64, CheckpointError> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(who.join("ns").join(ns))
            .map(|m| m.ino())
            .map_err(|e| unsupported(format!("read the {ns} namespace of pid {pid}: {e}")))
    };
    let me = Path::new("/proc/self");
    if ino(&proc, "user")? != ino(me, "user")? {
        return Err(unsupported(
            "the container runs in a user namespace; CRIU restore of pods with user \
             namespaces is not supported by berth"
                .into(),
        ));
    }
    let status = std::fs::read_to_string(proc.join("status"))
        .map_err(|e| unsupported(format!("read /proc/{pid}/status: {e}")))?;
    if !is_pid_ns_init(&status) {
        return Err(unsupported(
            "the container shares the pod's or the host's PID namespace; berth checkpoints \
             only containers with their own PID namespace (NamespaceMode CONTAINER, the default)"
                .into(),
        ));
    }
    let mut external_ns = Vec::new();
    let net = ino(&proc, "net")?;
    if net != ino(me, "net")? {
        external_ns.push(criu::ExternalNs {
            kind: "net",
            inode: net,
            key: criu::NET_NS_KEY.into(),
        });
    }
    let mountinfo = std::fs::read_to_string(proc.join("mountinfo"))
        .map_err(|e| unsupported(format!("read /proc/{pid}/mountinfo: {e}")))?;
    let descriptors = (0..3)
        .map(|fd| {
            std::fs::read_link(proc.join("fd").join(fd.to_string()))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>();
    if descriptors.iter().any(|d| d.starts_with("/dev/pts/")) {
        return Err(unsupported(
            "the container has a TTY; berth does not checkpoint TTY containers".into(),
        ));
    }
    let mount_ids: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    let stdio_keys = descriptors
        .iter()
        .enumerate()
        .map(|(fd, link)| stdio_key(&proc, fd, link, &mount_ids))
        .collect();
    Ok(DumpPlan {
        external_ns,
        external_mounts: external_mounts(&mountinfo),
        descriptors,
        stdio_keys,
    })
}

/// CRIU's key for stdio fd `fd` of the process at `proc` when it is outside the container: its
/// pipe (`pipe:[inode]`), or a file on a mount the container does not have (`file[mnt:ino]`,
/// hex); "" when CRIU can restore it from the container's own mounts.
fn stdio_key(proc: &Path, fd: usize, link: &str, mount_ids: &[&str]) -> String {
    use std::os::unix::fs::MetadataExt;
    if link.starts_with("pipe:") {
        return link.to_string();
    }
    let fdinfo =
        std::fs::read_to_string(proc.join("fdinfo").join(fd.to_string())).unwrap_or_default();
    let Some(mnt_id) = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .map(str::trim)
    else {
        return String::new();
    };
    if mount_ids.contains(&mnt_id) {
        return String::new();
    }
    let (Ok(mnt), Ok(meta)) = (
        mnt_id.parse::<u64>(),
        std::fs::metadata(proc.join("fd").join(fd.to_string())),
    ) else {
        return String::new();
    };
    format!("file[{mnt:x}:{:x}]", meta.ino())
}

/// Whether `/proc/<pid>/status` says the process is PID 1 of its own PID namespace.
fn is_pid_ns_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
}

/// File systems CRIU recreates itself inside the container's mount namespace.
const CRIU_MOUNTS: &[&str] = &["proc", "sysfs", "tmpfs", "devpts", "mqueue"];

/// The container's mount points whose source is outside it (a mountinfo text): every mount but
/// the root, except new instances of the file systems CRIU recreates and binds of those
/// instances (`/proc/sys` bound from the container's own `/proc`). A bind of a host tmpfs
/// file (the pod's `/etc/hostname` under `/run`) is external although it is a tmpfs.
pub fn external_mounts(mountinfo: &str) -> Vec<String> {
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            Some((*f.get(2)?, *f.get(3)?, *f.get(4)?, fstype))
        })
        .collect();
    let own = |dev: &str, fstype: &str| {
        CRIU_MOUNTS.contains(&fstype)
            && mounts
                .iter()
                .any(|(d, root, mp, _)| *d == dev && *root == "/" && *mp != "/")
    };
    mounts
        .iter()
        .filter(|(dev, _, mp, fstype)| *mp != "/" && !own(dev, fstype))
        .map(|(_, _, mp, _)| unescape(mp))
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binds_are_external_and_kernel_file_systems_are_not() {
        let mi = "\
100 90 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
101 100 0:51 / /proc rw - proc proc rw
102 100 0:52 / /dev rw - tmpfs tmpfs rw,mode=755
103 102 0:53 / /dev/pts rw - devpts devpts rw
104 100 0:54 / /sys ro - sysfs sysfs ro
105 104 0:30 /berth/pod/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw
106 100 8:1 /run/berth/pods/p/hosts /etc/hosts rw - ext4 /dev/sda1 rw
107 100 0:5 /null /proc/kcore rw - devtmpfs udev rw
108 100 8:1 /vol /data\\040dir rw - ext4 /dev/sda1 rw
109 101 0:51 /sys /proc/sys ro - proc proc rw
110 100 0:26 /berth/pods/p/hostname /etc/hostname rw - tmpfs tmpfs rw
111 102 0:55 / /dev/shm rw - tmpfs shm rw
";
        assert_eq!(
            external_mounts(mi),
            [
                "/sys/fs/cgroup",
                "/etc/hosts",
                "/proc/kcore",
                "/data dir",
                "/etc/hostname"
            ]
        );
    }

    #[test]
    fn only_the_init_of_its_own_pid_namespace_is_checkpointed() {
        assert!(is_pid_ns_init("Name:\tsh\nNSpid:\t4242\t1\n"));
        assert!(!is_pid_ns_init("NSpid:\t4242\t7\n"), "pod-shared namespace");
        assert!(!is_pid_ns_init("NSpid:\t4242\n"), "host namespace");
        assert!(!is_pid_ns_init(""));
    }
}
