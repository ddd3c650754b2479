//! Views: the CRI messages that describe berth's records (`ContainerStatus`,
//! `PodSandboxStatus`, `Image`), shared by the RPCs, events and NRI.

pub mod container;
pub mod image;
pub mod pod;
