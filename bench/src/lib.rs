//! berth-bench: drives any CRI runtime over its gRPC unix socket and measures what operators
//! choose a runtime on: pod start latency, memory per pod, churn throughput, exec latency and
//! pull time, optionally side by side with a second runtime in the same invocation.
//!
//! The binary (`src/main.rs`) is a thin CLI over [`scenario`]; [`stats`] and [`memory`] hold
//! the arithmetic and the /proc accounting, unit-tested on synthetic data.

pub mod memory;
pub mod plot;
pub mod push;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod steps;
pub mod target;
pub mod workload;
