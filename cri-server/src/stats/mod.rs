//! Container and pod statistics: samples read from cgroups, `/proc`, the
//! network namespace and the writable layer, and the cache kept between calls.

pub mod cache;
pub mod cpu;
pub mod fs;
pub mod net;
pub mod proc;
pub mod sample;
