//! Step timings: how long each part of an operation (starting a container, a pod) took, for
//! berthd's `berth_operation_step_duration_seconds` histograms and its debug log.
//!
//! [`StepClock`] measures one process's steps. A container's own set-up happens in a forked
//! child that must not allocate or talk to anyone before it execs, so it writes the time of
//! each of its [`ChildStep`]s into a page shared with the shim ([`ChildMarks`]); the shim reads
//! them after the exec. Both sides read `CLOCK_MONOTONIC`, which parent and child share (and
//! which is a vDSO call: marking costs no system call).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use proto::shim::StepTime;

/// Nanoseconds on the monotonic clock (0 if it cannot be read, which marks as "no time").
fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// The steps of one operation in order, each the time since the previous mark.
#[derive(Debug)]
pub struct StepClock {
    last: u64,
    steps: Vec<StepTime>,
}

impl StepClock {
    /// Starts timing now.
    pub fn start() -> StepClock {
        StepClock {
            last: now_ns(),
            steps: Vec::new(),
        }
    }

    /// Ends step `name` now.
    pub fn mark(&mut self, name: &str) {
        self.mark_at(name, now_ns());
    }

    fn mark_at(&mut self, name: &str, at: u64) {
        let micros = at.saturating_sub(self.last) / 1000;
        self.last = at.max(self.last);
        self.steps.push(StepTime {
            name: name.to_string(),
            micros,
        });
    }

    /// Adds steps measured elsewhere (the shim's), each named `<prefix><name>`, without
    /// moving this clock's last mark.
    pub fn extend(&mut self, prefix: &str, steps: &[StepTime]) {
        self.steps.extend(steps.iter().map(|s| StepTime {
            name: format!("{prefix}{}", s.name),
            micros: s.micros,
        }));
    }

    /// The steps so far.
    pub fn steps(&self) -> &[StepTime] {
        &self.steps
    }

    /// Takes the steps.
    pub fn into_steps(self) -> Vec<StepTime> {
        self.steps
    }
}

/// The marks a container's set-up child makes, in the order it makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ChildStep {
    /// Dumpable flag, AppArmor, the cgroup, signals, stdio, inherited fds, session.
    Prepare,
    /// Joining the pod's namespaces, OOM score, rlimits.
    Namespaces,
    /// The rootfs's own mount namespace and its bind onto itself.
    Isolate,
    /// /proc, /sys, /dev and the cgroup filesystem.
    SystemMounts,
    /// The CRI mounts (volumes, /etc/hosts …), masked and read-only paths.
    CriMounts,
    /// `pivot_root` (and a read-only root).
    PivotRoot,
    /// User namespace, seccomp, capabilities, user and groups, cwd: everything before
    /// `execve`.
    Credentials,
}

impl ChildStep {
    const ALL: [ChildStep; 7] = [
        ChildStep::Prepare,
        ChildStep::Namespaces,
        ChildStep::Isolate,
        ChildStep::SystemMounts,
        ChildStep::CriMounts,
        ChildStep::PivotRoot,
        ChildStep::Credentials,
    ];

    /// The step's name in timings.
    pub fn name(self) -> &'static str {
        match self {
            ChildStep::Prepare => "child_prepare",
            ChildStep::Namespaces => "child_namespaces",
            ChildStep::Isolate => "child_isolate",
            ChildStep::SystemMounts => "child_system_mounts",
            ChildStep::CriMounts => "child_cri_mounts",
            ChildStep::PivotRoot => "child_pivot_root",
            ChildStep::Credentials => "child_credentials",
        }
    }
}

const SLOTS: usize = ChildStep::ALL.len();

/// A page shared with a forked child, where it writes when it finished each [`ChildStep`].
/// Without the page (mmap failed, or not wanted) marking does nothing: timings are never a
/// reason to fail a start.
#[derive(Debug)]
pub struct ChildMarks {
    page: Option<NonNull<AtomicU64>>,
}

impl ChildMarks {
    /// Marks that go nowhere.
    pub fn none() -> ChildMarks {
        ChildMarks { page: None }
    }

    /// A shared anonymous page for the marks of the next child forked.
    pub fn shared() -> ChildMarks {
        let len = std::num::NonZeroUsize::new(SLOTS * size_of::<AtomicU64>());
        let Some(len) = len else {
            return ChildMarks::none();
        };
        // SAFETY: a new anonymous mapping, aliasing nothing; unmapped in Drop.
        let page = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        };
        ChildMarks {
            // Zero-filled by the kernel: no slot is marked.
            page: page.ok().map(|p| p.cast::<AtomicU64>()),
        }
    }

    fn slot(&self, step: ChildStep) -> Option<&AtomicU64> {
        // SAFETY: the page holds SLOTS zero-initialised (valid) AtomicU64s and lives as long as
        // self; every ChildStep is below SLOTS.
        self.page
            .map(|p| unsafe { &*p.as_ptr().add(step as usize) })
    }

    /// In the child: `step` is done now. Async-signal-safe (a vDSO clock read and a store).
    pub fn mark(&self, step: ChildStep) {
        if let Some(slot) = self.slot(step) {
            slot.store(now_ns(), Ordering::Relaxed);
        }
    }

    /// In the parent, once the child exec'd: adds the child's steps to `clock` in order (a
    /// step the child did not mark is folded into the next), then `exec` up to now.
    pub fn collect(&self, clock: &mut StepClock) {
        for step in ChildStep::ALL {
            match self.slot(step).map(|s| s.load(Ordering::Relaxed)) {
                Some(at) if at != 0 => clock.mark_at(step.name(), at),
                _ => {}
            }
        }
        clock.mark("child_exec");
    }
}

impl Drop for ChildMarks {
    fn drop(&mut self) {
        if let Some(page) = self.page.take() {
            // SAFETY: mapped by `shared` with this length; no reference into it outlives self.
            let _ = unsafe { nix::sys::mman::munmap(page.cast(), SLOTS * size_of::<AtomicU64>()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_times_since_the_previous_mark() {
        let mut clock = StepClock::start();
        let t0 = clock.last;
        clock.mark_at("a", t0 + 5_000);
        clock.mark_at("b", t0 + 12_000);
        // A mark from before the last one (another process's clock read) counts as zero.
        clock.mark_at("c", t0 + 1_000);
        let got: Vec<(&str, u64)> = clock
            .steps()
            .iter()
            .map(|s| (s.name.as_str(), s.micros))
            .collect();
        assert_eq!(got, [("a", 5), ("b", 7), ("c", 0)]);
    }

    #[test]
    fn extend_prefixes_names_and_keeps_the_clock() {
        let mut clock = StepClock::start();
        let inner = [StepTime {
            name: "fork".into(),
            micros: 40,
        }];
        clock.extend("shim_", &inner);
        assert_eq!(clock.steps()[0].name, "shim_fork");
        assert_eq!(clock.steps()[0].micros, 40);
    }

    #[test]
    fn a_forked_childs_marks_reach_the_parent() {
        let marks = ChildMarks::shared();
        assert!(marks.page.is_some(), "mmap of a shared page");
        let mut clock = StepClock::start();
        // SAFETY: the child only reads the clock, stores to the shared page and _exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                marks.mark(ChildStep::Prepare);
                marks.mark(ChildStep::PivotRoot);
                // SAFETY: ends the child without running the test harness's destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("wait");
            }
        }
        marks.collect(&mut clock);
        let names: Vec<&str> = clock.steps().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["child_prepare", "child_pivot_root", "child_exec"]);
    }

    #[test]
    fn without_a_page_marks_do_nothing() {
        let marks = ChildMarks::none();
        marks.mark(ChildStep::Prepare);
        let mut clock = StepClock::start();
        marks.collect(&mut clock);
        assert_eq!(clock.steps().len(), 1);
    }
}
