//! Streaming sessions: the HTTP server for exec, attach and port-forward URLs, and each
//! session kind (the single-use tokens are `state::stream_tokens`).

pub mod attach;
pub mod exec;
pub mod port_forward;
pub mod pty;
pub mod server;
