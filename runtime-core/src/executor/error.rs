//! Errors of the executor, and the step failures they are built from.

use std::fmt::Display;
use std::io;

use nix::errno::Errno;

/// Why a container process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The [`ContainerProcess`](super::ContainerProcess) cannot be run as given; nothing was
    /// mounted or forked.
    #[error("invalid container process `{id}`: {reason}")]
    InvalidSpec {
        /// Container ID.
        id: String,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A step in the shim failed (rootfs mount, pipe, fork, PID namespace switch).
    #[error("{message}")]
    Host {
        /// The step, its path and the system's reason.
        message: String,
        /// The underlying error number, if any.
        errno: Option<Errno>,
    },
    /// The container process failed before `execve` took over, e.g.
    /// ``exec `/bin/nope`: No such file or directory``; it has been reaped.
    #[error("{message}")]
    Container {
        /// The step, its path and the system's reason.
        message: String,
        /// The underlying error number, if any.
        errno: Option<Errno>,
    },
}

impl ExecError {
    /// The error number behind a failed step, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ExecError::InvalidSpec { .. } => None,
            ExecError::Host { errno, .. } | ExecError::Container { errno, .. } => *errno,
        }
    }
}

/// A failed step: what was being done, on what, and why.
#[derive(Debug)]
pub(super) struct Failure {
    pub message: String,
    pub errno: Option<Errno>,
}

impl Failure {
    /// `"{op}: {reason}"` for a system call that failed with `errno`.
    pub fn new(op: impl Display, errno: Errno) -> Self {
        Failure {
            message: format!("{op}: {}", errno.desc()),
            errno: Some(errno),
        }
    }

    /// `"{op}: {reason}"` for the error number a libc call just left.
    /// The error number is read before `op` runs (formatting may allocate).
    pub fn last_os<D: Display>(op: impl FnOnce() -> D) -> Self {
        let errno = Errno::last();
        Failure::new(op(), errno)
    }

    /// A failure with a complete message and an optional error number.
    pub fn plain(message: impl Into<String>, errno: Option<Errno>) -> Self {
        Failure {
            message: message.into(),
            errno,
        }
    }

    /// A failed step in the shim.
    pub fn host(self) -> ExecError {
        ExecError::Host {
            message: self.message,
            errno: self.errno,
        }
    }

    /// A failed step in the container process.
    pub fn container(self) -> ExecError {
        ExecError::Container {
            message: self.message,
            errno: self.errno,
        }
    }

    /// Wire format on the error pipe: errno (4 bytes, native endian, 0 for none), message.
    pub fn encode(&self) -> Vec<u8> {
        const MAX_MESSAGE: usize = 2048;
        let errno = self.errno.map_or(0, |e| e as i32);
        let mut bytes = errno.to_ne_bytes().to_vec();
        let message = self.message.as_bytes();
        bytes.extend_from_slice(&message[..message.len().min(MAX_MESSAGE)]);
        bytes
    }

    /// Reads what [`Failure::encode`] wrote; a short report is itself described as such.
    pub fn decode(bytes: &[u8]) -> Self {
        let Some((errno, message)) = bytes.split_first_chunk::<4>() else {
            return Failure::plain("container process sent a truncated error report", None);
        };
        let errno = i32::from_ne_bytes(*errno);
        Failure {
            message: String::from_utf8_lossy(message).into_owned(),
            errno: (errno != 0).then(|| Errno::from_raw(errno)),
        }
    }
}

/// Attaches the step (`op`) to a system error.
pub(super) trait Context<T> {
    /// Turns the error into a [`Failure`] saying `"{op()}: {reason}"`.
    fn context<D: Display>(self, op: impl FnOnce() -> D) -> Result<T, Failure>;
}

impl<T> Context<T> for nix::Result<T> {
    fn context<D: Display>(self, op: impl FnOnce() -> D) -> Result<T, Failure> {
        self.map_err(|errno| Failure::new(op(), errno))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn context<D: Display>(self, op: impl FnOnce() -> D) -> Result<T, Failure> {
        self.map_err(|e| match e.raw_os_error() {
            Some(raw) => Failure::new(op(), Errno::from_raw(raw)),
            None => Failure::plain(format!("{}: {e}", op()), None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_round_trips_through_the_pipe_format() {
        let sent = Failure::new("exec `/bin/nope`", Errno::ENOENT);
        let got = Failure::decode(&sent.encode());
        assert_eq!(got.message, "exec `/bin/nope`: No such file or directory");
        assert_eq!(got.errno, Some(Errno::ENOENT));
        let plain = Failure::decode(&Failure::plain("boom", None).encode());
        assert_eq!((plain.message.as_str(), plain.errno), ("boom", None));
    }

    #[test]
    fn truncated_report_is_named() {
        assert!(Failure::decode(&[1, 2]).message.contains("truncated"));
    }
}
