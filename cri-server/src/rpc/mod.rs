//! The RPC layer: one file per CRI RPC or tight RPC family, named after it
//! (`sandbox_run`, `container_start`, `exec_sync`, `image_pull`, …), routed from
//! [`runtime_service`] and [`image_service`]. Nothing below this layer calls into it.

pub mod attach;
pub mod container_checkpoint;
pub mod container_create;
pub mod container_events;
pub mod container_list;
pub mod container_remove;
pub mod container_start;
pub mod container_stats;
pub mod container_status;
pub mod container_stop;
pub mod container_update;
pub mod exec;
pub mod exec_sync;
pub mod image_fs_info;
pub mod image_list;
pub mod image_pull;
pub mod image_remove;
pub mod image_service;
pub mod image_status;
pub mod list_streams;
pub mod pod_metrics;
pub mod port_forward;
pub mod runtime_config;
pub mod runtime_service;
pub mod sandbox_list;
pub mod sandbox_remove;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod sandbox_update;
pub mod status;
pub mod version;
