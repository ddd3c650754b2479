//! Readiness notification for systemd (`Type=notify`): one datagram to `$NOTIFY_SOCKET`.
//!
//! Written by hand because the protocol is a single `sendto` of `KEY=VALUE` lines on a unix
//! datagram socket (a path, or an abstract name written with a leading `@`); the crates that wrap
//! it (`sd-notify`, `libsystemd`) add nothing berthd needs. Without `NOTIFY_SOCKET` (not started
//! by systemd, or not `Type=notify`) every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets to the socket it listens on.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tells systemd the CRI socket serves (`READY=1`, with the main PID and a status line).
pub fn ready(socket: &std::path::Path) -> io::Result<bool> {
    let msg = format!(
        "READY=1\nMAINPID={}\nSTATUS=serving the CRI on {}\n",
        std::process::id(),
        socket.display()
    );
    notify(&msg)
}

/// Tells systemd berthd is shutting down (`STOPPING=1`).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1\nSTATUS=draining in-flight calls\n")
}

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when the variable is unset or empty.
fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        Some(target) if !target.is_empty() => {
            send_to(&target.to_string_lossy(), state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends one datagram to a notify socket named as systemd names it (`/path` or `@abstract`).
fn send_to(target: &str, state: &str) -> io::Result<()> {
    let addr = notify_addr(target)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "notify socket {target}: sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

fn notify_addr(target: &str) -> io::Result<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if target.starts_with('/') {
        SocketAddr::from_pathname(target)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {target:?} is neither an absolute path nor @abstract"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_message_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        send_to(path.to_str().expect("utf-8 path"), "READY=1\n").expect("send");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn ready_message_reaches_an_abstract_socket() {
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        send_to(&format!("@{name}"), "STOPPING=1\n").expect("send");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn relative_notify_socket_is_rejected() {
        let err = send_to("notify.sock", "READY=1\n").expect_err("relative path");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_listener_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.sock");
        assert!(send_to(path.to_str().expect("utf-8 path"), "READY=1\n").is_err());
    }
}
