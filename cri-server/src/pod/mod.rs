//! A pod's berthd side above `podsandbox` (which owns its host side): the spec made from its
//! CRI config and stopping it.

pub mod spec;
pub mod stop;
