//! Prometheus metrics: the gRPC call counter and the `/metrics` endpoint (the registry they
//! update is `state::metrics_registry`, held by `DaemonState`).

pub mod grpc;
pub mod http;
