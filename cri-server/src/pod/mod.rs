//! A pod's berthd side above `podsandbox` (which owns its host side, with rollback): running
//! it (`run.rs`: name reservation, record, NRI, with rollback), the spec made from its CRI
//! config, and stopping it.

pub mod run;
pub mod spec;
pub mod stop;
