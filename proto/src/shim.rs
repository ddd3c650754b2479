//! Framing for the berthd <-> berth-shim protocol.
//!
//! Each message is a prost-encoded body preceded by its length as a big-endian `u32`.
//! The shim is single-threaded and blocking, so framing works on `std::io` streams; berthd
//! wraps the same functions in `spawn_blocking` or uses its own async reader.

use std::io::{self, Read, Write};

/// Largest frame either side accepts; a bigger length prefix means a corrupt or hostile peer.
pub const MAX_FRAME_LEN: u32 = 4 << 20;

/// Errors reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("shim protocol i/o: {0}")]
    Io(#[from] io::Error),
    #[error("shim protocol frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge { len: u64, max: u32 },
    #[error("shim protocol message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("shim protocol peer closed the connection")]
    Closed,
}

/// Writes one message as a frame.
pub fn write_frame<M: prost::Message, W: Write>(w: &mut W, msg: &M) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf)
        .map_err(|e| io::Error::other(format!("encode shim message: {e}")))?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it; [`FrameError::Closed`] on a clean end of stream.
pub fn read_frame<M: prost::Message + Default, R: Read>(r: &mut R) -> Result<M, FrameError> {
    let mut len_buf = [0u8; 4];
    match r.read_exact(&mut len_buf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len_buf);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max: MAX_FRAME_LEN,
        });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(M::decode(body.as_slice())?)
}

/// How berthd asks for a pod's shim: written (prost-encoded) to a file whose path is the
/// shim's only argument.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShimSpec {
    #[prost(string, tag = "1")]
    pub pod_id: String,
    /// Unix socket the shim serves requests on.
    #[prost(string, tag = "2")]
    pub socket_path: String,
    /// Directory where the pod's namespaces are pinned (`net`, `ipc`, `uts`, `pid`).
    #[prost(string, tag = "3")]
    pub ns_dir: String,
    #[prost(bool, tag = "4")]
    pub new_net: bool,
    #[prost(bool, tag = "5")]
    pub new_ipc: bool,
    #[prost(bool, tag = "6")]
    pub new_uts: bool,
    /// Share a new PID namespace among the pod's containers (a reaper is its PID 1).
    #[prost(bool, tag = "7")]
    pub new_pid: bool,
    /// Hostname set in the new UTS namespace.
    #[prost(string, tag = "8")]
    pub hostname: String,
    /// Namespaced sysctls (already validated by berthd), e.g. `net.ipv4.ip_unprivileged_port_start`.
    #[prost(btree_map = "string, string", tag = "9")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// The shim's own log file.
    #[prost(string, tag = "10")]
    pub log_path: String,
    /// `cgroup.procs` files the PID-namespace reaper joins (the pod cgroup).
    #[prost(string, repeated, tag = "11")]
    pub cgroup_procs: Vec<String>,
    /// UID mappings of the pod's own user namespace (which then owns its network, IPC and UTS
    /// namespaces); empty: the host's user namespace.
    #[prost(message, repeated, tag = "12")]
    pub userns_uids: Vec<IdMapping>,
    /// GID mappings of the pod's user namespace.
    #[prost(message, repeated, tag = "13")]
    pub userns_gids: Vec<IdMapping>,
    /// The OCI runtime (RuntimeClass handler) that starts this pod's containers; absent: the
    /// native executor.
    #[prost(message, optional, tag = "14")]
    pub oci_runtime: Option<OciRuntime>,
    /// With `new_net`: berthd already made the pod's network namespace and pinned it at
    /// `<ns_dir>/net` (so it could wire the pod's network while the shim starts); the shim
    /// joins it instead of creating one, and unpins it with the others. Only without a user
    /// namespace.
    #[prost(bool, tag = "15")]
    pub join_net: bool,
}

/// An OCI-CLI runtime (runc, crun) the shim drives for every container of its pod.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OciRuntime {
    /// The handler's name (the RuntimeClass `handler`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The runtime binary.
    #[prost(string, tag = "2")]
    pub path: String,
    /// The runtime's state directory (`--root`).
    #[prost(string, tag = "3")]
    pub root: String,
    /// Pass `--systemd-cgroup`.
    #[prost(bool, tag = "4")]
    pub systemd_cgroup: bool,
    /// Where the shim writes each container's bundle (`<bundle_dir>/<container-id>`).
    #[prost(string, tag = "5")]
    pub bundle_dir: String,
}

/// One range of a user namespace's (or an idmapped mount's) ID mappings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdMapping {
    #[prost(uint32, tag = "1")]
    pub container_id: u32,
    #[prost(uint32, tag = "2")]
    pub host_id: u32,
    #[prost(uint32, tag = "3")]
    pub length: u32,
}

/// A request from berthd to a shim.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShimRequest {
    #[prost(oneof = "shim_request::Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub kind: Option<shim_request::Kind>,
}

/// Request kinds.
pub mod shim_request {
    /// The kinds of request a shim answers.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::large_enum_variant)] // decoded once per request; boxing buys nothing
    pub enum Kind {
        /// Liveness and identity.
        #[prost(message, tag = "1")]
        Ping(super::Ping),
        /// Kill everything in the pod, unpin its namespaces and exit.
        #[prost(message, tag = "2")]
        Shutdown(super::Shutdown),
        /// Start a container process (answers once it has exec'd, or with the reason it failed).
        #[prost(message, tag = "3")]
        StartContainer(super::StartContainer),
        /// Send a signal to a container's process.
        #[prost(message, tag = "4")]
        SignalContainer(super::SignalContainer),
        /// A container's process state.
        #[prost(message, tag = "5")]
        ContainerState(super::ContainerRef),
        /// Forget an exited container and unmount its rootfs.
        #[prost(message, tag = "6")]
        RemoveContainer(super::ContainerRef),
        /// Reopen a container's log file (after kubelet rotated it).
        #[prost(message, tag = "7")]
        ReopenLog(super::ContainerRef),
        /// Attach to a running container's stdio: after a successful answer the connection
        /// carries [`AttachFrame`](super::AttachFrame)s both ways until either side closes.
        #[prost(message, tag = "8")]
        Attach(super::AttachContainer),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Shutdown {}

/// A shim's answer; `error` empty means success.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShimResponse {
    #[prost(string, tag = "1")]
    pub error: String,
    #[prost(message, optional, tag = "2")]
    pub pong: Option<Pong>,
    #[prost(message, optional, tag = "3")]
    pub container: Option<ContainerInfo>,
}

/// Names a container of the pod.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerRef {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// A signal for a container's process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignalContainer {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "2")]
    pub signal: i32,
}

/// Everything the shim needs to start one container process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainer {
    #[prost(string, tag = "1")]
    pub id: String,
    /// Overlay lower dirs, top layer first.
    #[prost(string, repeated, tag = "2")]
    pub lower: Vec<String>,
    #[prost(string, tag = "3")]
    pub upper: String,
    #[prost(string, tag = "4")]
    pub work: String,
    /// Host mountpoint of the container's root.
    #[prost(string, tag = "5")]
    pub rootfs: String,
    #[prost(bool, tag = "6")]
    pub readonly_rootfs: bool,
    #[prost(message, repeated, tag = "7")]
    pub mounts: Vec<MountSpec>,
    /// Join the pod's network / IPC / UTS namespaces (else the host's).
    #[prost(bool, tag = "8")]
    pub pod_net: bool,
    #[prost(bool, tag = "9")]
    pub pod_ipc: bool,
    #[prost(bool, tag = "10")]
    pub pod_uts: bool,
    /// 0: own PID namespace, 1: the pod's, 2: the host's, 3: the one at `pid_ns_path`
    /// (another container's, for NamespaceMode TARGET).
    #[prost(int32, tag = "11")]
    pub pid_mode: i32,
    #[prost(string, repeated, tag = "12")]
    pub args: Vec<String>,
    #[prost(string, repeated, tag = "13")]
    pub env: Vec<String>,
    #[prost(string, tag = "14")]
    pub cwd: String,
    #[prost(uint32, tag = "15")]
    pub uid: u32,
    #[prost(uint32, tag = "16")]
    pub gid: u32,
    #[prost(uint32, repeated, tag = "17")]
    pub additional_gids: Vec<u32>,
    /// Capabilities kept; ignored when `all_capabilities`.
    #[prost(string, repeated, tag = "18")]
    pub capabilities: Vec<String>,
    #[prost(bool, tag = "19")]
    pub all_capabilities: bool,
    #[prost(bool, tag = "20")]
    pub no_new_privs: bool,
    #[prost(bool, tag = "21")]
    pub privileged: bool,
    #[prost(string, repeated, tag = "22")]
    pub masked_paths: Vec<String>,
    #[prost(string, repeated, tag = "23")]
    pub readonly_paths: Vec<String>,
    #[prost(bool, tag = "24")]
    pub has_oom_score_adj: bool,
    #[prost(int32, tag = "25")]
    pub oom_score_adj: i32,
    #[prost(string, repeated, tag = "26")]
    pub cgroup_procs: Vec<String>,
    /// CRI log file; empty means discard output.
    #[prost(string, tag = "27")]
    pub log_path: String,
    /// Where the shim records the exit status durably.
    #[prost(string, tag = "28")]
    pub status_path: String,
    /// Give the process a pseudo-terminal as stdin/stdout/stderr (its output is logged as
    /// stdout).
    #[prost(bool, tag = "29")]
    pub tty: bool,
    /// Seccomp: 0 unconfined, 1 the runtime default profile, 2 `seccomp_profile` (a file).
    #[prost(int32, tag = "30")]
    pub seccomp: i32,
    #[prost(string, tag = "31")]
    pub seccomp_profile: String,
    /// AppArmor: 0 unconfined, 1 the runtime default, 2 the loaded profile `apparmor_profile`.
    #[prost(int32, tag = "32")]
    pub apparmor: i32,
    #[prost(string, tag = "33")]
    pub apparmor_profile: String,
    /// Give the container a stdin the shim holds open for attachers (CRI `stdin`).
    #[prost(bool, tag = "34")]
    pub stdin: bool,
    /// Close that stdin when the first attach session that used it ends (CRI `stdin_once`).
    #[prost(bool, tag = "35")]
    pub stdin_once: bool,
    /// The pod's user namespace mappings when the container runs in it (it joins the pinned
    /// `user` namespace, its root is idmapped); empty: the host's user namespace.
    #[prost(message, repeated, tag = "36")]
    pub userns_uids: Vec<IdMapping>,
    #[prost(message, repeated, tag = "37")]
    pub userns_gids: Vec<IdMapping>,
    /// The pod's log directory: `log_path` is opened beneath it without following symlinks.
    /// Empty: only the last component of `log_path` is opened without following a symlink.
    #[prost(string, tag = "38")]
    pub log_directory: String,
    /// With `pid_mode` 3: the PID namespace file to join (`/proc/<pid>/ns/pid` of the target
    /// container's process).
    #[prost(string, tag = "39")]
    pub pid_ns_path: String,
    /// Restore the process tree from this extracted checkpoint archive (its `checkpoint/`
    /// holds CRIU's images) instead of executing `args`; empty: a fresh start.
    #[prost(string, tag = "40")]
    pub restore_dir: String,
    /// The container cgroup relative to the hierarchy roots (`/berth/<pod>/<ctr>`): an OCI
    /// runtime's `cgroupsPath`.
    #[prost(string, tag = "41")]
    pub cgroup_path: String,
    /// The device cgroup rules berthd set (`c 1:3 rwm`, `a`): an OCI runtime's
    /// `linux.resources.devices`, which it writes to the cgroup again.
    #[prost(string, repeated, tag = "42")]
    pub device_rules: Vec<String>,
}

/// One mount of a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountSpec {
    #[prost(string, tag = "1")]
    pub destination: String,
    #[prost(string, tag = "2")]
    pub source: String,
    /// A tmpfs (with `options`) instead of a bind mount.
    #[prost(bool, tag = "3")]
    pub tmpfs: bool,
    #[prost(string, tag = "4")]
    pub options: String,
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    /// 0 private, 1 rslave, 2 rshared.
    #[prost(int32, tag = "6")]
    pub propagation: i32,
    /// Make every submount read-only too (needs `readonly` and private propagation).
    #[prost(bool, tag = "7")]
    pub recursive_read_only: bool,
    /// An image volume: the image's layer dirs (top first), mounted read-only instead of
    /// `source`.
    #[prost(string, repeated, tag = "8")]
    pub image_layers: Vec<String>,
    /// Idmap the bind with these mappings (CRI `uidMappings`/`gidMappings`).
    #[prost(message, repeated, tag = "9")]
    pub uid_mappings: Vec<IdMapping>,
    #[prost(message, repeated, tag = "10")]
    pub gid_mappings: Vec<IdMapping>,
    /// For an image volume: the directory inside the image to mount instead of its root
    /// (CRI `image_sub_path`), resolved inside the image.
    #[prost(string, tag = "11")]
    pub image_sub_path: String,
}

/// A container process as the shim knows it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerInfo {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(bool, tag = "3")]
    pub exited: bool,
    #[prost(int32, tag = "4")]
    pub exit_code: i32,
    /// Signal that killed it, 0 if it exited.
    #[prost(int32, tag = "5")]
    pub signal: i32,
    #[prost(int64, tag = "6")]
    pub started_at: i64,
    #[prost(int64, tag = "7")]
    pub finished_at: i64,
    /// How long each step of the start took (StartContainer's answer only).
    #[prost(message, repeated, tag = "8")]
    pub start_steps: Vec<StepTime>,
}

/// One step of an operation and how long it took.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StepTime {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub micros: u64,
}

/// Which of a container's streams an attacher wants.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttachContainer {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(bool, tag = "2")]
    pub stdin: bool,
    #[prost(bool, tag = "3")]
    pub stdout: bool,
    #[prost(bool, tag = "4")]
    pub stderr: bool,
}

/// One message of an attach session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttachFrame {
    /// One of the `ATTACH_*` constants.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub width: u32,
    #[prost(uint32, tag = "4")]
    pub height: u32,
}

/// Attacher → shim: bytes for the container's stdin.
pub const ATTACH_STDIN: u32 = 0;
/// Shim → attacher: the container's stdout (all output for a tty container).
pub const ATTACH_STDOUT: u32 = 1;
/// Shim → attacher: the container's stderr.
pub const ATTACH_STDERR: u32 = 2;
/// Attacher → shim: resize the container's terminal to `width` x `height`.
pub const ATTACH_RESIZE: u32 = 3;
/// Attacher → shim: the client closed stdin (closes the container's stdin if `stdin_once`).
pub const ATTACH_STDIN_CLOSE: u32 = 4;
/// Shim → attacher: the container exited; no more output follows.
pub const ATTACH_EXITED: u32 = 5;

/// berthd → `berth-shim exec`: start a process inside a running container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecSpec {
    /// The container's own start spec (security settings, cgroup, user, env, cwd) with `args`
    /// (and `env`, `tty`) replaced by the exec request's.
    #[prost(message, optional, tag = "1")]
    pub container: Option<StartContainer>,
    /// The container's process in the host PID namespace.
    #[prost(uint32, tag = "2")]
    pub target_pid: u32,
    /// The container's cgroup path, checked against the target's.
    #[prost(string, tag = "3")]
    pub cgroup: String,
}

/// `berth-shim exec` → berthd: progress of the exec'd process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecReport {
    #[prost(oneof = "exec_report::Kind", tags = "1, 2, 3")]
    pub kind: Option<exec_report::Kind>,
}

/// Exec report kinds.
pub mod exec_report {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// The process runs (host PID).
        #[prost(uint32, tag = "1")]
        Started(u32),
        /// It could not be started: why.
        #[prost(message, tag = "2")]
        Failed(super::ExecFailure),
        /// It ended.
        #[prost(message, tag = "3")]
        Exited(super::ExitStatus),
    }
}

/// Why an exec did not start.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecFailure {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The error number behind it, 0 if none; `ESRCH` means the container is not running.
    #[prost(int32, tag = "2")]
    pub errno: i32,
    /// The process itself failed before exec (e.g. command not found), not the runtime.
    #[prost(bool, tag = "3")]
    pub in_container: bool,
}

/// How a process ended: `signal` non-zero if a signal killed it, else `code`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExitStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(int32, tag = "2")]
    pub signal: i32,
}

/// Who the shim is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    #[prost(string, tag = "1")]
    pub pod_id: String,
    #[prost(uint32, tag = "2")]
    pub shim_pid: u32,
    /// PID (in the host namespace) of the pod's PID-namespace reaper, 0 if none.
    #[prost(uint32, tag = "3")]
    pub reaper_pid: u32,
    #[prost(string, tag = "4")]
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Ping {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn frame_round_trips() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Ping { text: "hi".into() }).expect("write");
        write_frame(&mut buf, &Ping { text: "".into() }).expect("write");
        let mut r = buf.as_slice();
        let a: Ping = read_frame(&mut r).expect("first");
        let b: Ping = read_frame(&mut r).expect("second");
        assert_eq!(a.text, "hi");
        assert_eq!(b.text, "");
        assert!(matches!(
            read_frame::<Ping, _>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_length_prefix_is_rejected_without_allocating() {
        let bytes = (MAX_FRAME_LEN + 1).to_be_bytes();
        let err = read_frame::<Ping, _>(&mut bytes.as_slice()).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn truncated_body_is_an_io_error() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Ping {
                text: "hello".into(),
            },
        )
        .expect("write");
        buf.truncate(buf.len() - 2);
        let err = read_frame::<Ping, _>(&mut buf.as_slice()).expect_err("truncated");
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }
}
