//! The shim process itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, dup2_stdout, fork, sethostname, setsid};
use proto::shim::{
    AttachContainer, Pong, ShimRequest, ShimResponse, ShimSpec, read_frame, shim_request::Kind,
    write_frame,
};

use super::containers::{Containers, Io};
use super::{
    ERROR_PREFIX, NS_IPC, NS_NET, NS_PID, NS_USER, NS_UTS, POD_ARG, READY_PREFIX, SPARE_NAME,
    SPARE_PREFIX,
};
use crate::userns::{self, Helper, IdMap};

/// How long (ms) the shim must have had nothing to do before it gives back the stack and heap
/// the last request used (`memory::release_idle_memory`): requests that come together (a
/// pod's start, its container's create and start) do not each pay for it.
const IDLE_RELEASE_MS: u16 = 250;

/// How much longer (ms) it must stay idle before it also drops the pages of its code it maps
/// (`memory::release_mapped_code`). Longer than kubelet's relist period (1 s, which reaches every
/// shim through ListContainers): a shim asked every second keeps its code mapped instead of
/// mapping it again for each request (measured: dropping it after every request doubled the
/// shim's CPU time per request, 0.19 → 0.42 ms).
const CODE_RELEASE_MS: u16 = 1750;

/// What the shim gives back when it is next idle long enough (see `Pod::wait`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owed {
    Nothing,
    StackAndHeap,
    Code,
}

/// Entry point of the `berth-shim` binary: `berth-shim pod <state-dir>` (see [`POD_ARG`]).
pub fn main() -> ExitCode {
    harden();
    // Named whatever path it was exec'd through (berthd runs it as `/proc/self/fd/N`):
    // `berth-shim`, or `berth-spare` until a pod shim has its pod.
    match std::env::args_os().nth(1) {
        Some(arg) if arg == super::exec::EXEC_ARG => {
            set_name("berth-shim");
            return super::exec::main();
        }
        Some(arg) if arg == POD_ARG => set_name(SPARE_NAME),
        _ => {
            eprintln!("usage: berth-shim pod <state-dir> | berth-shim exec");
            return ExitCode::from(2);
        }
    }
    // Detach from berthd: new session, then fork so the shim is reparented (to init or the
    // nearest subreaper) and berthd's death or restart never touches it.
    if let Err(e) = setsid() {
        report(&format!("{ERROR_PREFIX}setsid: {e}"));
        return ExitCode::FAILURE;
    }
    // SAFETY: single-threaded process; the child only continues this program.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&format!("{ERROR_PREFIX}fork: {e}"));
            return ExitCode::FAILURE;
        }
    }
    report(&format!("{SPARE_PREFIX}{}", std::process::id()));
    let spec = match read_spec() {
        Ok(Some(s)) => s,
        // berthd is gone (or closed its end) before handing over a pod.
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            report(&format!("{ERROR_PREFIX}{e}"));
            return ExitCode::FAILURE;
        }
    };
    set_name("berth-shim");
    redirect_stderr(&spec.log_path);
    match Pod::setup(spec) {
        Ok(mut pod) => {
            report(&format!("{READY_PREFIX}{}", std::process::id()));
            release_stdout();
            pod.serve();
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&format!("{ERROR_PREFIX}{e}"));
            ExitCode::FAILURE
        }
    }
}

/// Before anything else: not dumpable (no process of another user namespace may ptrace this
/// one or its setup children, which inherit the flag).
fn harden() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Sets the process name (`/proc/self/comm`, at most 15 bytes).
fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: prctl with a NUL-terminated buffer that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr(), 0, 0, 0) };
}

/// The pod's spec, read from stdin to its end; `None` when stdin ends before any byte.
fn read_spec() -> io::Result<Option<ShimSpec>> {
    let read_err = |e: io::Error| io::Error::other(format!("read the spec from stdin: {e}"));
    // Through a duplicate of fd 0, not `io::stdin()`, whose buffer would stay in every shim.
    // SAFETY: fd 0 is open for the whole process (berthd's spec pipe, later /dev/null).
    let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
    let mut bytes = Vec::new();
    File::from(stdin.try_clone_to_owned().map_err(read_err)?)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    prost::Message::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| io::Error::other(format!("decode the spec: {e}")))
}

/// Writes one line to stdout (berthd's readiness pipe).
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Points stdout at /dev/null so berthd sees EOF on its pipe.
fn release_stdout() {
    if let Ok(null) = File::open("/dev/null") {
        let _ = dup2_stdout(null.as_fd());
    }
}

/// Points stderr at the pod's shim log and stdin (the spent spec pipe) at /dev/null.
fn redirect_stderr(log_path: &str) {
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    if log_path.is_empty() {
        return;
    }
    if let Ok(f) = OpenOptions::new().create(true).append(true).open(log_path) {
        let _ = nix::unistd::dup2_stderr(f.as_fd());
    }
}

fn log(msg: &str) {
    eprintln!("berth-shim[{}]: {msg}", std::process::id());
}

/// The pod as this shim holds it.
struct Pod {
    spec: ShimSpec,
    pinned: Vec<PathBuf>,
    reaper: Option<Pid>,
    listener: Option<UnixListener>,
    containers: Containers,
}

impl Pod {
    /// Creates and pins the namespaces and binds the socket; undoes its own work on failure.
    fn setup(spec: ShimSpec) -> Result<Pod, String> {
        let mut pod = Pod {
            spec,
            pinned: Vec::new(),
            reaper: None,
            listener: None,
            containers: Containers::default(),
        };
        match pod.try_setup() {
            Ok(()) => Ok(pod),
            Err(e) => {
                pod.teardown();
                Err(e)
            }
        }
    }

    fn try_setup(&mut self) -> Result<(), String> {
        // Orphaned container processes of this pod are reparented to the shim.
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "set child subreaper: {}",
                io::Error::last_os_error()
            ));
        }
        if self.spec.userns_uids.is_empty() {
            if self.spec.join_net {
                self.join_pinned_net()?;
            }
            unshare(pod_ns_flags(&self.spec))
                .map_err(|e| format!("unshare pod namespaces: {e}"))?;
            configure_namespaces(&self.spec)?;
            self.create_ns_dir()?;
            for name in pod_ns_names(&self.spec) {
                self.pin(&format!("/proc/self/ns/{name}"), name)?;
            }
        } else if self.spec.join_net {
            return Err(
                "join_net: a pod with a user namespace creates its network namespace \
                        in it"
                    .into(),
            );
        } else {
            self.setup_user_namespace()?;
        }
        if self.spec.new_pid {
            self.start_reaper()?;
        }
        self.bind_socket()
    }

    /// Enters the network namespace berthd made and pinned at `<ns_dir>/net`; it is unpinned
    /// with the shim's own pins.
    fn join_pinned_net(&mut self) -> Result<(), String> {
        let pin = Path::new(&self.spec.ns_dir).join(NS_NET);
        let fd = File::open(&pin).map_err(|e| format!("open {}: {e}", pin.display()))?;
        nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join the pod's network namespace: {e}"))?;
        self.pinned.push(pin);
        Ok(())
    }

    fn create_ns_dir(&self) -> Result<(), String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.spec.ns_dir)
            .map_err(|e| format!("create {}: {e}", self.spec.ns_dir))
    }

    /// The pod's own user namespace, owning its new network, IPC and UTS namespaces (so the
    /// containers' capabilities apply to them): a helper child unshares them all at once and
    /// sets them up, the shim writes the ID mappings and pins the four namespaces; the shim
    /// itself stays in the host's namespaces.
    fn setup_user_namespace(&mut self) -> Result<(), String> {
        let map = IdMap::from_proto(&self.spec.userns_uids, &self.spec.userns_gids);
        let flags = CloneFlags::CLONE_NEWUSER | pod_ns_flags(&self.spec);
        let spec = &self.spec;
        let helper = Helper::fork(|| {
            unshare(flags).map_err(|e| format!("unshare pod namespaces: {e}"))?;
            configure_namespaces(spec)
        })
        .map_err(|e| format!("fork the user namespace helper: {e}"))?;
        helper
            .wait_ready()
            .map_err(|e| format!("pod namespaces in a user namespace: {e}"))?;
        userns::write_maps(helper.pid, &map)
            .map_err(|e| format!("user namespace mappings: {e}"))?;
        self.create_ns_dir()?;
        let pid = helper.pid;
        for name in std::iter::once(NS_USER).chain(pod_ns_names(&self.spec)) {
            self.pin(&format!("/proc/{pid}/ns/{name}"), name)?;
        }
        Ok(())
    }

    /// Bind-mounts a namespace file onto `<ns_dir>/<name>` so it lives on without processes.
    fn pin(&mut self, source: &str, name: &str) -> Result<(), String> {
        let target = Path::new(&self.spec.ns_dir).join(name);
        File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        self.pinned.push(target.clone());
        mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("pin {source} at {}: {e}", target.display()))
    }

    /// Forks the PID 1 of a new PID namespace the pod's containers will share, and waits
    /// until it has confined itself (see [`reaper`](super::reaper)).
    fn start_reaper(&mut self) -> Result<(), String> {
        if !self.spec.userns_uids.is_empty() {
            return self.start_reaper_in_user_namespace();
        }
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid namespace: {e}"))?;
        let (report_rx, report_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("pipe for the pid namespace reaper: {e}"))?;
        let empty_dir = PathBuf::from(&self.spec.ns_dir);
        // SAFETY: single-threaded; the child runs only `reaper::run`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(report_rx);
                super::reaper::run(&self.spec.cgroup_procs, &empty_dir, report_tx)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(report_tx);
                self.reaper = Some(child);
                super::reaper::read_report(&report_rx)?;
                self.pin(&format!("/proc/{child}/ns/pid"), NS_PID)
            }
            Err(e) => Err(format!("fork pid namespace reaper: {e}")),
        }
    }

    /// The reaper of a pod with its own user namespace, PID 1 of a PID namespace that
    /// namespace owns (see [`reaper::run_in_user_namespace`](super::reaper)); the shim's
    /// children are then born in it, as in a pod without one.
    fn start_reaper_in_user_namespace(&mut self) -> Result<(), String> {
        let user_ns = Path::new(&self.spec.ns_dir).join(NS_USER);
        let userns =
            File::open(&user_ns).map_err(|e| format!("open {}: {e}", user_ns.display()))?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("pipe for the pid namespace reaper: {e}"))
        };
        let (report_rx, report_tx) = pipe()?;
        let (pid_rx, pid_tx) = pipe()?;
        let empty_dir = PathBuf::from(&self.spec.ns_dir);
        // SAFETY: single-threaded; the child runs only `reaper::run_in_user_namespace`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(report_rx);
                drop(pid_rx);
                super::reaper::run_in_user_namespace(
                    &self.spec.cgroup_procs,
                    &empty_dir,
                    userns.into(),
                    report_tx,
                    pid_tx,
                )
            }
            Ok(ForkResult::Parent { child }) => {
                drop(report_tx);
                drop(pid_tx);
                drop(userns);
                let reaper = super::reaper::read_pid(&pid_rx);
                while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
                let Some(reaper) = reaper else {
                    super::reaper::read_report(&report_rx)?;
                    return Err("pid namespace reaper: its parent exited without it".into());
                };
                self.reaper = Some(reaper);
                super::reaper::read_report(&report_rx)?;
                let pid_ns = format!("/proc/{reaper}/ns/pid");
                self.pin(&pid_ns, NS_PID)?;
                let fd = File::open(&pid_ns).map_err(|e| format!("open {pid_ns}: {e}"))?;
                nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)
                    .map_err(|e| format!("enter the pod's pid namespace for children: {e}"))
            }
            Err(e) => Err(format!("fork pid namespace reaper: {e}")),
        }
    }

    fn bind_socket(&mut self) -> Result<(), String> {
        let path = Path::new(&self.spec.socket_path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let _ = fs::remove_file(path);
        let listener =
            UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Answers requests until told to shut down.
    fn serve(&mut self) {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(s);
        }
        if let Err(e) = mask.thread_block() {
            log(&format!("block signals: {e}"));
        }
        // Non-blocking: on_signal drains it until empty.
        let sigfd =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(fd) => fd,
                Err(e) => {
                    log(&format!("signalfd: {e}; shutting down"));
                    self.teardown();
                    return;
                }
            };
        let Some(listener) = self.listener.take() else {
            return;
        };
        // Owed after a request or a signal, not after container output: a container that
        // writes a line every half second must not make its shim release memory after each.
        let mut owed = Owed::Nothing;
        loop {
            let (conn_ready, sig_ready, readable) = match self.wait(&listener, &sigfd, &mut owed) {
                Ok(r) => r,
                Err(e) => {
                    log(&format!("poll: {e}"));
                    break;
                }
            };
            for (id, io) in readable {
                match io {
                    Io::Output(stream) => self.containers.drain(&id, stream),
                    Io::Pump => self.containers.pump(&id),
                }
            }
            if sig_ready && self.on_signal(&sigfd) {
                break;
            }
            if conn_ready
                && let Ok((stream, _)) = listener.accept()
                && self.on_connection(stream)
            {
                break;
            }
            if conn_ready || sig_ready {
                owed = Owed::StackAndHeap;
            }
        }
        drop(listener);
        self.teardown();
    }

    /// Blocks until the socket, a signal or a container's output is ready. What is `owed`, it
    /// gives back once nothing happened for `IDLE_RELEASE_MS` (stack and heap) and then
    /// `CODE_RELEASE_MS` more (the mapped code), and waits on.
    #[allow(clippy::type_complexity)]
    fn wait(
        &self,
        listener: &UnixListener,
        sigfd: &SignalFd,
        owed: &mut Owed,
    ) -> nix::Result<(bool, bool, Vec<(String, Io)>)> {
        let pipes = self.containers.poll_set();
        let mut fds = vec![
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            pipes
                .iter()
                .map(|(_, _, fd, events)| PollFd::new(*fd, *events)),
        );
        loop {
            let timeout = match *owed {
                Owed::StackAndHeap => PollTimeout::from(IDLE_RELEASE_MS),
                Owed::Code => PollTimeout::from(CODE_RELEASE_MS),
                Owed::Nothing => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(0) if *owed == Owed::StackAndHeap => {
                    crate::memory::release_idle_memory();
                    *owed = Owed::Code;
                }
                Ok(0) if *owed == Owed::Code => {
                    crate::memory::release_mapped_code();
                    *owed = Owed::Nothing;
                }
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        let readable = pipes
            .iter()
            .zip(&fds[2..])
            .filter(|(_, fd)| ready(fd))
            .map(|((id, io, _, _), _)| (id.clone(), *io))
            .collect();
        Ok((ready(&fds[0]), ready(&fds[1]), readable))
    }

    /// Handles pending signals; true means shut down. Not inlined, like `on_connection`: its
    /// frame then lies below `serve`'s, where `memory::release_idle_memory` (called by `wait`
    /// when the shim is idle) releases it.
    #[inline(never)]
    fn on_signal(&mut self, sigfd: &SignalFd) -> bool {
        let mut stop = false;
        while let Ok(Some(info)) = sigfd.read_signal() {
            if info.ssi_signo == libc::SIGTERM as u32 || info.ssi_signo == libc::SIGINT as u32 {
                log("terminated by signal");
                stop = true;
            }
        }
        self.reap();
        stop
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == self.reaper {
                        log(&format!("pid namespace reaper exited: {status:?}"));
                        self.reaper = None;
                    } else {
                        self.containers.on_exit(status);
                    }
                }
            }
        }
    }

    /// Serves one request; true means shut down.
    #[inline(never)]
    fn on_connection(&mut self, mut stream: UnixStream) -> bool {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let request: ShimRequest = match read_frame(&mut stream) {
            Ok(r) => r,
            Err(e) => {
                log(&format!("bad request: {e}"));
                return false;
            }
        };
        if let Some(Kind::Attach(req)) = &request.kind {
            self.on_attach(stream, req);
            return false;
        }
        let (response, stop) = match request.kind {
            Some(Kind::Ping(_)) => (self.pong(), false),
            Some(Kind::Shutdown(_)) => (ShimResponse::default(), true),
            Some(other) => (self.on_container_request(other), false),
            None => (error_response("empty request"), false),
        };
        if stop {
            // Tear down before answering so berthd sees a finished shutdown.
            self.teardown();
        }
        if let Err(e) = write_frame(&mut stream, &response) {
            log(&format!("write response: {e}"));
        }
        let _ = drain(&mut stream);
        stop
    }

    fn on_container_request(&mut self, kind: Kind) -> ShimResponse {
        let ns_dir = PathBuf::from(&self.spec.ns_dir);
        let result = match kind {
            Kind::StartContainer(req) => self
                .containers
                .start(&req, &ns_dir, self.spec.oci_runtime.as_ref())
                .map(Some),
            Kind::SignalContainer(req) => {
                self.containers.signal(&req.id, req.signal).map(|()| None)
            }
            Kind::ContainerState(req) => self
                .containers
                .info(&req.id)
                .map(Some)
                .ok_or_else(|| format!("container {} not found in this pod", req.id)),
            Kind::RemoveContainer(req) => self.containers.remove(&req.id).map(|()| None),
            Kind::ReopenLog(req) => self.containers.reopen_log(&req.id).map(|()| None),
            Kind::Ping(_) | Kind::Shutdown(_) | Kind::Attach(_) => Err("unexpected request".into()),
        };
        match result {
            Ok(container) => ShimResponse {
                container,
                ..Default::default()
            },
            Err(e) => error_response(&e),
        }
    }

    /// Grants an attach: answers, then keeps the connection as one of the container's
    /// attachers.
    fn on_attach(&mut self, mut stream: UnixStream, req: &AttachContainer) {
        let granted = match stream.try_clone() {
            Ok(clone) => self.containers.attach(clone, req),
            Err(e) => Err(format!("attach: {e}")),
        };
        let response = match &granted {
            Ok(()) => ShimResponse::default(),
            Err(e) => error_response(e),
        };
        // The answer goes out before any output frame: the attacher is only polled (and
        // written to without blocking) from the next loop turn on.
        if let Err(e) = write_frame(&mut stream, &response) {
            log(&format!("write attach response: {e}"));
        }
    }

    fn pong(&self) -> ShimResponse {
        ShimResponse {
            error: String::new(),
            container: None,
            pong: Some(Pong {
                pod_id: self.spec.pod_id.clone(),
                shim_pid: std::process::id(),
                reaper_pid: self.reaper.map_or(0, |p| p.as_raw() as u32),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        }
    }

    /// Kills the reaper, unpins the namespaces, removes the socket. Idempotent.
    #[inline(never)]
    fn teardown(&mut self) {
        self.containers.kill_all();
        if let Some(pid) = self.reaper.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for target in self.pinned.drain(..) {
            if let Err(e) = umount2(&target, MntFlags::MNT_DETACH)
                && e != nix::errno::Errno::EINVAL
            {
                log(&format!("unpin {}: {e}", target.display()));
            }
            let _ = fs::remove_file(&target);
        }
        let _ = fs::remove_dir(&self.spec.ns_dir);
        if self.listener.take().is_some() || Path::new(&self.spec.socket_path).exists() {
            let _ = fs::remove_file(&self.spec.socket_path);
        }
    }
}

/// The namespaces a pod gets of its own besides PID (and user).
fn pod_ns_flags(spec: &ShimSpec) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    for (wanted, flag) in [
        (spec.new_net && !spec.join_net, CloneFlags::CLONE_NEWNET),
        (spec.new_ipc, CloneFlags::CLONE_NEWIPC),
        (spec.new_uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if wanted {
            flags |= flag;
        }
    }
    flags
}

/// Pin names of those namespaces.
fn pod_ns_names(spec: &ShimSpec) -> Vec<&'static str> {
    [
        (spec.new_net && !spec.join_net, NS_NET),
        (spec.new_ipc, NS_IPC),
        (spec.new_uts, NS_UTS),
    ]
    .into_iter()
    .filter_map(|(wanted, name)| wanted.then_some(name))
    .collect()
}

/// Hostname, loopback and sysctls, in the calling process's new namespaces.
fn configure_namespaces(spec: &ShimSpec) -> Result<(), String> {
    if spec.new_uts && !spec.hostname.is_empty() {
        sethostname(&spec.hostname).map_err(|e| format!("set hostname: {e}"))?;
    }
    if spec.new_net {
        bring_up_loopback()?;
    }
    for (key, value) in &spec.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

fn ready(fd: &PollFd) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

fn error_response(msg: &str) -> ShimResponse {
    ShimResponse {
        error: msg.into(),
        ..Default::default()
    }
}

fn drain(stream: &mut UnixStream) -> io::Result<()> {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 64];
    while stream.read(&mut buf)? > 0 {}
    Ok(())
}

/// Brings `lo` up in the new network namespace (an ioctl, so no netlink code in the shim).
fn bring_up_loopback() -> Result<(), String> {
    // SAFETY: a plain datagram socket; closed by OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket for lo: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, owned descriptor.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid socket and ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!("get lo flags: {}", io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!("bring lo up: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}
