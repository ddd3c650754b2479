//! A container's home: the host side of create/start/stop/remove and updates, with its
//! process spec, mounts, user namespace and exec processes, and what each
//! runtime handler supports.

pub mod exec_process;
pub mod handler;
pub mod mounts;
pub mod remove;
pub mod restore;
pub mod runtime_features;
pub mod spec;
pub mod start;
pub mod stop;
pub mod update;
pub mod userns;
