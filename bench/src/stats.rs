//! Latency statistics: nearest-rank percentiles over a run's samples, so p50/p95/p99/max are
//! always values that were actually measured.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Summary of one step's latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarizes `samples` (milliseconds, any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The nearest-rank `p`th percentile (0 < p ≤ 100) of ascending `sorted`: the smallest sample
/// with at least p% of the samples at or below it. `sorted` must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Points of the empirical CDF of `samples`: (value, fraction of samples ≤ value), ascending.
pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred_are_the_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.min),
            (50.0, 95.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(s.count, 100);
        assert!((s.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_ignore_input_order() {
        let s = Summary::of(&[30.0, 10.0, 20.0, 40.0]).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (20.0, 40.0, 40.0));
    }

    #[test]
    fn nearest_rank_picks_a_measured_sample() {
        // 10 samples: p95 is the 10th (ceil(9.5)), p50 the 5th.
        let v: Vec<f64> = (1..=10).map(|i| f64::from(i) * 1.5).collect();
        assert_eq!(percentile(&v, 50.0), 7.5);
        assert_eq!(percentile(&v, 95.0), 15.0);
        assert_eq!(percentile(&v, 90.0), 13.5);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.min),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn no_samples_means_no_summary() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn cdf_climbs_to_one() {
        let c = cdf(&[3.0, 1.0, 2.0, 4.0]);
        assert_eq!(c, vec![(1.0, 0.25), (2.0, 0.5), (3.0, 0.75), (4.0, 1.0)]);
    }
}
