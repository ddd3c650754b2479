//! Noticing containers that exit on their own, as it happens: the shim records each exit by
//! renaming a file into the container's directory (`exit.pb`, see
//! `runtime_core::shim::containers`), and berthd watches those directories with inotify. The
//! exit is then recorded (Running → Exited) and CONTAINER_STOPPED published, exactly once
//! however many observers (this watcher, `ContainerStatus`, `StopContainer`) see it.
//!
//! Safety nets: a sweep every [`SWEEP_INTERVAL`] (and at once when the inotify queue
//! overflows) asks about every Running container, which also catches shims that died without
//! writing a record; and at start-up every Running container is watched and checked.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, Inotify, InotifyEvent};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::state::DaemonState;
use crate::state::exit_watcher::SWEEP_INTERVAL;
use crate::store::containers::ContainerPhase;

/// Records the exit of Running container `id` if its shim has written the exit record.
pub fn check(state: &DaemonState, id: &str) {
    let Some(rec) = state.containers.get(id) else {
        state.exits.unwatch(id);
        return;
    };
    if crate::lifecycle::refresh::recorded(state, rec).phase != ContainerPhase::Running {
        state.exits.unwatch(id);
    }
}

/// Start-up: watches every Running container and brings the records of those that exited
/// while berthd was away (exit record written, or shim gone) in step.
pub async fn recover(state: &DaemonState) {
    let running = state
        .containers
        .filter(|c| c.phase == ContainerPhase::Running);
    for rec in &running {
        state.exits.watch(rec);
    }
    sweep(state).await;
    debug!(
        running = running.len(),
        watched = state.exits.watched(),
        "container exit watches set up"
    );
}

/// Asks about every Running container: its exit record, else its shim; and notices Ready
/// pods whose shim died.
async fn sweep(state: &DaemonState) {
    crate::lifecycle::shim_death::sweep(state).await;
    for rec in state
        .containers
        .filter(|c| c.phase == ContainerPhase::Running)
    {
        let id = rec.id.clone();
        if rec.status_path.exists() {
            check(state, &id);
        } else if crate::lifecycle::refresh::refresh(state, rec).await.phase
            != ContainerPhase::Running
        {
            state.exits.unwatch(&id);
        }
    }
}

/// The inotify descriptor for tokio's readiness polling.
struct InotifyFd(Arc<Inotify>);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Runs until berthd exits: handles exit records as they appear and, concurrently (so a slow
/// shim never delays an exit event), sweeps every [`SWEEP_INTERVAL`] or when asked.
pub async fn run(state: Arc<DaemonState>) {
    let wake = Notify::new();
    tokio::join!(
        watch_records(&state, &wake),
        sweep_periodically(&state, &wake)
    );
}

async fn sweep_periodically(state: &DaemonState, wake: &Notify) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
        }
        sweep(state).await;
    }
}

/// Reacts to inotify events; returns only if inotify is unusable (the sweep then carries on).
async fn watch_records(state: &DaemonState, wake: &Notify) {
    let register = |i: Arc<Inotify>| {
        // SAFETY: the Arc inside keeps the inotify descriptor open for as long as the AsyncFd
        // lives, and `as_raw_fd` always returns that one descriptor.
        unsafe { AsyncFd::register_with_interest(InotifyFd(i), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    };
    let fd = match state.exits.inotify.clone().map(register) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => {
            warn!(error = %e, "poll inotify: container exits are noticed by periodic checks only");
            return;
        }
        None => return,
    };
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "poll inotify failed: container exits are noticed by periodic checks only");
                return;
            }
        };
        let events = read_events(&guard.get_inner().0);
        if events.is_none() {
            guard.clear_ready();
        }
        drop(guard);
        if handle(state, events.unwrap_or_default()) {
            wake.notify_one();
        }
    }
}

/// Pending inotify events, `None` when there are none left (the descriptor would block).
fn read_events(inotify: &Inotify) -> Option<Vec<InotifyEvent>> {
    match inotify.read_events() {
        Ok(events) if !events.is_empty() => Some(events),
        Ok(_) | Err(Errno::EAGAIN) => None,
        Err(e) => {
            warn!(error = %e, "read inotify events");
            None
        }
    }
}

/// Acts on inotify events; true if the queue overflowed and a sweep is needed.
fn handle(state: &DaemonState, events: Vec<InotifyEvent>) -> bool {
    let mut overflow = false;
    for ev in events {
        if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            warn!("inotify queue overflowed: checking every running container");
            overflow = true;
            continue;
        }
        let id = state.exits.watches().get(&ev.wd).cloned();
        if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
            state.exits.watches().remove(&ev.wd);
            continue;
        }
        let Some(id) = id else { continue };
        let is_record = state
            .containers
            .get(&id)
            .is_some_and(|rec| ev.name.as_deref() == rec.status_path.file_name());
        if is_record {
            check(state, &id);
        }
    }
    overflow
}
