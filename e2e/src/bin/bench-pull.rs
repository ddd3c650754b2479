//! Pull benchmark: berth's PullImage (download + verify + unpack into snapshots) of a
//! multi-layer image from a loopback registry into an empty store, against the reference of
//! the same layers extracted with `gzip -dc | tar -x`, all layers in parallel, onto the same
//! filesystem, in the same run.
//!
//! Usage: `bench-pull [--dir DIR] [--layers N] [--files-per-layer N] [--runs N] [--parallel-layers N]`
//! (DIR defaults to /var/tmp; it decides the filesystem both sides write to).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::{
    Compression, ImageBuilder, Layer, LayerBuilder, ManifestFormat, Platform, push_manifest,
};
use e2e::registry::Registry;
use proto::cri::{ImageSpec, PullImageRequest, RemoveImageRequest};

struct Args {
    dir: PathBuf,
    layers: usize,
    files_per_layer: usize,
    runs: usize,
    /// berthd's `registry.max_concurrent_downloads` (default: its own default).
    parallel_layers: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: PathBuf::from("/var/tmp"),
        layers: 6,
        files_per_layer: 6500,
        runs: 3,
        parallel_layers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--layers" => args.layers = value()?.parse().map_err(|e| format!("--layers: {e}"))?,
            "--files-per-layer" => {
                args.files_per_layer = value()?
                    .parse()
                    .map_err(|e| format!("--files-per-layer: {e}"))?
            }
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--parallel-layers" => {
                args.parallel_layers = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--parallel-layers: {e}"))?,
                )
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// Deterministic, partly compressible file contents (like real binaries and text).
fn file_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            out.extend_from_slice(b"the quick brown fox jumps over the lazy dog ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Sizes skewed like a distro image: mostly small files, a few large ones.
fn file_size(i: usize) -> usize {
    match i % 100 {
        0 => 400_000,
        1..=9 => 40_000,
        10..=39 => 8_000,
        _ => 1_500,
    }
}

fn build_layers(layers: usize, files_per_layer: usize) -> std::io::Result<Vec<Layer>> {
    (0..layers)
        .map(|l| {
            let mut b = LayerBuilder::new();
            for i in 0..files_per_layer {
                let path = format!("usr/share/layer{l}/d{:03}/f{i}", i % 200);
                b.file(
                    &path,
                    file_bytes((l * 1_000_003 + i) as u64, file_size(i)),
                    0o644,
                );
            }
            b.build(Compression::Gzip)
        })
        .collect()
}

fn tar_reference(blobs: &[PathBuf], out: &Path) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut children = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let dest = out.join(format!("layer{i}"));
        std::fs::create_dir_all(&dest)?;
        children.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "gzip -dc '{}' | tar -x -C '{}'",
                    blob.display(),
                    dest.display()
                ))
                .spawn()?,
        );
    }
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "gzip | tar failed: {status}"
            )));
        }
    }
    // Same durability as berth's commit (which fsyncs only metadata): none forced for data.
    Ok(started.elapsed())
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.dir)?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-pull-")
        .tempdir_in(&args.dir)?;
    eprintln!(
        "building {} layers x {} files ...",
        args.layers, args.files_per_layer
    );
    let (n_layers, n_files) = (args.layers, args.files_per_layer);
    let layers = tokio::task::spawn_blocking(move || build_layers(n_layers, n_files)).await??;
    let compressed: u64 = layers.iter().map(|l| l.size()).sum();
    let files = args.layers * args.files_per_layer;

    let registry = Registry::start()?;
    let image = layers
        .iter()
        .cloned()
        .fold(ImageBuilder::new(Platform::linux_amd64()), |b, l| {
            b.layer(l)
        });
    let pushed = image
        .push(&registry, "bench/pull", ManifestFormat::Oci)
        .await?;
    push_manifest(
        &registry,
        "bench/pull",
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await?;
    let reference = format!("{}/bench/pull:latest", registry.host());

    let blobs_dir = work.path().join("blobs");
    std::fs::create_dir_all(&blobs_dir)?;
    let mut blob_paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = blobs_dir.join(format!("layer{i}.tar.gz"));
        std::fs::write(&p, &l.blob)?;
        blob_paths.push(p);
    }

    let berthd = Berthd::start_with(BerthdOptions {
        config_toml: Some(format!(
            "[registry]\ninsecure = [\"{}\"]\n{}",
            registry.host(),
            args.parallel_layers
                .map(|n| format!("max_concurrent_downloads = {n}\n"))
                .unwrap_or_default()
        )),
        args: vec!["--log-level".into(), "warn".into()],
        root_dir: Some(work.path().join("berth-root")),
        ..Default::default()
    })
    .await?;
    let mut client = berthd.images().await?;
    let spec = |s: &str| {
        Some(ImageSpec {
            image: s.into(),
            ..Default::default()
        })
    };

    let (mut tar_times, mut berth_times) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        // Alternate which side goes first, so writeback left by one side is not always
        // charged to the other.
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            sync();
            if side == 0 {
                let out = work.path().join(format!("tar-{run}"));
                tar_times.push(tar_reference(&blob_paths, &out)?);
                std::fs::remove_dir_all(&out)?;
                continue;
            }
            let started = Instant::now();
            client
                .pull_image(PullImageRequest {
                    image: spec(&reference),
                    auth: None,
                    sandbox_config: None,
                })
                .await?;
            berth_times.push(started.elapsed());
            client
                .remove_image(RemoveImageRequest {
                    image: spec(&reference),
                })
                .await?;
        }
        eprintln!(
            "run {run}: tar {:.2}s  berth {:.2}s",
            tar_times[run].as_secs_f64(),
            berth_times[run].as_secs_f64()
        );
    }
    let (tar, berth) = (median(tar_times), median(berth_times));
    let mb = compressed as f64 / 1e6;
    println!(
        "pull benchmark: {} layers, {files} files, {mb:.1} MB compressed, filesystem of {}",
        args.layers,
        args.dir.display()
    );
    println!("| what | median s | MB/s (compressed) |");
    println!("|---|---|---|");
    println!(
        "| parallel gzip -dc \\| tar -x | {:.2} | {:.1} |",
        tar.as_secs_f64(),
        mb / tar.as_secs_f64()
    );
    println!(
        "| berth PullImage (empty store) | {:.2} | {:.1} |",
        berth.as_secs_f64(),
        mb / berth.as_secs_f64()
    );
    println!(
        "ratio berth / tar: {:.2}x (target <= 1.10x)",
        berth.as_secs_f64() / tar.as_secs_f64()
    );
    Ok(())
}
