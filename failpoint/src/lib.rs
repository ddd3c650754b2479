//! Crash points for fault-injection tests.
//!
//! `failpoint::hit("run_pod.after_shim")` marks a place where a crash would leave the host in
//! an interesting state. Built with the `enabled` feature (only the e2e test build turns it
//! on) and started with `BERTH_FAILPOINT=run_pod.after_shim`, the process sends itself
//! SIGKILL there — exactly what `kill -9` at that moment would do. Without the feature, `hit`
//! is an empty inline function: production builds carry no trace of it.

/// The environment variable naming the point to crash at.
pub const ENV: &str = "BERTH_FAILPOINT";

/// Crashes the process (SIGKILL) if `name` is the armed failpoint.
#[cfg(feature = "enabled")]
pub fn hit(name: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: killing the process (SIGKILL)");
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Does nothing: failpoints are compiled out.
#[cfg(not(feature = "enabled"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Whether this build can crash at failpoints.
pub const ENABLED: bool = cfg!(feature = "enabled");
