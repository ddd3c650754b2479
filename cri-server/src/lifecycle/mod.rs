//! The container lifecycle: keeping a record in step with its process (`record`: find,
//! refresh, finish, mark exited), noticing exits (`exits`), shims that died (`shim_death`)
//! and publishing lifecycle events (`events`, through the `event_hub`).

pub mod event_hub;
pub mod events;
pub mod exits;
pub mod record;
pub mod refresh;
pub mod shim_death;
pub mod watcher;
