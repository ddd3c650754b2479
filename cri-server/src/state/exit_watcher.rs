//! The exit watcher's state: an inotify instance watching the directories where shims
//! record running containers' exits (`lifecycle::exits` acts on its events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tracing::warn;

use crate::store::containers::ContainerRecord;

/// How often every Running container is checked even without an inotify event.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Watches the exit records of running containers.
#[derive(Debug)]
pub struct ExitWatcher {
    /// `None` where inotify is unavailable: then only the sweep notices exits.
    pub(crate) inotify: Option<Arc<Inotify>>,
    /// Which container each watch is for.
    watches: Mutex<HashMap<WatchDescriptor, String>>,
}

impl Default for ExitWatcher {
    fn default() -> Self {
        ExitWatcher::new()
    }
}

impl ExitWatcher {
    /// A watcher with its own inotify instance (or none, logged, if the kernel refuses one).
    pub fn new() -> ExitWatcher {
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                warn!(error = %e, interval = ?SWEEP_INTERVAL, "inotify unavailable: container exits are noticed by periodic checks only");
                None
            }
        };
        ExitWatcher {
            inotify,
            watches: Mutex::default(),
        }
    }

    pub(crate) fn watches(&self) -> MutexGuard<'_, HashMap<WatchDescriptor, String>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching for `rec`'s exit record. The caller checks for a record written before
    /// the watch existed (`exits::check`).
    pub fn watch(&self, rec: &ContainerRecord) {
        let (Some(inotify), Some(dir)) = (&self.inotify, rec.status_path.parent()) else {
            return;
        };
        match inotify.add_watch(dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR) {
            Ok(wd) => {
                self.watches().insert(wd, rec.id.clone());
            }
            Err(e) => {
                warn!(container_id = %rec.id, dir = %dir.display(), error = %e, "cannot watch for the container's exit; periodic checks will notice it")
            }
        }
    }

    /// Stops watching container `id` (its exit is recorded).
    pub(crate) fn unwatch(&self, id: &str) {
        let mut watches = self.watches();
        let wds: Vec<WatchDescriptor> = watches
            .iter()
            .filter(|(_, c)| c.as_str() == id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            watches.remove(&wd);
            if let Some(inotify) = &self.inotify {
                // Fails only if the kernel already dropped it (directory removed).
                let _ = inotify.rm_watch(wd);
            }
        }
    }

    /// How many containers are watched.
    pub fn watched(&self) -> usize {
        self.watches().len()
    }
}
