//! A pseudo-terminal for a tty exec: berthd keeps the primary side, async and non-blocking;
//! the exec'd process gets the secondary side as its stdio and controlling terminal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The primary side of a terminal, shared by its reader, writer and resizer.
#[derive(Clone)]
pub struct Pty {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl Pty {
    /// A new terminal: (primary, secondary).
    pub fn open() -> io::Result<(Pty, OwnedFd)> {
        let pair = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        for fd in [&pair.master, &pair.slave] {
            let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?;
            let flags =
                nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
            fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(io::Error::from)?;
        }
        let fl = OFlag::from_bits_truncate(
            fcntl(&pair.master, FcntlArg::F_GETFL).map_err(io::Error::from)?,
        );
        fcntl(&pair.master, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        // SAFETY: the OwnedFd is moved in and stays open, as the same fd, for the AsyncFd's
        // whole life.
        let fd = unsafe { AsyncFd::register(pair.master) }.map_err(io::Error::from)?;
        Ok((Pty { fd: Arc::new(fd) }, pair.slave))
    }

    /// Sets the terminal size (the process gets SIGWINCH).
    pub fn resize(&self, width: u16, height: u16) {
        let size = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our PTY fd with a valid winsize.
        unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

impl AsyncRead for Pty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let raw = guard.get_inner().as_raw_fd();
            // SAFETY: read into the caller's initialized buffer.
            let n = unsafe { libc::read(raw, unfilled.as_mut_ptr().cast(), unfilled.len()) };
            if n >= 0 {
                buf.advance(n as usize);
                return Poll::Ready(Ok(()));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The secondary side is closed everywhere: end of output.
                Some(libc::EIO) => return Poll::Ready(Ok(())),
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for Pty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let raw = guard.get_inner().as_raw_fd();
            // SAFETY: write from the caller's buffer.
            let n = unsafe { libc::write(raw, data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(err)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
