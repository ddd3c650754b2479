//! *pull*: PullImage of an image none of whose layers the runtime has, timed; the image is
//! removed (untimed) before every pull. Use an image that shares no layer with anything else
//! on the runtimes (`berth-bench push-test-images` pushes one), so every pull downloads and
//! unpacks every layer.

use std::time::Instant;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
use crate::workload::interleave;

/// Pulls `image` `runs` times on every runtime.
pub async fn run(b: &Bench, image: &str, runs: usize) -> Result<Vec<TargetResult>, String> {
    let mut results = b.results();
    for t in &b.targets {
        if !t.has_image(image).await? {
            // Not there before: this run's to remove at the end.
            t.note_pulled(image);
        }
    }
    let bar = progress((runs * b.targets.len()) as u64, "pull");
    for i in 0..runs {
        for t in interleave(i, b.targets.len()) {
            let target = &b.targets[t];
            bar.set_message(target.name.clone());
            let r = &mut results[t];
            let removed = match target.has_image(image).await {
                Ok(true) => target.remove_image(image).await,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                r.error(format!("run {i}: {e}"));
                continue;
            }
            // Earlier writes are flushed first so no pull pays for another's writeback.
            nix::unistd::sync();
            let t0 = Instant::now();
            match target.pull(image).await {
                Ok(()) => r.sample("PullImage", ms(t0.elapsed())),
                Err(e) => r.error(format!("run {i}: {e}")),
            }
            bar.inc(1);
            b.pause().await;
        }
    }
    bar.finish_and_clear();
    for r in &mut results {
        r.latency("PullImage");
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}
