//! `berth-shim`: one small process per pod. It creates (or joins) the pod's namespaces, pins
//! them by bind mount so they outlive any process, runs a PID-namespace reaper when the pod
//! shares PIDs, and answers berthd on a unix socket. Single-threaded and blocking: no async
//! runtime, no threads, so `fork` is safe and the memory footprint stays tiny.
//!
//! [`client`] is berthd's side: spawning a shim and talking to it. [`exec`] is the
//! short-lived `berth-shim exec` mode that runs one CRI exec inside a container.

mod attach;
pub mod binary;
pub mod client;
pub mod containers;
pub mod exec;
mod reaper;
mod server;

pub use binary::ShimBinary;
pub use server::main;

/// Namespace file names pinned under a pod's ns dir, as in `/proc/<pid>/ns/`.
pub const NS_NET: &str = "net";
pub const NS_IPC: &str = "ipc";
pub const NS_UTS: &str = "uts";
pub const NS_PID: &str = "pid";
/// The pod's own user namespace, when it has one.
pub const NS_USER: &str = "user";

/// How berthd runs a shim: `berth-shim pod <state-dir>`. The shim detaches, writes
/// `spare <pid>` on its stdout and waits for its pod's `ShimSpec` on stdin (read to EOF); no
/// spec (EOF first: berthd is gone) and it exits. The state dir names which berthd's shim it is
/// (`ps`, tests, benchmarks); a shim's pod is the record's `shim_pid` and its socket.
pub const POD_ARG: &str = "pod";
/// The process name (`/proc/<pid>/comm`) of a shim waiting for its spec; it is `berth-shim`
/// from the moment it has one.
pub const SPARE_NAME: &str = "berth-spare";

/// First line a started shim writes on its stdout, before it reads its spec: `spare <pid>`.
pub const SPARE_PREFIX: &str = "spare ";
/// The line the shim writes on its stdout once ready: `ready <pid>`; on failure
/// `error <message>`.
pub const READY_PREFIX: &str = "ready ";
pub const ERROR_PREFIX: &str = "error ";
