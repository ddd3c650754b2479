//! The scenarios. Each runs the same work on every runtime, interleaved (iteration i goes to
//! the runtimes in an order rotated by i) so that drift on a shared machine hits all of them
//! alike, and returns one [`TargetResult`] per runtime.

pub mod burst;
pub mod churn;
pub mod density;
pub mod exec;
pub mod pod_start;
pub mod pull;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::TargetResult;
use crate::target::Target;
use crate::workload::Workload;

/// Everything a scenario runs against.
#[derive(Debug)]
pub struct Bench {
    pub targets: Vec<Target>,
    pub workload: Workload,
    /// Where process memory is read (normally `/proc`).
    pub proc_root: PathBuf,
    /// Pause after each timed operation, so that background work it triggered (a runtime's
    /// asynchronous cleanup, garbage collection) does not land in the next one's timing,
    /// which may be another runtime's.
    pub gap: Duration,
}

impl Bench {
    /// An empty result per runtime, named.
    pub fn results(&self) -> Vec<TargetResult> {
        self.targets
            .iter()
            .map(|t| TargetResult {
                name: t.name.clone(),
                endpoint: t.endpoint.display().to_string(),
                runtime: t.runtime.clone(),
                ..Default::default()
            })
            .collect()
    }

    /// Waits out [`Bench::gap`].
    pub async fn pause(&self) {
        if !self.gap.is_zero() {
            tokio::time::sleep(self.gap).await;
        }
    }

    /// Pulls the workload image on every runtime that lacks it (before any timing).
    pub async fn prepull(&self, extra: &[String]) -> Result<(), String> {
        for t in &self.targets {
            for image in std::iter::once(&self.workload.image).chain(extra) {
                t.ensure_image(image)
                    .await
                    .map_err(|e| format!("{}: pre-pull: {e}", t.name))?;
            }
        }
        Ok(())
    }
}

/// A progress bar on stderr for `len` steps, drawn only when stderr is a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}
