//! Records and their stores: the on-disk pod and container records
//! (`<root_dir>/pods/<id>/pod.json`, `<root_dir>/containers/<id>/container.json`).

pub mod containers;
pub mod filter;
pub mod ids;
pub mod kubelet;
pub mod pods;
pub mod records;
