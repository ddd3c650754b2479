//! berth's end-to-end harness: a real `berthd` on a temp socket, a real OCI registry on
//! loopback, test images built and pushed by the harness itself, and a CRI client.
//!
//! Nothing here talks to the internet: images are made from Debian's `busybox` binary and
//! small static programs compiled by this crate's build script.

pub mod channel;
pub mod cleanup;
pub mod containers;
pub mod daemon;
pub mod http;
pub mod images;
pub mod inventory;
pub mod pods;
pub mod registry;
