//! Streaming sessions: the HTTP server for exec, attach and port-forward URLs,
//! the single-use tokens, and each session kind.

pub mod attach;
pub mod exec;
pub mod port_forward;
pub mod pty;
pub mod server;
pub mod tokens;
