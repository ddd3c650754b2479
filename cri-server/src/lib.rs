//! berthd: the CRI gRPC server.
//!
//! One module per RPC or tight RPC family (`version`, `status`, `runtime_config`, …), routed
//! from [`runtime_service`] and [`image_service`]; [`errors`] is the one place internal errors
//! become gRPC statuses. [`config`] and [`cli`] make the effective configuration, [`socket`]
//! claims the CRI socket and [`server`] runs the daemon.

pub mod cli;
pub mod config;
pub mod errors;
pub mod image_service;
pub mod logging;
pub mod runtime_config;
pub mod runtime_service;
pub mod server;
pub mod socket;
pub mod state;
pub mod status;
pub mod version;
