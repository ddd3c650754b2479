//! berthd's side of the shim protocol.

pub mod frames;
