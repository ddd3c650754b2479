//! Choosing the PID namespace the container process is born in.
//!
//! `setns(CLONE_NEWPID)` and `unshare(CLONE_NEWPID)` never move the caller: they change the
//! namespace the calling thread's *next children* are created in (`pid_for_children`). So the
//! shim switches it just around `fork` and switches it back afterwards. The container is then
//! the shim's direct child (it can `waitpid` on it, and it is the shim's PID for it that
//! `spawn` returns) without a double fork or `clone3`.
//!
//! `unshare(CLONE_NEWPID)` fails unless `pid_for_children` is the caller's own namespace, and a
//! pod shim's is its pod namespace, so `New` first switches back to the shim's own namespace;
//! the new namespace is then a sibling of the pod's, not nested in it.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;

use super::PidNamespace;
use super::error::{Context, Failure};

/// The calling thread's own PID namespace.
const OWN_PID_NS: &str = "/proc/thread-self/ns/pid";
/// Where the calling thread's children are born.
const PID_FOR_CHILDREN: &str = "/proc/thread-self/ns/pid_for_children";

/// The calling thread's `pid_for_children`, switched for one `fork`; restored on
/// [`ChildPidNamespace::restore`] or drop.
pub(super) struct ChildPidNamespace {
    saved: Option<OwnedFd>,
}

impl ChildPidNamespace {
    /// Makes the calling thread's next child be born in `ns`.
    pub fn enter(ns: &PidNamespace) -> Result<Self, Failure> {
        let saved = open_ns(Path::new(PID_FOR_CHILDREN))?;
        // From here on, drop restores the saved namespace if a step fails.
        let switch = ChildPidNamespace { saved: Some(saved) };
        match ns {
            PidNamespace::Host => join(Path::new(OWN_PID_NS))?,
            PidNamespace::Join(path) => join(path)?,
            PidNamespace::New => {
                join(Path::new(OWN_PID_NS))?;
                unshare(CloneFlags::CLONE_NEWPID).context(|| "unshare pid namespace")?;
            }
        }
        Ok(switch)
    }

    /// Switches `pid_for_children` back to what it was before [`ChildPidNamespace::enter`].
    pub fn restore(mut self) -> Result<(), Failure> {
        self.restore_saved()
    }

    fn restore_saved(&mut self) -> Result<(), Failure> {
        match self.saved.take() {
            Some(fd) => setns(fd, CloneFlags::CLONE_NEWPID)
                .context(|| "restore the shim's pid namespace for children"),
            None => Ok(()),
        }
    }
}

impl Drop for ChildPidNamespace {
    fn drop(&mut self) {
        if let Err(failure) = self.restore_saved() {
            tracing::error!(error = %failure.message, "pid namespace for children not restored");
        }
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd, Failure> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open pid namespace {}", path.display()))
}

fn join(path: &Path) -> Result<(), Failure> {
    let fd = open_ns(path)?;
    setns(fd, CloneFlags::CLONE_NEWPID)
        .context(|| format!("join pid namespace {} for the container", path.display()))
}

/// How `ns` reads in messages.
pub(super) fn describe(ns: &PidNamespace) -> String {
    match ns {
        PidNamespace::New => "a new pid namespace".into(),
        PidNamespace::Join(path) => format!("pid namespace {}", path.display()),
        PidNamespace::Host => "the shim's pid namespace".into(),
    }
}
