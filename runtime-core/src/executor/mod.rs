//! The native container executor: starts one container process inside a pod.
//!
//! [`spawn`] runs inside the single-threaded `berth-shim` and is synchronous. It mounts the
//! container's overlay rootfs on the host side (so the shim can always unmount it with
//! [`cleanup_rootfs`]), then forks; the child builds the container around itself — cgroups, the
//! pod's namespaces, a private mount namespace with `/proc`, `/sys`, `/dev` and the CRI mounts,
//! `pivot_root`, rlimits, user, capabilities — and `execve`s. The shim is the container's direct
//! parent and reaps it.
//!
//! - **PID namespace**: `setns`/`unshare(CLONE_NEWPID)` only change the namespace the calling
//!   thread's *next children* are born in, so `spawn` switches the shim's `pid_for_children`
//!   just around `fork` and restores it right after: no double fork, and the PID returned is the
//!   container's PID as the shim sees it.
//! - **Errors**: the child reports a failed step over a close-on-exec pipe and exits 127; a
//!   successful `execve` closes the pipe, so EOF without a message means the container runs.
//! - **Hygiene**: every change of namespace, root, cwd or credentials happens in the child; the
//!   child marks every inherited fd above 2 close-on-exec before doing anything else with them.
//!
//! ```no_run
//! # fn example(process: runtime_core::executor::ContainerProcess) -> Result<(), Box<dyn std::error::Error>> {
//! use runtime_core::executor;
//! let pid = executor::spawn(&process)?;
//! let status = nix::sys::wait::waitpid(pid, None)?;
//! executor::cleanup_rootfs(process.rootfs.target())?;
//! # let _ = status; Ok(()) }
//! ```

mod caps;
mod child;
mod clone_into;
pub(crate) mod devices;
mod error;
mod exec;
mod exec_in;
mod idmap;
mod image_mount;
mod in_root;
mod mounts;
mod overlay;
mod pidns;
mod plan;
mod proc_targets;
mod rootfs;
mod spawn;
mod user;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use error::ExecError;
pub use exec_in::exec_in_container;
pub use overlay::cleanup_rootfs;
pub use proc_targets::is_proc_destination;
pub use spawn::{spawn, spawn_timed};

/// Mounts a container's root on the host side as [`spawn`] does, for a process tree that is
/// restored instead of started (`crate::checkpoint::restore`) or for an OCI runtime handler,
/// which takes it as the bundle's `root.path`; [`cleanup_rootfs`] undoes it.
pub fn mount_rootfs(rootfs: &Rootfs) -> Result<(), ExecError> {
    overlay::mount(rootfs, None).map_err(error::Failure::host)
}

/// [`mount_rootfs`] for a container that runs in the pod's user namespace `user_ns`: its
/// layers idmapped with the namespace's mappings and the writable layer's root given to the
/// namespace's root, as [`spawn`] mounts it.
pub fn mount_rootfs_in_user_namespace(
    rootfs: &Rootfs,
    user_ns: &UserNamespace,
) -> Result<(), ExecError> {
    let fd = open_user_namespace(&user_ns.path)?;
    overlay::mount(rootfs, Some((&user_ns.map, &fd))).map_err(error::Failure::host)
}

/// Mounts an image volume's layers (top first) read-only, nosuid and nodev on the existing
/// directory `target` (a bind of a single layer, else an overlay of them), each layer idmapped
/// through the user namespace `userns` when given, as the native executor mounts image
/// volumes. For an OCI runtime handler, which then binds `target`.
pub fn mount_image_volume(
    target: &Path,
    layers: &[PathBuf],
    userns: Option<(&crate::userns::IdMap, &OwnedFd)>,
) -> Result<(), ExecError> {
    let target_fd = nix::fcntl::open(
        target,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| error::Failure::new(format!("open {}", target.display()), errno).host())?;
    let destination = target.display().to_string();
    image_mount::mount_image_root(&target_fd, &destination, layers, userns)
        .map(drop)
        .map_err(error::Failure::host)
}

/// Opens a pinned user namespace file (for `MOUNT_ATTR_IDMAP` or `setns`).
pub fn open_user_namespace(path: &Path) -> Result<OwnedFd, ExecError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| {
        error::Failure::new(
            format!("open the pod's user namespace {}", path.display()),
            errno,
        )
        .host()
    })
}

/// Everything needed to start one container process in a pod.
#[derive(Debug)]
pub struct ContainerProcess {
    /// Container ID, used in messages and logs.
    pub id: String,
    /// The root filesystem, mounted by [`spawn`] on the host side.
    pub rootfs: Rootfs,
    /// Remount the rootfs read-only after all other mounts.
    pub readonly_rootfs: bool,
    /// CRI mounts, applied in order after `/proc`, `/sys` and `/dev`.
    pub mounts: Vec<Mount>,
    /// Pinned network namespace to join; `None` stays in the shim's.
    pub net_ns: Option<PathBuf>,
    /// Pinned IPC namespace to join; `None` stays in the shim's.
    pub ipc_ns: Option<PathBuf>,
    /// Pinned UTS namespace to join; `None` stays in the shim's.
    pub uts_ns: Option<PathBuf>,
    /// The PID namespace the container process is born in.
    pub pid_ns: PidNamespace,
    /// `argv`; `args[0]` without a `/` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// The environment, `NAME=value`.
    pub env: Vec<String>,
    /// Absolute working directory in the container; it must exist.
    pub cwd: String,
    /// Credentials the process runs with.
    pub user: User,
    /// Capability names (`"CAP_CHOWN"`) for the bounding, effective and permitted sets (a
    /// non-root process loses the effective and permitted ones at `execve`, as under runc);
    /// `None` means every capability the shim holds (privileged).
    pub capabilities: Option<Vec<String>>,
    /// Set `PR_SET_NO_NEW_PRIVS` just before `execve`.
    pub no_new_privs: bool,
    /// All host devices, `/sys` read-write, and `masked_paths`/`readonly_paths` ignored.
    pub privileged: bool,
    /// Paths hidden from the container (`/dev/null` over files, an empty read-only tmpfs over
    /// directories); missing ones are skipped.
    pub masked_paths: Vec<String>,
    /// Paths remounted read-only; missing ones are skipped.
    pub readonly_paths: Vec<String>,
    /// Written to `/proc/self/oom_score_adj` when set.
    pub oom_score_adj: Option<i32>,
    /// Resource limits set before the user switch.
    pub rlimits: Vec<Rlimit>,
    /// `cgroup.procs` files the process writes itself to before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Seccomp filter installed right before exec (compiled by the caller); None: unconfined.
    pub seccomp: Option<crate::seccomp::SeccompFilter>,
    /// AppArmor profile applied on exec; None: unconfined.
    pub apparmor: Option<crate::apparmor::AppArmorProfile>,
    /// The process's stdio; the caller keeps its own ends and closes these after `spawn`.
    pub stdio: Stdio,
    /// The pod's user namespace to run in (joined after every mount is made; the rootfs
    /// layers are idmapped with its mappings); `None` stays in the shim's.
    pub user_ns: Option<UserNamespace>,
}

/// A pinned user namespace and its mappings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserNamespace {
    /// The pinned namespace file (`<ns_dir>/user`).
    pub path: PathBuf,
    /// Its UID and GID mappings.
    pub map: crate::userns::IdMap,
}

/// A process to start inside a running container (CRI `Exec`/`ExecSync`): it joins the
/// container's namespaces, cgroup and root and runs with the container's security settings.
#[derive(Debug)]
pub struct ExecProcess {
    /// Container ID, used in messages and logs.
    pub id: String,
    /// The container's process (PID in the caller's PID namespace) whose namespaces are joined.
    pub target_pid: i32,
    /// The container's cgroup path relative to the hierarchy roots (e.g. `pod/ctr`): the
    /// target must be in it, so a recycled PID is never joined. Empty skips the check.
    pub expected_cgroup: String,
    /// `argv`; `args[0]` without a `/` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// The environment, `NAME=value`.
    pub env: Vec<String>,
    /// Absolute working directory in the container.
    pub cwd: String,
    /// Credentials the process runs with.
    pub user: User,
    /// As [`ContainerProcess::capabilities`].
    pub capabilities: Option<Vec<String>>,
    /// Set `PR_SET_NO_NEW_PRIVS` just before `execve`.
    pub no_new_privs: bool,
    /// Written to `/proc/self/oom_score_adj` when set.
    pub oom_score_adj: Option<i32>,
    /// `cgroup.procs` files the process writes itself to before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Seccomp filter installed right before exec; None: unconfined.
    pub seccomp: Option<crate::seccomp::SeccompFilter>,
    /// AppArmor profile applied on exec; None: unconfined.
    pub apparmor: Option<crate::apparmor::AppArmorProfile>,
    /// The process's stdio.
    pub stdio: Stdio,
    /// The container runs in a user namespace of its own: join it too (after the others).
    pub join_user_ns: bool,
}

/// A container's root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rootfs {
    /// An overlay of read-only layers under a per-container writable layer.
    Overlay {
        /// Layer directories, top layer first.
        lower: Vec<PathBuf>,
        /// The container's writable layer.
        upper: PathBuf,
        /// overlayfs work directory on the same filesystem as `upper`.
        work: PathBuf,
        /// Host mountpoint (e.g. `/run/berth/rootfs/<id>`), created if missing.
        target: PathBuf,
    },
}

impl Rootfs {
    /// Where the rootfs is mounted on the host: what [`cleanup_rootfs`] takes.
    pub fn target(&self) -> &Path {
        match self {
            Rootfs::Overlay { target, .. } => target,
        }
    }
}

/// One CRI mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path in the container; created (safely, inside the rootfs) if missing.
    pub destination: String,
    /// Host path for binds (created as a directory if missing, as kubelet expects); ignored
    /// for tmpfs.
    pub source: PathBuf,
    /// What is mounted.
    pub kind: MountKind,
}

/// The kind of a [`Mount`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A recursive bind mount of `source`.
    Bind {
        /// Remount the bind read-only.
        readonly: bool,
        /// Make every submount read-only too (`mount_setattr` with `AT_RECURSIVE`).
        recursive_readonly: bool,
        /// Mount propagation between host and container.
        propagation: Propagation,
        /// Idmap the bind (and its submounts) with these mappings.
        idmap: Option<crate::userns::IdMap>,
    },
    /// An image volume: the image's layer directories (top first), mounted read-only, nosuid
    /// and nodev: an overlay of the layers, or a bind of the only one. In a user namespace the
    /// layers are idmapped with its mappings.
    Image {
        /// Layer directories, top layer first.
        layers: Vec<PathBuf>,
        /// A directory inside the image to mount instead of its root ("" for the root),
        /// looked up inside the mounted image.
        sub_path: String,
    },
    /// A new tmpfs; `options` as for mount(8), e.g. `"size=64m,mode=1777,noexec"`.
    Tmpfs {
        /// Comma-separated mount flags and tmpfs options.
        options: String,
    },
}

/// Mount propagation of a bind mount (CRI's `MountPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// No propagation either way (`rprivate`).
    #[default]
    Private,
    /// Host mounts below the source appear in the container (`rslave`).
    RSlave,
    /// Mounts propagate both ways (`rshared`); the host source must be on a shared mount.
    RShared,
}

/// The PID namespace a container process is born in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// A new PID namespace with the container process as PID 1.
    New,
    /// The pod's shared PID namespace, from its pinned namespace file.
    Join(PathBuf),
    /// The shim's own PID namespace (the host's).
    Host,
}

/// Credentials of the container process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// Real, effective and saved user ID.
    pub uid: u32,
    /// Real, effective and saved group ID.
    pub gid: u32,
    /// Supplementary groups, set exactly (the primary `gid` is not added).
    pub additional_gids: Vec<u32>,
}

/// One resource limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` name, e.g. `"RLIMIT_NOFILE"`.
    pub resource: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The container process's standard streams.
#[derive(Debug)]
pub struct Stdio {
    /// Standard input; `None` is `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// Standard output.
    pub stdout: OwnedFd,
    /// Standard error.
    pub stderr: OwnedFd,
}

/// A pidfd for `pid` (close-on-exec; readable once the process has exited): names that
/// process even if its PID is reused later.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments; a non-negative result is a new fd we own.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: pidfd_open returned a new descriptor (O_CLOEXEC by default).
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw as i32) })
}

/// Runs `f` (which starts processes) with the calling thread's children born in its own PID
/// namespace: a pod shim's `pid_for_children` is the pod's shared PID namespace, where a
/// helper like an OCI runtime must not run (it reads `/proc` by its own PIDs).
pub fn in_own_pid_namespace<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let switch = pidns::ChildPidNamespace::enter(&PidNamespace::Host).map_err(|f| f.message)?;
    let out = f();
    switch.restore().map_err(|f| f.message)?;
    Ok(out)
}

/// Every capability the running kernel knows that the caller holds (what "all
/// capabilities" gives a container, as for the native executor).
pub fn all_capability_names() -> Result<Vec<String>, String> {
    let last = caps::last_cap().map_err(|f| f.message)?;
    let held = caps::permitted().map_err(|f| f.message)?;
    Ok(caps::names_up_to(last)
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| held & (1u64 << bit) != 0)
        .map(|(_, name)| name)
        .collect())
}

/// The highest capability number the kernel knows (read from `/proc`).
pub(crate) fn last_capability() -> Result<u32, String> {
    caps::last_cap().map_err(|f| f.message)
}

/// Drops every capability up to `last_cap` from every set of the calling process, the
/// bounding set included.
pub(crate) fn drop_all_capabilities(last_cap: u32) -> Result<(), String> {
    caps::drop_all(last_cap).map_err(|f| f.message)
}

/// containerd's default capability set for unprivileged containers.
pub fn default_capabilities() -> Vec<String> {
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    .map(String::from)
    .to_vec()
}

/// containerd's default masked paths for unprivileged containers.
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .map(String::from)
    .to_vec()
}

/// containerd's default read-only paths for unprivileged containers.
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(String::from)
    .to_vec()
}
