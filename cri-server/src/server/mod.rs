//! The daemon around the services: serving the socket, systemd notification,
//! deadlines, logging and recovery at start.

pub mod daemon;
pub mod grpc_deadline;
pub mod logging;
pub mod recovery;
pub mod sd_notify;
pub mod socket;
