//! The shim's containers: started through the native executor, their output written to CRI
//! logs, their exit recorded durably when the shim reaps them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use proto::shim::{ATTACH_EXITED, AttachContainer, ContainerInfo, MountSpec, StartContainer};

use super::NS_PID;
use super::attach::{Attacher, Input};
use crate::apparmor::AppArmorProfile;
use crate::executor::{
    self, ContainerProcess, Mount, MountKind, PidNamespace, Propagation, Rootfs, Stdio, User,
    UserNamespace,
};
use crate::logs::{LogWriter, Stream};
use crate::oci;
use crate::seccomp::{self, SeccompFilter, SeccompProfile};
use crate::steps::StepClock;
use crate::userns::IdMap;

/// One container the shim started.
pub struct Container {
    info: ContainerInfo,
    rootfs: PathBuf,
    status_path: PathBuf,
    log: Option<LogWriter>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// The container's stdin as the shim writes it (CRI `stdin`), non-blocking.
    stdin: Option<File>,
    stdin_once: bool,
    /// Attacher input the container has not read yet.
    pending_stdin: Vec<u8>,
    /// Close `stdin` once `pending_stdin` is written (`stdin_once` session ended).
    close_stdin_when_flushed: bool,
    /// The PTY's primary side, for resizes.
    pty: Option<OwnedFd>,
    attachers: Vec<Attacher>,
    /// The OCI runtime that created it; `None`: the native executor.
    oci: Option<oci::Cli>,
}

/// A container's stdio as the shim keeps it.
struct ContainerIo {
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    stdin_w: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    stdio: Stdio,
}

/// Attacher input taken per loop turn while the container's stdin is backed up.
const MAX_PENDING_STDIN: usize = 256 * 1024;
/// Reads of [`READ_CHUNK`] taken from each output pipe when its process exits: 1 MiB, the most
/// a pipe enlarged with F_SETPIPE_SZ by an unprivileged process holds by default.
const EXIT_DRAIN_READS: usize = 16;
/// One read from an output pipe: a default pipe's whole capacity.
const READ_CHUNK: usize = 64 * 1024;

/// What the shim loop polls for a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// An output pipe has data (or hit EOF).
    Output(Stream),
    /// An attacher or the container's stdin can make progress.
    Pump,
}

/// All containers of the pod.
#[derive(Default)]
pub struct Containers {
    by_id: BTreeMap<String, Container>,
    /// The buffer output is read into (its spare capacity; see [`read_into`]).
    read_buf: Vec<u8>,
}

/// Reads up to [`READ_CHUNK`] bytes from `file` into `buf`, which holds exactly them after.
///
/// The bytes go into the vector's uninitialised capacity: a zeroed buffer would be touched in
/// full, and a 64 KiB one on the stack is too (the frame's stack probes), and those pages then
/// stay in every idle shim's RSS. Pages of fresh heap capacity are touched only as far as
/// output fills them.
fn read_into(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    buf.reserve(READ_CHUNK);
    // SAFETY: read(2) writes at most READ_CHUNK bytes into the spare capacity just reserved,
    // and the length is set to what it reported written.
    let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), READ_CHUNK) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the first n bytes were written by read(2) above (n <= READ_CHUNK <= capacity).
    unsafe { buf.set_len(n) };
    Ok(n)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Opens a container's log beneath the pod's log directory when berthd named it.
fn open_log(path: &str, dir: &str) -> Result<LogWriter, String> {
    let path = Path::new(path);
    let opened = match path.strip_prefix(dir) {
        Ok(rel) if !dir.is_empty() => LogWriter::open_beneath(Path::new(dir), rel),
        _ => LogWriter::open(path),
    };
    opened.map_err(|e| format!("open log {}: {e}", path.display()))
}

impl Containers {
    /// Starts a container (through `runtime` when the pod has an OCI runtime handler); fails
    /// if one with the id is still running.
    pub fn start(
        &mut self,
        req: &StartContainer,
        ns_dir: &Path,
        runtime: Option<&proto::shim::OciRuntime>,
    ) -> Result<ContainerInfo, String> {
        if let Some(existing) = self.by_id.get(&req.id)
            && !existing.info.exited
        {
            return Err(format!("container {} is already running", req.id));
        }
        let mut clock = StepClock::start();
        let log = match req.log_path.as_str() {
            "" => None,
            path => Some(open_log(path, &req.log_directory)?),
        };
        clock.mark("open_log");
        let (pid, io, cli) = match runtime {
            Some(runtime) => {
                let cli = oci::Cli::new(runtime.clone());
                let (pid, io) = start_oci(&cli, req, ns_dir)?;
                clock.mark("oci_runtime");
                (pid, io, Some(cli))
            }
            None => {
                let (pid, io) = start_native(req, ns_dir, &mut clock)?;
                (pid, io, None)
            }
        };
        let (out_r, err_r, stdin_w, pty) = io;
        for fd in std::iter::once(&out_r)
            .chain(err_r.as_ref())
            .chain(stdin_w.as_ref())
        {
            set_nonblocking(fd.as_fd()).map_err(|e| format!("output fd: {e}"))?;
        }
        let mut info = ContainerInfo {
            id: req.id.clone(),
            pid: pid as u32,
            started_at: now_ns(),
            ..Default::default()
        };
        let stored = info.clone();
        clock.mark("record");
        info.start_steps = clock.into_steps();
        self.by_id.insert(
            req.id.clone(),
            Container {
                info: stored,
                rootfs: PathBuf::from(&req.rootfs),
                status_path: PathBuf::from(&req.status_path),
                log,
                stdout: Some(File::from(out_r)),
                stderr: err_r.map(File::from),
                stdin: stdin_w.map(File::from),
                stdin_once: req.stdin_once,
                pending_stdin: Vec::new(),
                close_stdin_when_flushed: false,
                pty,
                attachers: Vec::new(),
                oci: cli,
            },
        );
        Ok(info)
    }

    /// Adds an attach session to a running container.
    pub fn attach(&mut self, stream: UnixStream, req: &AttachContainer) -> Result<(), String> {
        let c = self
            .by_id
            .get_mut(&req.id)
            .ok_or_else(|| format!("container {} not found in this pod", req.id))?;
        if c.info.exited {
            return Err(format!("container {} is not running", req.id));
        }
        let mut attacher = Attacher::new(stream, req, c.stdin.is_some())
            .map_err(|e| format!("attach to {}: {e}", req.id))?;
        if c.stdout.is_none() && c.stderr.is_none() {
            attacher.queue(ATTACH_EXITED, &[]);
            attacher.closing = true;
        }
        c.attachers.push(attacher);
        Ok(())
    }

    /// Moves attacher input to the container and queued output to attachers, as far as each
    /// can go without blocking; drops attachers that hung up or fell behind.
    ///
    /// Not inlined (nor `drain`): the shim's waiting loop keeps a small frame, so that the
    /// stack its handlers use lies below it and is released when the shim is idle
    /// (`memory::release_idle_memory`).
    #[inline(never)]
    pub fn pump(&mut self, id: &str) {
        let Some(c) = self.by_id.get_mut(id) else {
            return;
        };
        let mut kept = Vec::with_capacity(c.attachers.len());
        for mut a in std::mem::take(&mut c.attachers) {
            if c.service(&mut a) {
                kept.push(a);
            }
        }
        c.attachers = kept;
        c.flush_stdin();
    }

    pub fn info(&self, id: &str) -> Option<ContainerInfo> {
        self.by_id.get(id).map(|c| c.info.clone())
    }

    /// Signals a running container; a no-op once it exited.
    pub fn signal(&self, id: &str, signal: i32) -> Result<(), String> {
        let c = self
            .by_id
            .get(id)
            .ok_or_else(|| format!("container {id} not found in this pod"))?;
        if c.info.exited {
            return Ok(());
        }
        let sig = Signal::try_from(signal).map_err(|_| format!("bad signal {signal}"))?;
        // The runtime refuses a container that stopped but is not reaped yet: the shim, its
        // parent, signals it directly then (harmless to a zombie).
        if let Some(cli) = &c.oci
            && cli.kill(id, signal, false).is_ok()
        {
            return Ok(());
        }
        match kill(Pid::from_raw(c.info.pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(format!("signal container {id}: {e}")),
        }
    }

    /// Forgets an exited container and unmounts its root.
    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        if let Some(c) = self.by_id.get(id)
            && !c.info.exited
        {
            return Err(format!("container {id} is still running"));
        }
        if let Some(c) = self.by_id.remove(id) {
            if let Some(cli) = &c.oci
                && let Err(e) = oci::cleanup(cli, id, &c.rootfs)
            {
                eprintln!("berth-shim: {e}");
            }
            executor::cleanup_rootfs(&c.rootfs).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn reopen_log(&mut self, id: &str) -> Result<(), String> {
        let c = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| format!("container {id} not found in this pod"))?;
        match c.log.as_mut() {
            Some(log) => log.reopen().map_err(|e| format!("reopen log of {id}: {e}")),
            None => Ok(()),
        }
    }

    /// Records the exit of a reaped process if it is one of ours; true if it was.
    pub fn on_exit(&mut self, status: WaitStatus) -> bool {
        let (pid, code, signal) = match status {
            WaitStatus::Exited(pid, code) => (pid, code, 0),
            WaitStatus::Signaled(pid, sig, _) => (pid, 128 + sig as i32, sig as i32),
            _ => return false,
        };
        let Some(id) = self
            .by_id
            .iter()
            .find(|(_, c)| !c.info.exited && c.info.pid == pid.as_raw() as u32)
            .map(|(id, _)| id.clone())
        else {
            return false;
        };
        // Everything the process wrote before it exited is in its pipes now: log it before
        // the exit record lets berthd (and a client reading the log after seeing the
        // container Exited) look. Bounded, since a child it left behind may keep writing.
        self.drain_bounded(&id, Stream::Stdout, EXIT_DRAIN_READS);
        self.drain_bounded(&id, Stream::Stderr, EXIT_DRAIN_READS);
        let Some(c) = self.by_id.get_mut(&id) else {
            return false;
        };
        c.info.exited = true;
        // Nobody can read the container's stdin any more.
        c.stdin = None;
        c.pending_stdin.clear();
        c.info.exit_code = code;
        c.info.signal = signal;
        c.info.finished_at = now_ns();
        if let Err(e) = write_status(&c.status_path, &c.info) {
            eprintln!("berth-shim: record exit of {}: {e}", c.info.id);
        }
        true
    }

    /// What to poll: (container id, what it is for, fd, events).
    pub fn poll_set(&self) -> Vec<(String, Io, BorrowedFd<'_>, PollFlags)> {
        let mut out = Vec::new();
        for (id, c) in &self.by_id {
            if let Some(f) = &c.stdout {
                out.push((
                    id.clone(),
                    Io::Output(Stream::Stdout),
                    f.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            if let Some(f) = &c.stderr {
                out.push((
                    id.clone(),
                    Io::Output(Stream::Stderr),
                    f.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            if let Some(f) = &c.stdin
                && !c.pending_stdin.is_empty()
            {
                out.push((id.clone(), Io::Pump, f.as_fd(), PollFlags::POLLOUT));
            }
            for a in &c.attachers {
                // Stop reading input while the container's stdin is backed up.
                let mut events = PollFlags::empty();
                if c.pending_stdin.len() < MAX_PENDING_STDIN {
                    events |= PollFlags::POLLIN;
                }
                if a.wants_write() {
                    events |= PollFlags::POLLOUT;
                }
                out.push((id.clone(), Io::Pump, a.fd(), events));
            }
        }
        out
    }

    /// Moves what is readable on one pipe to the log and attachers; closes it at EOF.
    #[inline(never)]
    pub fn drain(&mut self, id: &str, stream: Stream) {
        self.drain_bounded(id, stream, usize::MAX);
    }

    /// [`Containers::drain`] with at most `reads` reads of [`READ_CHUNK`].
    fn drain_bounded(&mut self, id: &str, stream: Stream, reads: usize) {
        let Containers { by_id, read_buf } = self;
        let Some(c) = by_id.get_mut(id) else {
            return;
        };
        for _ in 0..reads {
            let pipe = match stream {
                Stream::Stdout => &mut c.stdout,
                Stream::Stderr => &mut c.stderr,
            };
            let Some(file) = pipe.as_mut() else { return };
            // A PTY's primary side reports EIO once the container side is closed: that is EOF.
            let read = match read_into(file, read_buf) {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
                other => other,
            };
            match read {
                Ok(0) => {
                    *pipe = None;
                    if let Some(log) = c.log.as_mut() {
                        let _ = log.close_stream(stream);
                    }
                    if c.stdout.is_none() && c.stderr.is_none() {
                        c.output_ended();
                    }
                    return;
                }
                Ok(n) => {
                    if let Some(log) = c.log.as_mut()
                        && let Err(e) = log.write(stream, &read_buf[..n])
                    {
                        eprintln!("berth-shim: log of {id}: {e}");
                    }
                    c.fan_out(stream, &read_buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("berth-shim: read output of {id}: {e}");
                    *pipe = None;
                    return;
                }
            }
        }
    }

    /// Kills every running container and waits for it, then unmounts every root.
    pub fn kill_all(&mut self) {
        for c in self.by_id.values() {
            if !c.info.exited {
                let _ = kill(Pid::from_raw(c.info.pid as i32), Signal::SIGKILL);
            }
        }
        let running: Vec<Pid> = self
            .by_id
            .values()
            .filter(|c| !c.info.exited)
            .map(|c| Pid::from_raw(c.info.pid as i32))
            .collect();
        for pid in running {
            if let Ok(status) = waitpid(pid, None) {
                self.on_exit(status);
            }
        }
        let ids: Vec<String> = self.by_id.keys().cloned().collect();
        for id in ids {
            self.drain(&id, Stream::Stdout);
            self.drain(&id, Stream::Stderr);
            if let Some(c) = self.by_id.remove(&id) {
                if let Some(cli) = &c.oci
                    && let Err(e) = oci::cleanup(cli, &id, &c.rootfs)
                {
                    eprintln!("berth-shim: {e}");
                }
                let _ = executor::cleanup_rootfs(&c.rootfs);
            }
        }
    }
}

impl Container {
    /// Queues output for every attacher that wants it; drops those too far behind.
    fn fan_out(&mut self, stream: Stream, data: &[u8]) {
        self.attachers.retain_mut(|a| {
            let keep = a.queue_output(stream, data) && a.flush().is_ok();
            if !keep {
                eprintln!(
                    "berth-shim: attacher of {} fell behind; disconnected",
                    self.info.id
                );
            }
            keep
        });
    }

    /// Tells attachers the output is over; they hang up once it is delivered.
    fn output_ended(&mut self) {
        for a in &mut self.attachers {
            a.queue(ATTACH_EXITED, &[]);
            a.closing = true;
        }
        self.attachers
            .retain_mut(|a| !matches!(a.flush(), Ok(true) | Err(_)));
    }

    /// One attacher's turn; false when it is done and must be dropped.
    fn service(&mut self, a: &mut Attacher) -> bool {
        if !a.closing {
            let budget = MAX_PENDING_STDIN.saturating_sub(self.pending_stdin.len());
            match a.read_input(budget.max(1)) {
                Ok((inputs, eof)) => {
                    for input in inputs {
                        self.on_input(a.stdin, input);
                    }
                    if eof {
                        self.attach_ended(a.stdin);
                        return false;
                    }
                }
                Err(_) => {
                    self.attach_ended(a.stdin);
                    return false;
                }
            }
        }
        match a.flush() {
            Ok(true) => !a.closing,
            Ok(false) => true,
            Err(_) => false,
        }
    }

    fn on_input(&mut self, uses_stdin: bool, input: Input) {
        match input {
            Input::Stdin(data) if uses_stdin && self.stdin.is_some() => {
                self.pending_stdin.extend_from_slice(&data);
            }
            Input::StdinClose if uses_stdin => self.attach_ended(true),
            Input::Resize { width, height } => {
                if let Some(pty) = &self.pty {
                    resize(pty, width, height);
                }
            }
            _ => {}
        }
    }

    /// A session that used stdin ended (or closed it): with `stdin_once` the container's
    /// stdin closes once what was sent is written.
    fn attach_ended(&mut self, used_stdin: bool) {
        if used_stdin && self.stdin_once {
            self.close_stdin_when_flushed = true;
        }
    }

    /// Writes pending stdin without blocking.
    fn flush_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.pending_stdin.clear();
            return;
        };
        while !self.pending_stdin.is_empty() {
            match stdin.write(&self.pending_stdin) {
                Ok(n) if n > 0 => {
                    self.pending_stdin.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The container closed its stdin: drop what it will never read.
                _ => {
                    self.pending_stdin.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.close_stdin_when_flushed {
            self.stdin = None;
        }
    }
}

/// Sets a terminal's size.
fn resize(pty: &OwnedFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a PTY fd with a valid winsize.
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(pty),
            libc::TIOCSWINSZ,
            &size,
        )
    };
}

/// The shim's ends of a started container's stdio: output, stderr, stdin, PTY.
type ShimEnds = (OwnedFd, Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>);

/// Starts a container with the native executor.
fn start_native(
    req: &StartContainer,
    ns_dir: &Path,
    clock: &mut StepClock,
) -> Result<(i32, ShimEnds), String> {
    let seccomp = seccomp_filter(req)?;
    clock.mark("seccomp");
    let io = if req.tty {
        tty_stdio(req.stdin)?
    } else {
        pipe_stdio(req.stdin)?
    };
    let ContainerIo {
        out_r,
        err_r,
        stdin_w,
        pty,
        stdio,
    } = io;
    let mut process = to_process(req, ns_dir, stdio);
    process.seccomp = seccomp;
    process.apparmor = AppArmorProfile::of_start(req);
    clock.mark("stdio");
    let started = if req.restore_dir.is_empty() {
        let spawned = executor::spawn_timed(&process, clock).map_err(|e| e.to_string());
        drop(process); // closes the shim's copies of the container's ends
        spawned
    } else {
        restore(req, process)
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            // A failed start leaves no root mounted (a later start mounts it again).
            let _ = executor::cleanup_rootfs(Path::new(&req.rootfs));
            return Err(e);
        }
    };
    Ok((pid.as_raw(), (out_r, err_r, stdin_w, pty)))
}

/// Starts a container through an OCI runtime: pipes, or a PTY the runtime makes.
fn start_oci(
    cli: &oci::Cli,
    req: &StartContainer,
    ns_dir: &Path,
) -> Result<(i32, ShimEnds), String> {
    if !req.restore_dir.is_empty() {
        return Err(format!(
            "restoring a checkpoint is supported for the native executor only, not {}",
            cli.name()
        ));
    }
    if req.tty {
        let started = oci::start(cli, req, ns_dir, oci::CreateIo::Tty)?;
        let Some(primary) = started.pty else {
            return Err(format!("{} gave no console for {}", cli.name(), req.id));
        };
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup pty: {e}"));
        let stdin_w = if req.stdin {
            Some(dup(&primary)?)
        } else {
            None
        };
        let pty = Some(dup(&primary)?);
        return Ok((started.pid, (primary, None, stdin_w, pty)));
    }
    let ContainerIo {
        out_r,
        err_r,
        stdin_w,
        stdio,
        ..
    } = pipe_stdio(req.stdin)?;
    let io = oci::CreateIo::Pipes {
        stdin: stdio.stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
    };
    let started = oci::start(cli, req, ns_dir, io)?;
    Ok((started.pid, (out_r, err_r, stdin_w, None)))
}

/// The container's compiled seccomp filter, if it has one.
pub(crate) fn seccomp_filter(req: &StartContainer) -> Result<Option<SeccompFilter>, String> {
    let profile = match req.seccomp {
        1 => SeccompProfile::RuntimeDefault,
        2 => SeccompProfile::Localhost(PathBuf::from(&req.seccomp_profile)),
        _ => return Ok(None),
    };
    seccomp::compile(&profile).map_err(|e| e.to_string())
}

/// Separate pipes for stdout and stderr; stdin is a pipe the shim writes if the container
/// has one, else /dev/null.
fn pipe_stdio(with_stdin: bool) -> Result<ContainerIo, String> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("stdout pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("stderr pipe: {e}"))?;
    let (stdin_r, stdin_w) = match with_stdin {
        true => {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("stdin pipe: {e}"))?;
            (Some(r), Some(w))
        }
        false => (None, None),
    };
    let stdio = Stdio {
        stdin: stdin_r,
        stdout: out_w,
        stderr: err_w,
    };
    Ok(ContainerIo {
        out_r,
        err_r: Some(err_r),
        stdin_w,
        pty: None,
        stdio,
    })
}

/// A pseudo-terminal: the container gets the replica as stdin, stdout and stderr (it becomes
/// its controlling terminal); the shim reads the combined output from the primary side.
fn tty_stdio(with_stdin: bool) -> Result<ContainerIo, String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("open pty: {e}"))?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup pty: {e}"));
    let stdio = Stdio {
        stdin: Some(dup(&pty.slave)?),
        stdout: dup(&pty.slave)?,
        stderr: pty.slave,
    };
    Ok(ContainerIo {
        stdin_w: if with_stdin {
            Some(dup(&pty.master)?)
        } else {
            None
        },
        pty: Some(dup(&pty.master)?),
        out_r: pty.master,
        err_r: None,
        stdio,
    })
}

fn set_nonblocking(fd: BorrowedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Writes the exit record atomically (berthd reads it even after the shim is gone).
fn write_status(path: &Path, info: &ContainerInfo) -> io::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, prost::Message::encode_to_vec(info))?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads an exit record written by a shim.
pub fn read_status(path: &Path) -> io::Result<ContainerInfo> {
    let bytes = std::fs::read(path)?;
    prost::Message::decode(bytes.as_slice()).map_err(io::Error::other)
}

/// How long `criu restore` may take.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Restores the container's process tree from its checkpoint instead of starting `args`: the
/// root is mounted as for a start, then CRIU (a child of the shim) rebuilds the tree in the
/// container's cgroup and the pod's namespaces with `process`'s stdio. Consumes `process`, so
/// the shim's copies of the container's ends are closed when this returns.
fn restore(req: &StartContainer, process: ContainerProcess) -> Result<Pid, String> {
    executor::mount_rootfs(&process.rootfs).map_err(|e| e.to_string())?;
    let mut external: Vec<(String, PathBuf)> = process
        .mounts
        .iter()
        .map(|m| (m.destination.clone(), m.source.clone()))
        .collect();
    external.extend(
        process
            .masked_paths
            .iter()
            .map(|p| (p.clone(), PathBuf::from("/dev/null"))),
    );
    if let Some(dir) = process.cgroup_procs.first().and_then(|p| p.parent()) {
        external.push(("/sys/fs/cgroup".into(), dir.to_path_buf()));
    }
    let Stdio {
        stdin,
        stdout,
        stderr,
    } = process.stdio;
    crate::checkpoint::restore::restore(crate::checkpoint::restore::Restore {
        id: &req.id,
        dir: Path::new(&req.restore_dir),
        root: process.rootfs.target(),
        net_ns: process.net_ns.clone(),
        ipc_ns: process.ipc_ns.clone(),
        uts_ns: process.uts_ns.clone(),
        cgroup_procs: &process.cgroup_procs,
        external_mounts: external,
        stdin,
        stdout,
        stderr,
        timeout: RESTORE_TIMEOUT,
    })
}

fn to_process(req: &StartContainer, ns_dir: &Path, stdio: Stdio) -> ContainerProcess {
    let ns = |own: bool, name: &str| own.then(|| ns_dir.join(name));
    ContainerProcess {
        id: req.id.clone(),
        rootfs: Rootfs::Overlay {
            lower: req.lower.iter().map(PathBuf::from).collect(),
            upper: PathBuf::from(&req.upper),
            work: PathBuf::from(&req.work),
            target: PathBuf::from(&req.rootfs),
        },
        readonly_rootfs: req.readonly_rootfs,
        mounts: req.mounts.iter().map(to_mount).collect(),
        net_ns: ns(req.pod_net, super::NS_NET),
        ipc_ns: ns(req.pod_ipc, super::NS_IPC),
        uts_ns: ns(req.pod_uts, super::NS_UTS),
        pid_ns: match req.pid_mode {
            1 => PidNamespace::Join(ns_dir.join(NS_PID)),
            2 => PidNamespace::Host,
            3 => PidNamespace::Join(PathBuf::from(&req.pid_ns_path)),
            _ => PidNamespace::New,
        },
        args: req.args.clone(),
        env: req.env.clone(),
        cwd: req.cwd.clone(),
        user: User {
            uid: req.uid,
            gid: req.gid,
            additional_gids: req.additional_gids.clone(),
        },
        capabilities: (!req.all_capabilities).then(|| req.capabilities.clone()),
        no_new_privs: req.no_new_privs,
        privileged: req.privileged,
        masked_paths: req.masked_paths.clone(),
        readonly_paths: req.readonly_paths.clone(),
        oom_score_adj: req.has_oom_score_adj.then_some(req.oom_score_adj),
        rlimits: Vec::new(),
        cgroup_procs: req.cgroup_procs.iter().map(PathBuf::from).collect(),
        seccomp: None,
        apparmor: None,
        stdio,
        user_ns: (!req.userns_uids.is_empty()).then(|| UserNamespace {
            path: ns_dir.join(super::NS_USER),
            map: IdMap::from_proto(&req.userns_uids, &req.userns_gids),
        }),
    }
}

fn to_mount(m: &MountSpec) -> Mount {
    let kind = if m.tmpfs {
        MountKind::Tmpfs {
            options: m.options.clone(),
        }
    } else if !m.image_layers.is_empty() {
        MountKind::Image {
            layers: m.image_layers.iter().map(PathBuf::from).collect(),
            sub_path: m.image_sub_path.clone(),
        }
    } else {
        MountKind::Bind {
            readonly: m.readonly,
            recursive_readonly: m.recursive_read_only,
            propagation: match m.propagation {
                1 => Propagation::RSlave,
                2 => Propagation::RShared,
                _ => Propagation::Private,
            },
            idmap: (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
                .then(|| IdMap::from_proto(&m.uid_mappings, &m.gid_mappings)),
        }
    };
    Mount {
        destination: m.destination.clone(),
        source: PathBuf::from(&m.source),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container record around the read ends of its output pipes; `pid` is made up.
    fn container(dir: &Path, pid: u32, out: OwnedFd, err: OwnedFd) -> Container {
        Container {
            info: ContainerInfo {
                id: "c1".into(),
                pid,
                ..Default::default()
            },
            rootfs: dir.join("rootfs"),
            status_path: dir.join("exit.pb"),
            log: Some(LogWriter::open(&dir.join("c1.log")).expect("open log")),
            stdout: Some(File::from(out)),
            stderr: Some(File::from(err)),
            stdin: None,
            stdin_once: false,
            pending_stdin: Vec::new(),
            close_stdin_when_flushed: false,
            pty: None,
            attachers: Vec::new(),
            oci: None,
        }
    }

    #[test]
    fn output_written_before_an_exit_is_logged_before_the_exit_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        set_nonblocking(out_r.as_fd()).expect("nonblocking");
        set_nonblocking(err_r.as_fd()).expect("nonblocking");
        let mut containers = Containers::default();
        let pid = 4_000_000;
        containers
            .by_id
            .insert("c1".into(), container(dir.path(), pid, out_r, err_r));
        // The process wrote, then exited (a child it left keeps the write ends open).
        File::from(out_w.try_clone().expect("dup"))
            .write_all(b"0 1000 100000\n")
            .expect("write");
        File::from(err_w.try_clone().expect("dup"))
            .write_all(b"oops\n")
            .expect("write");

        assert!(containers.on_exit(WaitStatus::Exited(Pid::from_raw(pid as i32), 3)));

        let info = read_status(&dir.path().join("exit.pb")).expect("exit record");
        assert!(info.exited);
        assert_eq!(info.exit_code, 3);
        let log = std::fs::read_to_string(dir.path().join("c1.log")).expect("log");
        assert!(log.contains(" stdout F 0 1000 100000\n"), "{log}");
        assert!(log.contains(" stderr F oops\n"), "{log}");
        drop((out_w, err_w));
    }
}
