//! OCI runtime handlers: containers of a pod whose RuntimeClass handler is an OCI-CLI runtime
//! (runc, crun) are started by that runtime from a bundle instead of by the native executor.
//!
//! berth's model stays: the pod's `berth-shim` mounts the container's rootfs, writes the
//! bundle (`config.json` from [`spec::build`]), and runs `<runtime> create` with the
//! container's stdio pipes (or `--console-socket` for a TTY) and then `<runtime> start`.
//! The runtime's `create` exits once the container's init waits for `start`, so the init is
//! reparented to the shim (its child subreaper): the shim reaps it and records its exit as
//! for native containers, and keeps its stdio for logs and attach. Removal runs
//! `<runtime> delete --force` and removes the bundle.

pub mod cli;
pub mod features;
pub mod host_devices;
pub mod idmapped;
pub mod image_volumes;
pub mod spec;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::shim::StartContainer;

pub use cli::Cli;

use crate::apparmor::AppArmorProfile;
use crate::executor::{self, Rootfs};
use crate::seccomp::SeccompProfile;

/// How long `create` may take to hand over a TTY.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The container's stdio for `create`: pipes (or /dev/null) without a TTY; with one, the
/// runtime makes the PTY and the shim gets its primary side back.
pub enum CreateIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Tty,
}

/// A started container.
pub struct Started {
    pub pid: i32,
    /// With a TTY, the PTY's primary side.
    pub pty: Option<OwnedFd>,
}

/// Writes the bundle, mounts the rootfs and runs `create` and `start`. On error nothing of
/// the container is left: the runtime's record is deleted, the rootfs unmounted, the bundle
/// removed.
pub fn start(
    cli: &Cli,
    req: &StartContainer,
    ns_dir: &Path,
    io: CreateIo,
) -> Result<Started, String> {
    let bundle = cli.bundle(&req.id);
    let result = try_start(cli, req, ns_dir, &bundle, io);
    if result.is_err() {
        let _ = cleanup(cli, &req.id, Path::new(&req.rootfs));
    }
    result
}

fn try_start(
    cli: &Cli,
    req: &StartContainer,
    ns_dir: &Path,
    bundle: &Path,
    io: CreateIo,
) -> Result<Started, String> {
    let host = host_parts(req, ns_dir)?;
    remove_bundle(bundle)?;
    if let Some(dir) = bundle.parent() {
        // Traversable (see `idmapped::grant_bundle`); each bundle stays private. Set on the
        // bundles' directory and its parent even when they exist: any runc command (`state`,
        // `delete`, ...) makes the missing parents of its `--root`, `<state>/oci/<handler>`,
        // 0700, and a user namespace's root could then not reach its bundle.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("chmod {}: {e}", d.display()))?;
        }
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(bundle)
        .map_err(|e| format!("create bundle {}: {e}", bundle.display()))?;
    let user_ns = idmapped::open_container_namespace(req, ns_dir)?;
    let userns = user_ns.as_ref().map(|(ns, fd)| (&ns.map, fd));
    let rootfs = Rootfs::Overlay {
        lower: req.lower.iter().map(PathBuf::from).collect(),
        upper: PathBuf::from(&req.upper),
        work: PathBuf::from(&req.work),
        target: PathBuf::from(&req.rootfs),
    };
    match &user_ns {
        Some((ns, _)) => executor::mount_rootfs_in_user_namespace(&rootfs, ns),
        None => executor::mount_rootfs(&rootfs),
    }
    .map_err(|e| e.to_string())?;
    let staged = image_volumes::stage(req, bundle, userns)?;
    let mut staged = idmapped::stage(&staged, bundle, userns)?;
    if let Some((ns, _)) = &user_ns {
        staged.rootfs = idmapped::stage_root(Path::new(&req.rootfs), bundle, &ns.map)?
            .display()
            .to_string();
    }
    let spec = spec::build(&staged, &host)?;
    let config =
        serde_json::to_vec_pretty(&spec).map_err(|e| format!("encode config.json: {e}"))?;
    // Only root reads it (it holds the environment): the bundle of a user-namespaced container
    // is open to the group of the namespace's root (`idmapped::stage_root`).
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(bundle.join("config.json"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &config))
        .map_err(|e| format!("write {}/config.json: {e}", bundle.display()))?;
    let (pid, pty) = match io {
        CreateIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => std::process::Stdio::from(fd),
                None => std::process::Stdio::null(),
            };
            let stdio = [stdin, stdout.into(), stderr.into()];
            (cli.create(&req.id, bundle, None, stdio)?, None)
        }
        CreateIo::Tty => {
            let (pid, pty) = create_with_console(cli, &req.id, bundle)?;
            (pid, Some(pty))
        }
    };
    cli.start(&req.id)?;
    Ok(Started { pid, pty })
}

/// The seccomp profile as JSON, the AppArmor profile's name and every capability name.
fn host_parts(req: &StartContainer, ns_dir: &Path) -> Result<spec::HostParts, String> {
    let seccomp = match req.seccomp {
        1 => SeccompProfile::RuntimeDefault,
        2 => SeccompProfile::Localhost(PathBuf::from(&req.seccomp_profile)),
        _ => SeccompProfile::Unconfined,
    };
    let apparmor = match crate::apparmor::AppArmorProfile::of_start(req) {
        Some(profile @ (AppArmorProfile::RuntimeDefault | AppArmorProfile::Localhost(_))) => {
            crate::apparmor::prepare(&profile)
                .map_err(|e| format!("apparmor: {e}"))?
                .map(|label| label.name().to_string())
        }
        _ => None,
    };
    Ok(spec::HostParts {
        ns_dir: ns_dir.to_path_buf(),
        seccomp: crate::seccomp::to_oci_json(&seccomp).map_err(|e| e.to_string())?,
        apparmor,
        all_capabilities: executor::all_capability_names()?,
        devices: match req.privileged {
            true => host_devices::list()?,
            false => Vec::new(),
        },
    })
}

/// `create --console-socket`: serves the socket while the runtime runs and takes the PTY's
/// primary side it sends. The socket path is short (a unix socket path has 108 bytes).
fn create_with_console(cli: &Cli, id: &str, bundle: &Path) -> Result<(i32, OwnedFd), String> {
    let short: String = id.chars().take(16).collect();
    let socket = bundle
        .parent()
        .unwrap_or(bundle)
        .join(format!("{short}.tty"));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("console socket {}: {e}", socket.display()))?;
    let result = serve_console(cli, id, bundle, &socket, &listener);
    let _ = std::fs::remove_file(&socket);
    result
}

fn serve_console(
    cli: &Cli,
    id: &str,
    bundle: &Path,
    socket: &Path,
    listener: &UnixListener,
) -> Result<(i32, OwnedFd), String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let mut child = cli.spawn_create(id, bundle, socket)?;
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("console socket: {e}"));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} create {id} failed ({status}) before sending a console",
                cli.name()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} create {id} sent no console", cli.name()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let pty = receive_fd(&stream).map_err(|e| format!("receive console of {id}: {e}"));
    let status = child.wait().map_err(|e| format!("wait for create: {e}"))?;
    if !status.success() {
        return Err(format!("{} create {id} failed ({status})", cli.name()));
    }
    let pid_file = bundle.join("init.pid");
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("read {}: {e}", pid_file.display()))?;
    let pid = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: bad pid {text:?}", pid_file.display()))?;
    Ok((pid, pty?))
}

/// Receives one fd sent with `SCM_RIGHTS`.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err("no fd in the message".into())
}

/// Deletes the runtime's container, unmounts the rootfs and removes the bundle; every step is
/// tried (each is also fine with nothing to undo). The error is the runtime's, if it failed
/// for another reason than not knowing the container.
pub fn cleanup(cli: &Cli, id: &str, rootfs: &Path) -> Result<(), String> {
    let deleted = match cli.delete(id) {
        Err(e) if !e.contains("does not exist") => Err(e),
        _ => Ok(()),
    };
    let _ = executor::cleanup_rootfs(rootfs);
    let removed = remove_bundle(&cli.bundle(id));
    deleted.and(removed)
}

/// Detaches whatever the shim mounted in `bundle` for the runtime, then removes it; a bundle
/// with a mount left in it is not removed (that would delete through the mount: a volume's or
/// the container's files).
fn remove_bundle(bundle: &Path) -> Result<(), String> {
    image_volumes::unstage(bundle);
    idmapped::unstage(bundle);
    if !bundle.exists() {
        return Ok(());
    }
    let prefix = format!("{}/", bundle.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    if let Some(line) = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
    {
        return Err(format!(
            "bundle {} not removed: still mounted in it: {line}",
            bundle.display()
        ));
    }
    std::fs::remove_dir_all(bundle).map_err(|e| format!("remove {}: {e}", bundle.display()))
}
