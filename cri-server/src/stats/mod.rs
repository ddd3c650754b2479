//! Container and pod statistics: samples read from cgroups, `/proc`, the
//! network namespace and the writable layer, the cache kept between calls, which records a
//! call samples, and the CRI view of the samples: stats (`cri`) and cAdvisor-named metrics
//! (`cadvisor`).

pub mod cache;
pub mod cadvisor;
pub mod cpu;
pub mod cri;
pub mod fs;
pub mod net;
pub mod proc;
pub mod sample;
pub mod select;
