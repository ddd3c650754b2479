//! A container's home: create (with rollback), start, stop, remove and live updates of its
//! host side, with its process spec, mounts, user namespace, checkpoint restore and exec
//! processes, and what each runtime handler supports. The RPC files in `rpc/` only check
//! and convert the CRI request and call in here.

pub mod cgroup;
pub mod create;
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
