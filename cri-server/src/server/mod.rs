//! The daemon around the services: serving the socket, systemd notification,
//! deadlines, logging, memory tuning and recovery at start.

pub mod daemon;
pub mod grpc_deadline;
pub mod logging;
pub mod memory;
pub mod recovery;
pub mod sd_notify;
pub mod socket;
