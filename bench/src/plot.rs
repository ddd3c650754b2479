//! `plot`: the pod-start latency distribution of every runtime in a saved report, as the
//! empirical CDF of the total (RunPodSandbox + CreateContainer + StartContainer) on a log
//! time axis, written as a PNG. The font is bundled (no system font lookup).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::Report;
use crate::stats::{Summary, cdf};

/// The step plotted.
const STEP: &str = "total";

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Renders `report` (a pod-start report) to `out` (PNG, width × height pixels).
pub fn pod_start_cdf(report: &Report, out: &Path, size: (u32, u32)) -> Result<(), String> {
    register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    )
    .map_err(|_| "the bundled font does not load".to_string())?;
    let series: Vec<Series> = report
        .targets
        .iter()
        .filter_map(|t| {
            let samples = t.samples.get(STEP)?;
            let s = Summary::of(samples)?;
            Some((t.name.clone(), cdf(samples), s))
        })
        .collect();
    if series.is_empty() {
        return Err(format!(
            "the report has no `{STEP}` samples (is it a pod-start report?)"
        ));
    }
    let lo = series.iter().map(|s| s.2.min).fold(f64::INFINITY, f64::min);
    let hi = series.iter().map(|s| s.2.max).fold(0.0, f64::max);
    let (x0, x1) = (decade_below(lo), decade_above(hi));
    let root = BitMapBackend::new(out, size).into_drawing_area();
    draw(&root, &series, (x0, x1)).map_err(|e| format!("draw {}: {e}", out.display()))?;
    root.present()
        .map_err(|e| format!("write {}: {e}", out.display()))
}

/// One runtime's curve: name, CDF points, summary.
type Series = (String, Vec<(f64, f64)>, Summary);

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    (x0, x1): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let pods = series.iter().map(|s| s.2.count).max().unwrap_or(0);
    let title =
        format!("Pod start: RunPodSandbox + CreateContainer + StartContainer ({pods} pods each)");
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of pods started within")
        .x_label_formatter(&|v| format!("{v}"))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, (name, points, s)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // A step function: each sample raises the curve.
        let mut steps = Vec::with_capacity(points.len() * 2);
        let mut prev = 0.0;
        for &(x, y) in points {
            steps.push((x, prev));
            steps.push((x, y));
            prev = y;
        }
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
            .label(format!("{name}: p50 {:.1} ms, p95 {:.1} ms", s.p50, s.p95))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(std::iter::once(Circle::new(
            (s.p50, 0.5),
            5,
            color.filled(),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The power of ten at or below `v` (at least 0.1).
fn decade_below(v: f64) -> f64 {
    10f64.powf(v.max(0.1).log10().floor())
}

/// The power of ten at or above `v`.
fn decade_above(v: f64) -> f64 {
    10f64
        .powf(v.max(0.1).log10().ceil())
        .max(decade_below(v) * 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TargetResult;
    use std::collections::BTreeMap;

    #[test]
    fn axis_spans_whole_decades() {
        assert_eq!(decade_below(23.0), 10.0);
        assert_eq!(decade_above(280.0), 1000.0);
        assert_eq!(decade_above(100.0), 1000.0);
    }

    #[test]
    fn renders_a_png_of_two_runtimes() {
        let target = |name: &str, base: f64| {
            let mut t = TargetResult {
                name: name.into(),
                ..Default::default()
            };
            for i in 0..50 {
                t.sample(STEP, base + f64::from(i));
            }
            t
        };
        let report = Report {
            scenario: "pod-start".into(),
            started_unix: 0,
            params: BTreeMap::new(),
            targets: vec![target("berth", 20.0), target("containerd", 250.0)],
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cdf.png");
        pod_start_cdf(&report, &out, (800, 500)).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn a_report_without_totals_is_refused() {
        let report = Report {
            scenario: "exec".into(),
            started_unix: 0,
            params: BTreeMap::new(),
            targets: vec![TargetResult::default()],
        };
        let dir = tempfile::tempdir().unwrap();
        assert!(pod_start_cdf(&report, &dir.path().join("x.png"), (100, 100)).is_err());
    }
}
