//! Prometheus metrics: the registry, the gRPC call counter and the `/metrics`
//! endpoint.

pub mod grpc;
pub mod http;
pub mod registry;
