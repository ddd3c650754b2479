//! The container lifecycle: keeping a record in step with its process (`record`: find,
//! refresh, finish, mark exited), noticing exits (`exits`), shims that died (`shim_death`)
//! and publishing lifecycle events (`events`, through `state::event_hub`).

pub mod events;
pub mod exits;
pub mod record;
pub mod refresh;
pub mod shim_death;
