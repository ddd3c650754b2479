//! Netlink plumbing: a per-operation rtnetlink connection, link lookups and
//! running netlink work inside another network namespace.

use std::fs::File;
use std::future::Future;
use std::path::Path;

use futures_util::TryStreamExt;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkUnspec};
use tokio::task::JoinHandle;

use super::error::{NetworkError, io_err, netlink_err};

/// An rtnetlink connection bound to the network namespace of the thread that
/// opened it; its background task stops when this is dropped.
pub(crate) struct Netlink {
    pub(crate) handle: Handle,
    task: JoinHandle<()>,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace.
    pub(crate) fn connect(pod_id: &str) -> Result<Netlink, NetworkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(io_err(pod_id, "open netlink socket"))?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when a netlink error is the given errno.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -errno)
}

/// Looks up a link by name; `None` when it does not exist.
pub(crate) async fn find_link(
    handle: &Handle,
    pod_id: &str,
    name: &str,
) -> Result<Option<LinkMessage>, NetworkError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink_err(pod_id, name, "look up")(e)),
    }
}

/// Looks up the index of a link that must exist.
pub(crate) async fn link_index(
    handle: &Handle,
    pod_id: &str,
    name: &str,
) -> Result<u32, NetworkError> {
    match find_link(handle, pod_id, name).await? {
        Some(link) => Ok(link.header.index),
        None => Err(NetworkError::LinkNotFound {
            pod_id: pod_id.to_string(),
            device: name.to_string(),
        }),
    }
}

/// Brings a link up.
pub(crate) async fn set_up(
    handle: &Handle,
    pod_id: &str,
    name: &str,
    index: u32,
) -> Result<(), NetworkError> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    let req = handle.link().set(msg).execute();
    req.await.map_err(netlink_err(pod_id, name, "bring up"))
}

/// Waits for the kernel to delete a pod's veth with its dying network namespace, and deletes
/// it here if that takes longer than `grace` (something else still holds the namespace);
/// returns whether this call deleted it. The kernel deletes the devices of every namespace
/// that dies meanwhile in one batch, behind one set of RCU grace periods; deleting each veth
/// with RTM_DELLINK costs each its own (~15 ms here), one after another under the RTNL lock,
/// which a burst of stops turns into seconds that pods starting meanwhile wait for.
pub(crate) async fn await_link_gone(
    handle: &Handle,
    pod_id: &str,
    name: &str,
    grace: std::time::Duration,
) -> Result<bool, NetworkError> {
    let deadline = tokio::time::Instant::now() + grace;
    let mut delay = std::time::Duration::from_millis(2);
    loop {
        if find_link(handle, pod_id, name).await?.is_none() {
            return Ok(false);
        }
        if tokio::time::Instant::now() >= deadline {
            return delete_link(handle, pod_id, name).await;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Deletes a link by name; returns whether it existed.
pub(crate) async fn delete_link(
    handle: &Handle,
    pod_id: &str,
    name: &str,
) -> Result<bool, NetworkError> {
    let Some(link) = find_link(handle, pod_id, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(netlink_err(pod_id, name, "delete")(e)),
    }
}

/// Opens a network namespace file (a bind mount such as `/run/netns/<name>`).
pub(crate) fn open_netns(pod_id: &str, path: &Path) -> Result<File, NetworkError> {
    File::open(path).map_err(|source| NetworkError::Netns {
        pod_id: pod_id.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `work` with a netlink connection inside the namespace `netns`.
///
/// The work runs on a dedicated OS thread (never a runtime worker) that enters
/// the namespace and drives its own single-threaded runtime; the thread ends
/// with the work, so no thread is left in a foreign namespace.
pub(crate) async fn in_netns<F, Fut, T>(
    pod_id: &str,
    netns_path: &Path,
    netns: File,
    work: F,
) -> Result<T, NetworkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (pod, path) = (pod_id.to_string(), netns_path.to_path_buf());
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(run_in_netns(&pod, &path, netns, work));
        })
        .map_err(io_err(pod_id, "spawn network namespace worker"))?;
    rx.await.map_err(|_| NetworkError::Io {
        pod_id: pod_id.to_string(),
        action: "network namespace worker",
        source: std::io::Error::other("worker thread panicked"),
    })?
}

/// Body of the [`in_netns`] thread.
fn run_in_netns<F, Fut, T>(
    pod_id: &str,
    path: &Path,
    netns: File,
    work: F,
) -> Result<T, NetworkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|errno| NetworkError::Netns {
        pod_id: pod_id.to_string(),
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io_err(pod_id, "start network namespace runtime"))?;
    runtime.block_on(async {
        let netlink = Netlink::connect(pod_id)?;
        work(netlink.handle.clone()).await
    })
}
