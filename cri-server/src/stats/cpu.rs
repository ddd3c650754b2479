//! CPU rates for `usage_nano_cores`: the cgroup only counts cumulative CPU time, so the rate
//! comes from the difference to the previous sample of the same container or pod, kept here
//! (like containerd's per-container stats cache).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The shortest window a rate is computed over. Calls closer to the previous sample (kubelet
/// asking for container and pod stats back to back, or `crictl stats` beside kubelet) reuse
/// the last rate instead of dividing by a few milliseconds.
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Cumulative CPU time of a cgroup and when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// CPU time consumed since the cgroup was created, in nanoseconds.
    pub usage_ns: u64,
    /// When it was read, in nanoseconds since the epoch.
    pub at_ns: i64,
}

/// CPU cores used on average between `prev` and `cur`, in nano-cores (1e9 = one full core);
/// `None` if time did not advance or the counter went backwards (a recreated cgroup).
fn nano_cores(prev: CpuSample, cur: CpuSample) -> Option<u64> {
    let window = u128::try_from(cur.at_ns.checked_sub(prev.at_ns)?).ok()?;
    if window == 0 {
        return None;
    }
    let used = u128::from(cur.usage_ns.checked_sub(prev.usage_ns)?);
    u64::try_from(used * 1_000_000_000 / window).ok()
}

/// The previous sample and last computed rate of each container (or pod).
#[derive(Debug, Default)]
pub struct CpuRates {
    entries: Mutex<HashMap<String, RateEntry>>,
}

#[derive(Debug, Clone, Copy)]
struct RateEntry {
    sample: CpuSample,
    rate: Option<u64>,
}

impl CpuRates {
    /// Records `cur` for `id` and returns its nano-cores over the window since the previous
    /// sample: `None` for the first sample (nothing to compare with, as in cAdvisor).
    pub fn observe(&self, id: &str, cur: CpuSample) -> Option<u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = RateEntry {
            sample: cur,
            rate: None,
        };
        let Some(entry) = entries.get_mut(id) else {
            entries.insert(id.to_string(), fresh);
            return None;
        };
        if cur.usage_ns < entry.sample.usage_ns || cur.at_ns < entry.sample.at_ns {
            *entry = fresh;
            return None;
        }
        let window = u64::try_from(cur.at_ns - entry.sample.at_ns).unwrap_or(0);
        if window < MIN_RATE_WINDOW.as_nanos() as u64 {
            return entry.rate;
        }
        *entry = RateEntry {
            sample: cur,
            rate: nano_cores(entry.sample, cur),
        };
        entry.rate
    }

    /// Forgets every ID for which `keep` is false (removed containers and pods).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|id, _| keep(id));
    }

    /// How many IDs have a previous sample.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn at(usage_ns: u64, at_ns: i64) -> CpuSample {
        CpuSample { usage_ns, at_ns }
    }

    #[test]
    fn one_busy_core_is_a_billion_nano_cores() {
        assert_eq!(
            nano_cores(at(5_000, 10 * SEC), at(5_000 + 2 * SEC as u64, 12 * SEC)),
            Some(1_000_000_000)
        );
        assert_eq!(
            nano_cores(at(0, 0), at(SEC as u64 / 4, SEC)),
            Some(250_000_000)
        );
    }

    #[test]
    fn no_rate_without_elapsed_time_or_with_a_counter_reset() {
        assert_eq!(nano_cores(at(10, SEC), at(20, SEC)), None);
        assert_eq!(nano_cores(at(10, 2 * SEC), at(20, SEC)), None);
        assert_eq!(nano_cores(at(20, SEC), at(10, 2 * SEC)), None);
    }

    #[test]
    fn large_counters_do_not_overflow() {
        let start = u64::MAX / 2;
        let rate = nano_cores(at(start, 0), at(start + 3 * SEC as u64, SEC));
        assert_eq!(rate, Some(3_000_000_000));
    }

    #[test]
    fn first_sample_has_no_rate_and_the_next_one_does() {
        let rates = CpuRates::default();
        assert_eq!(rates.observe("c1", at(0, 0)), None);
        assert_eq!(
            rates.observe("c1", at(SEC as u64 / 2, SEC)),
            Some(500_000_000)
        );
        assert_eq!(rates.observe("c2", at(0, SEC)), None, "per id");
    }

    #[test]
    fn samples_closer_than_the_minimum_window_reuse_the_last_rate() {
        let rates = CpuRates::default();
        rates.observe("c1", at(0, 0));
        assert_eq!(rates.observe("c1", at(SEC as u64, SEC)), Some(SEC as u64));
        // 10 ms later, nearly idle: not a rate over 10 ms, the previous one.
        assert_eq!(
            rates.observe("c1", at(SEC as u64 + 1, SEC + SEC / 100)),
            Some(SEC as u64)
        );
        // The window is measured from the last sample used, 1 s ago.
        assert_eq!(rates.observe("c1", at(SEC as u64, 2 * SEC)), Some(0));
    }

    #[test]
    fn a_counter_reset_starts_over() {
        let rates = CpuRates::default();
        rates.observe("c1", at(5 * SEC as u64, 0));
        assert_eq!(rates.observe("c1", at(1, 2 * SEC)), None);
        assert_eq!(
            rates.observe("c1", at(1 + SEC as u64, 3 * SEC)),
            Some(SEC as u64)
        );
    }

    #[test]
    fn retain_forgets_removed_ids() {
        let rates = CpuRates::default();
        rates.observe("keep", at(0, 0));
        rates.observe("gone", at(0, 0));
        rates.retain(|id| id == "keep");
        assert_eq!(rates.len(), 1);
        assert_eq!(rates.observe("gone", at(SEC as u64, SEC)), None);
    }
}
