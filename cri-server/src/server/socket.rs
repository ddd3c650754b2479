//! The CRI socket: claimed exclusively, bound with mode 0660, removed on shutdown.
//!
//! Claiming goes: take an exclusive `flock` on `<socket>.lock` (so two berthds starting at once
//! cannot both win; waiting up to [`LOCK_WAIT`] for a dying berthd's to go), refuse if something answers on the socket, refuse if the path is not a
//! socket, then bind a temporary socket, set its mode and rename it over the path, which
//! replaces a stale socket atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Mode of the CRI socket: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the socket could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "another berthd (pid {pid}) holds {lock}; refusing to start a second daemon on {socket}"
    )]
    Locked {
        pid: String,
        lock: PathBuf,
        socket: PathBuf,
    },
    #[error("{socket} is live: another process is serving it; refusing to replace it")]
    Live { socket: PathBuf },
    #[error("{socket} exists and is not a socket; refusing to replace it")]
    NotASocket { socket: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// A bound CRI socket and the lock that makes it ours. Dropping it removes the socket
/// (if it is still the one we bound) and releases the lock.
#[derive(Debug)]
pub struct ClaimedSocket {
    path: PathBuf,
    inode: u64,
    listener: Option<std::os::unix::net::UnixListener>,
    _lock: Flock<File>,
}

impl ClaimedSocket {
    /// Claims `path` as described in the module docs.
    pub fn claim(path: &Path) -> Result<ClaimedSocket, SocketError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create socket directory", dir))?;
        }
        let lock = take_lock(path)?;
        refuse_if_live_or_foreign(path)?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name()
                .map_or("berth.sock".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        let listener =
            std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err("bind", &tmp))?;
        let finish = || -> io::Result<u64> {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))?;
            fs::rename(&tmp, path)?;
            Ok(fs::symlink_metadata(path)?.ino())
        };
        let inode = finish().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            SocketError::Io {
                what: "install socket",
                path: path.into(),
                source: e,
            }
        })?;
        Ok(ClaimedSocket {
            path: path.into(),
            inode,
            listener: Some(listener),
            _lock: lock,
        })
    }

    /// Hands out the listener (once) for the server to accept on.
    pub fn take_listener(&mut self) -> Option<std::os::unix::net::UnixListener> {
        self.listener.take()
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ClaimedSocket {
    fn drop(&mut self) {
        // Only remove the socket if it is still ours: an operator may have moved things.
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode)
            && let Err(e) = fs::remove_file(&self.path)
        {
            tracing::warn!(socket = %self.path.display(), error = %e, "remove socket");
        }
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// How long a start waits for the lock before refusing. A berthd that just died can leave it
/// held for a moment: a child it was starting holds berthd's open files (the lock's too) from
/// its fork until its exec closes them, and berthd starts a process (the next pod's spare shim,
/// 30 ms after each pod's start) often. Seen in the crash tests: a berthd restarted right after
/// `kill -9` refused to start.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the exclusive lock on `file`, trying again every 10 ms for up to `wait`; the file back
/// if it is still held.
fn lock_within(file: File, wait: std::time::Duration) -> Result<Flock<File>, File> {
    let deadline = std::time::Instant::now() + wait;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, _)) if std::time::Instant::now() >= deadline => return Err(f),
            Err((f, _)) => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn take_lock(socket: &Path) -> Result<Flock<File>, SocketError> {
    let lock_path = lock_path(socket);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err("open lock file", &lock_path))?;
    let mut lock = match lock_within(file, LOCK_WAIT) {
        Ok(lock) => lock,
        Err(file) => {
            let pid = fs::read_to_string(&lock_path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into());
            drop(file);
            return Err(SocketError::Locked {
                pid,
                lock: lock_path,
                socket: socket.into(),
            });
        }
    };
    let write_pid = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        f.sync_all()
    };
    write_pid(&mut lock).map_err(io_err("write lock file", &lock_path))?;
    Ok(lock)
}

fn refuse_if_live_or_foreign(path: &Path) -> Result<(), SocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat socket", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            socket: path.into(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::Live {
            socket: path.into(),
        }),
        // Refused (no listener) or similar: a stale socket from a dead daemon.
        Err(_) => {
            tracing::info!(socket = %path.display(), "replacing stale socket");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_sets_mode_and_drop_removes_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("sub/berth.sock");
        let claimed = ClaimedSocket::claim(&sock).expect("claim");
        let meta = fs::metadata(&sock).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        drop(claimed);
        assert!(!sock.exists(), "socket removed on drop");
    }

    #[test]
    fn second_claim_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("berth.sock");
        let _first = ClaimedSocket::claim(&sock).expect("first claim");
        let err = ClaimedSocket::claim(&sock)
            .expect_err("second claim")
            .to_string();
        assert!(err.contains("another berthd"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("berth.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale bind"));
        assert!(sock.exists(), "stale socket left behind");
        let _claimed = ClaimedSocket::claim(&sock).expect("claim over stale");
        std::os::unix::net::UnixStream::connect(&sock).expect("new socket accepts");
    }

    #[test]
    fn live_socket_of_another_process_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("berth.sock");
        let _live = std::os::unix::net::UnixListener::bind(&sock).expect("live bind");
        let err = ClaimedSocket::claim(&sock).expect_err("live").to_string();
        assert!(err.contains("is live"), "{err}");
    }

    #[test]
    fn regular_file_at_socket_path_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("berth.sock");
        fs::write(&sock, "not a socket").expect("write");
        let err = ClaimedSocket::claim(&sock).expect_err("file").to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(
            fs::read_to_string(&sock).expect("still there"),
            "not a socket"
        );
    }
}
