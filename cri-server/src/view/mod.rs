//! Views: the CRI messages that describe berth's records (`ContainerStatus`,
//! `PodSandboxStatus`, `Image`), shared by the RPCs, events and NRI, and the stop signals
//! (CRI enum to and from numbers).

pub mod container;
pub mod image;
pub mod pod;
pub mod stop_signal;
