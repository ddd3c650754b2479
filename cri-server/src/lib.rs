//! berthd: the CRI gRPC server.
//!
//! Layered top to bottom, each folder using only the ones below it:
//! - [`server`] runs the daemon (socket, signals, systemd, recovery at start);
//! - [`rpc`] has one file per RPC or tight RPC family, routed from
//!   [`rpc::runtime_service`] and [`rpc::image_service`];
//! - [`stream`] serves streaming sessions (exec, attach, port-forward), [`metrics`] the
//!   Prometheus endpoint;
//! - the domain: [`lifecycle`] (exits, shim death, events), [`container`] (a container's
//!   home: create with rollback, start, stop, remove, update), [`pod`] (run with rollback,
//!   stop), [`view`] (CRI views of records), [`nri_hooks`];
//! - [`state`] (`DaemonState`, with the shared parts it holds beside it: event hub, exit
//!   watcher, metrics registry, stream tokens), built from [`stats`] (samples and their
//!   cache), [`store`] (pod and container records) and [`config`].
//!
//! [`error`] is the domain's typed error (its kind comes from the errno, image or pod error
//! and becomes the gRPC code in the one `From<Error> for Status`); [`config`] and [`cli`]
//! make the effective configuration.

pub mod cli;
pub mod config;
pub mod container;
pub mod error;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod nri_hooks;
pub mod nri_plugins;
pub mod nri_runtime;
pub mod pod;
pub mod rpc;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod stream;
pub mod view;
