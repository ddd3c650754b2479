//! `push-test-images`: fills a registry storage directory with the images the benchmark uses,
//! through a temporary `docker-registry` on that storage (the caller then serves it with its
//! own registry process):
//! - `berth-test/busybox:{oci,docker,latest,...}`: the e2e suite's busybox images;
//! - `berth-bench/pause:latest`: a static pause binary as `/pause`, a sandbox image for
//!   runtimes that need one (containerd's `sandbox_image`);
//! - `berth-bench/pull:latest`: synthetic layers of many small files for the *pull* scenario,
//!   sharing no layer with anything else.

use std::path::Path;

use e2e::images::{
    Compression, ImageBuilder, Layer, LayerBuilder, ManifestFormat, Platform, add_host_file,
    push_manifest, push_test_images, testprogs_dir,
};
use e2e::registry::{Registry, RegistryOptions};

/// Size of the synthetic pull image.
#[derive(Debug, Clone, Copy)]
pub struct PullImageSize {
    pub layers: usize,
    pub files_per_layer: usize,
}

/// Pushes every image into `storage`; returns their `repository:tag` names.
pub async fn push_all(storage: &Path, size: PullImageSize) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(storage).map_err(|e| format!("create {}: {e}", storage.display()))?;
    let registry = Registry::start_with(&RegistryOptions {
        storage: Some(storage.to_path_buf()),
        ..Default::default()
    })
    .map_err(|e| format!("start a registry on {}: {e}", storage.display()))?;
    let mut names = Vec::new();
    let images = push_test_images(&registry)
        .await
        .map_err(|e| format!("push the busybox test images: {e}"))?;
    for image in images.iter() {
        names.push(format!("{}:{}", image.repository, image.tag));
    }
    let pause = LayerBuilder::new();
    let mut pause = pause;
    add_host_file(&mut pause, &testprogs_dir().join("pause"), "/pause")
        .map_err(|e| format!("pause layer: {e}"))?;
    let pause = pause
        .build(Compression::Gzip)
        .map_err(|e| format!("pause layer: {e}"))?;
    let image = ImageBuilder::new(Platform::linux_amd64())
        .layer(pause)
        .entrypoint(&["/pause"])
        .cmd(&[]);
    names.push(push_tagged(&registry, image, "berth-bench/pause").await?);
    let layers = tokio::task::spawn_blocking(move || synthetic_layers(size))
        .await
        .map_err(|e| format!("build pull layers: {e}"))??;
    let image = layers.into_iter().fold(
        ImageBuilder::new(Platform::linux_amd64()),
        ImageBuilder::layer,
    );
    names.push(push_tagged(&registry, image, "berth-bench/pull").await?);
    Ok(names)
}

async fn push_tagged(
    registry: &Registry,
    image: ImageBuilder,
    repo: &str,
) -> Result<String, String> {
    let pushed = image
        .push(registry, repo, ManifestFormat::Oci)
        .await
        .map_err(|e| format!("push {repo}: {e}"))?;
    push_manifest(
        registry,
        repo,
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .map_err(|e| format!("tag {repo}:latest: {e}"))?;
    Ok(format!("{repo}:latest"))
}

/// Layers of files sized like a distro image's (mostly 1.5 KB, some 8 and 40 KB, 1% 400 KB),
/// partly compressible.
fn synthetic_layers(size: PullImageSize) -> Result<Vec<Layer>, String> {
    (0..size.layers)
        .map(|l| {
            let mut b = LayerBuilder::new();
            for i in 0..size.files_per_layer {
                let len = match i % 100 {
                    0 => 400_000,
                    1..=9 => 40_000,
                    10..=39 => 8_000,
                    _ => 1_500,
                };
                let path = format!("/usr/share/bench{l}/d{:02}/f{i}", i % 50);
                b.file(&path, file_bytes((l * 1_000_003 + i) as u64, len), 0o644);
            }
            b.build(Compression::Gzip)
                .map_err(|e| format!("build pull layer {l}: {e}"))
        })
        .collect()
}

/// Deterministic bytes: xorshift words mixed with a repeated phrase.
fn file_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 64);
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
