//! `berth-shim exec`: runs one CRI exec inside a running container and reports on it.
//!
//! berthd starts this mode per exec with the process's stdio as fds 0-2 and a unix socket as
//! fd 3 ([`EXEC_FD`]). It reads one [`ExecSpec`] frame from the socket, starts the process with
//! [`executor::exec_in_container`] (it stays its parent), answers `Started(pid)` or
//! `Failed(reason)`, forwards the signals it gets to the process, and reports `Exited` when the
//! process ends. If berthd hangs up first (session over, ExecSync timeout, berthd gone) the
//! process is killed: an exec lives exactly as long as the session that asked for it.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, dup, dup2_stderr, dup2_stdin, dup2_stdout};
use proto::shim::{
    ExecFailure, ExecReport, ExecSpec, ExitStatus, exec_report, read_frame, write_frame,
};

use super::containers::seccomp_filter;
use crate::apparmor::AppArmorProfile;
use crate::executor::{self, ExecError, ExecProcess, Stdio, User};

/// The first argument that selects this mode.
pub const EXEC_ARG: &str = "exec";
/// The fd berthd passes the control socket on.
pub const EXEC_FD: i32 = 3;

/// Signals forwarded to the exec'd process.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Entry point of `berth-shim exec`.
pub fn main() -> ExitCode {
    // SAFETY: berthd hands fd 3 over for this process to own.
    let mut control = unsafe { UnixStream::from_raw_fd(EXEC_FD) };
    match run(&mut control) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            send(&mut control, exec_report::Kind::Failed(failure));
            ExitCode::FAILURE
        }
    }
}

fn failure(message: String) -> ExecFailure {
    ExecFailure {
        message,
        errno: 0,
        in_container: false,
    }
}

fn exec_failure(e: ExecError) -> ExecFailure {
    ExecFailure {
        message: e.to_string(),
        errno: e.errno().map_or(0, |e| e as i32),
        in_container: matches!(e, ExecError::Container { .. }),
    }
}

fn run(control: &mut UnixStream) -> Result<(), ExecFailure> {
    let spec: ExecSpec =
        read_frame(control).map_err(|e| failure(format!("read exec spec: {e}")))?;
    let signals = block_signals().map_err(failure)?;
    let process = to_process(&spec).map_err(failure)?;
    let pid = executor::exec_in_container(&process).map_err(exec_failure)?;
    drop(process);
    release_stdio();
    send(control, exec_report::Kind::Started(pid.as_raw() as u32));
    let status = supervise(pid, &signals, control);
    send(control, exec_report::Kind::Exited(status));
    Ok(())
}

fn send(control: &mut UnixStream, kind: exec_report::Kind) {
    // berthd may be gone; the process has been dealt with either way.
    let _ = write_frame(control, &ExecReport { kind: Some(kind) });
}

/// Blocks SIGCHLD and the forwarded signals and reads them from a signalfd (the child resets
/// its mask before exec).
fn block_signals() -> Result<SignalFd, String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("block signals: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}

fn to_process(spec: &ExecSpec) -> Result<ExecProcess, String> {
    let c = spec
        .container
        .as_ref()
        .ok_or_else(|| "exec spec without the container".to_string())?;
    let stdio = Stdio {
        stdin: Some(dup_fd(0)?),
        stdout: dup_fd(1)?,
        stderr: dup_fd(2)?,
    };
    Ok(ExecProcess {
        id: c.id.clone(),
        target_pid: spec.target_pid as i32,
        expected_cgroup: spec.cgroup.clone(),
        args: c.args.clone(),
        env: c.env.clone(),
        cwd: c.cwd.clone(),
        user: User {
            uid: c.uid,
            gid: c.gid,
            additional_gids: c.additional_gids.clone(),
        },
        capabilities: (!c.all_capabilities).then(|| c.capabilities.clone()),
        no_new_privs: c.no_new_privs,
        oom_score_adj: c.has_oom_score_adj.then_some(c.oom_score_adj),
        cgroup_procs: c.cgroup_procs.iter().map(PathBuf::from).collect(),
        seccomp: seccomp_filter(c)?,
        apparmor: AppArmorProfile::of_start(c),
        stdio,
        join_user_ns: !c.userns_uids.is_empty(),
    })
}

fn dup_fd(fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: borrows one of the standard fds for the duration of the dup.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    dup(borrowed).map_err(|e| format!("dup fd {fd}: {e}"))
}

/// Points fds 0-2 at /dev/null so the process's output ends (EOF for berthd) when it and its
/// children exit, not when this supervisor does.
fn release_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2_stdin(null.as_fd());
        let _ = dup2_stdout(null.as_fd());
        let _ = dup2_stderr(null.as_fd());
    }
}

/// Waits for the process, forwarding signals; kills it if berthd hangs up.
fn supervise(pid: Pid, signals: &SignalFd, control: &UnixStream) -> ExitStatus {
    let mut hung_up = false;
    loop {
        if let Some(status) = reap(pid) {
            return status;
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if !hung_up {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
        let control_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if control_ready && peer_closed(control) {
            hung_up = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                continue;
            }
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = kill(pid, sig);
            }
        }
    }
}

/// Whether berthd closed its end (berthd never sends anything after the spec).
fn peer_closed(control: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(control),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT
        ),
        Ok(0) | Err(Errno::ECONNRESET)
    )
}

fn reap(pid: Pid) -> Option<ExitStatus> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus { code, signal: 0 }),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitStatus {
            code: 128 + sig as i32,
            signal: sig as i32,
        }),
        Ok(_) | Err(Errno::EINTR) => None,
        // Nothing to wait for (cannot happen for our own child): report it as lost.
        Err(_) => Some(ExitStatus {
            code: 255,
            signal: 0,
        }),
    }
}
