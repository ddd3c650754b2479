//! Support shared by runtime-core's root tests.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests of one binary that must not overlap (they fork or share host state).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// True if a root test can run; prints why not otherwise, and never skips under CI.
pub fn runnable(suite: &str, test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must run the {suite} tests as root"
    );
    eprintln!("skipped {test}: needs root");
    false
}

/// A cgroup name no other test (in this or another process) uses: `berth-test-<pid>-<n>-<ns>`.
pub fn unique_cgroup_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("berth-test-{}-{n}-{nanos}", std::process::id())
}
