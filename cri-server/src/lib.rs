//! berthd: the CRI gRPC server.
//!
//! One module per RPC or tight RPC family (`version`, `status`, `runtime_config`, …), routed
//! from [`runtime_service`] and [`image_service`]; [`errors`] is the one place internal errors
//! become gRPC statuses. [`config`] and [`cli`] make the effective configuration, [`socket`]
//! claims the CRI socket and [`server`] runs the daemon.

pub mod attach;
pub mod cli;
pub mod config;
pub mod container_checkpoint;
pub mod container_create;
pub mod container_events;
pub mod container_exits;
pub mod container_list;
pub mod container_mounts;
pub mod container_remove;
pub mod container_spec;
pub mod container_start;
pub mod container_stats;
pub mod container_status;
pub mod container_stop;
pub mod container_store;
pub mod container_update;
pub mod errors;
pub mod events;
pub mod exec;
pub mod exec_process;
pub mod exec_sync;
pub mod image_fs_info;
pub mod image_list;
pub mod image_pull;
pub mod image_remove;
pub mod image_service;
pub mod image_status;
pub mod list_streams;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod metrics_grpc;
pub mod metrics_http;
pub mod pod_metrics;
pub mod pod_store;
pub mod port_forward;
pub mod pty;
pub mod record_store;
pub mod recovery;
pub mod runtime_config;
pub mod runtime_features;
pub mod runtime_service;
pub mod sandbox_list;
pub mod sandbox_remove;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod sandbox_update;
pub mod server;
pub mod shim_death;
pub mod shim_frames;
pub mod socket;
pub mod state;
pub mod stats_cache;
pub mod stats_cpu;
pub mod stats_fs;
pub mod stats_net;
pub mod stats_proc;
pub mod stats_sample;
pub mod status;
pub mod stop_signal;
pub mod stream_attach;
pub mod stream_exec;
pub mod stream_port_forward;
pub mod stream_server;
pub mod stream_tokens;
pub mod userns;
pub mod version;
