//! The Node Resource Interface (NRI) for berth, wire-compatible with containerd/nri v0.12.
//!
//! - [`transport`]: NRI's framing: two ttrpc connections multiplexed over one unix socket
//!   connection, written here over prost types (why: see the module docs).
//! - [`adaptation`]: the runtime side berthd serves: plugin registration, configuration,
//!   synchronization, and the lifecycle events relayed to plugins.
//! - [`plugin`]: the plugin side, for plugins written in Rust and for berth's tests.
//!
//! The messages are `proto::nri`, generated from the unchanged upstream `api.proto`.

pub mod adaptation;
pub mod plugin;
pub mod transport;

pub use adaptation::{Config, Nri, NriError, RuntimeState, event_bit, valid_events};
pub use proto::nri as api;
