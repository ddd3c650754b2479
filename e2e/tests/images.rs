//! ImageService end to end: a real berthd pulling from a real registry on loopback.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::{
    Compression, ImageBuilder, LayerBuilder, ManifestFormat, Platform, TestImages, push_manifest,
    push_test_images,
};
use e2e::registry::{Registry, RegistryOptions};
use nix::sys::signal::Signal;
use proto::cri::{
    self, AuthConfig, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn insecure_config(registries: &[&Registry]) -> String {
    let hosts: Vec<String> = registries
        .iter()
        .map(|r| format!("\"{}\"", r.host()))
        .collect();
    format!("[registry]\ninsecure = [{}]\n", hosts.join(", "))
}

async fn berthd_for(registries: &[&Registry], extra: &str) -> Berthd {
    Berthd::start_with(BerthdOptions {
        config_toml: Some(format!("{}{extra}", insecure_config(registries))),
        ..Default::default()
    })
    .await
    .expect("start berthd")
}

async fn registry_with_images() -> (Registry, TestImages) {
    let registry = Registry::start().expect("start registry");
    let images = push_test_images(&registry).await.expect("push test images");
    (registry, images)
}

async fn pull(d: &Berthd, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    let mut client = d.images().await.expect("image client");
    client
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(d: &Berthd, image: &str) -> Option<cri::Image> {
    let mut client = d.images().await.expect("image client");
    client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
}

fn snapshot_dirs(d: &Berthd) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(d.root_dir.join("snapshots"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The snapshot whose diff holds `rel` (e.g. `bin/busybox`).
fn find_in_snapshots(d: &Berthd, rel: &str) -> Option<std::path::PathBuf> {
    snapshot_dirs(d)
        .into_iter()
        .map(|s| s.join("fs").join(rel))
        .find(|p| p.symlink_metadata().is_ok())
}

#[tokio::test]
async fn pulls_every_test_image_shape_and_reports_it() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    for tag in ["oci", "docker", "multi-oci", "multi-docker"] {
        let image = images.get(tag).expect("test image");
        let id = pull(&d, &image.reference, None)
            .await
            .unwrap_or_else(|e| panic!("pull {tag}: {e}"));
        assert_eq!(
            id, image.config_digest,
            "{tag}: image ref is the config digest"
        );
        let st = status(&d, &image.reference).await.expect("image present");
        assert_eq!(st.id, image.config_digest);
        assert!(
            st.repo_tags.contains(&image.reference),
            "{tag}: {:?}",
            st.repo_tags
        );
        let repo_digest = format!(
            "{}/{}@{}",
            registry.host(),
            image.repository,
            image.manifest_digest
        );
        assert!(
            st.repo_digests.contains(&repo_digest),
            "{tag}: {:?}",
            st.repo_digests
        );
        assert!(st.size > 0);
    }
    // The layers unpacked in overlay form: busybox present, whiteouts as 0/0 char devices,
    // the opaque dir marked, and nothing from the arm64 decoy.
    assert!(find_in_snapshots(&d, "bin/busybox").is_some());
    // Layer 2 has the file, layer 3 its whiteout: a 0/0 character device.
    let whiteouts = snapshot_dirs(&d)
        .into_iter()
        .filter_map(|s| s.join("fs/removed-by-whiteout").symlink_metadata().ok())
        .filter(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .count();
    assert_eq!(whiteouts, 1, "whiteout is a 0/0 char device");
    let opaque = find_in_snapshots(&d, "opaque-dir/new-file").expect("opaque dir");
    let opaque_dir = opaque.parent().expect("parent");
    let xattr = nix_getxattr(opaque_dir, "trusted.overlay.opaque");
    assert_eq!(xattr.as_deref(), Some(&b"y"[..]));
    assert!(
        find_in_snapshots(&d, "DECOY-ARM64").is_none(),
        "decoy platform not pulled"
    );
    // Same layers for every shape: one snapshot per layer, shared.
    assert_eq!(snapshot_dirs(&d).len(), 3, "{:?}", snapshot_dirs(&d));
}

fn nix_getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[tokio::test]
async fn pulls_by_digest_and_by_tag_at_digest() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    let image = images.get("oci").expect("oci");
    let by_digest = image.digest_reference();
    assert_eq!(
        pull(&d, &by_digest, None).await.expect("pull by digest"),
        image.config_digest
    );
    let st = status(&d, &by_digest).await.expect("found by digest");
    assert!(
        st.repo_tags.is_empty(),
        "a digest pull adds no tag: {:?}",
        st.repo_tags
    );
    let tag_at_digest = format!(
        "{}:oci@{}",
        image.reference.rsplit_once(':').expect("tag").0,
        image.manifest_digest
    );
    assert_eq!(
        pull(&d, &tag_at_digest, None)
            .await
            .expect("pull tag@digest"),
        image.config_digest
    );
}

#[tokio::test]
async fn list_status_and_remove_follow_cri_semantics() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    let image = images.get("oci").expect("oci");
    let mut client = d.images().await.expect("client");

    // Absent image: empty status, not an error; missing field: InvalidArgument naming it.
    assert!(status(&d, "127.0.0.1:1/absent:latest").await.is_none());
    let err = client
        .image_status(ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .expect_err("no image");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{}", err.message());

    pull(&d, &image.reference, None).await.expect("pull");
    let listed = client
        .list_images(ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    let filtered = client
        .list_images(ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec("127.0.0.1:1/other:1"),
            }),
        })
        .await
        .expect("ListImages filtered")
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    let verbose = client
        .image_status(ImageStatusRequest {
            image: spec(&image.config_digest),
            verbose: true,
        })
        .await
        .expect("verbose status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).expect("info JSON");
    assert_eq!(info["imageSpec"]["architecture"], "amd64");

    let fs = client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(
        usage.used_bytes.as_ref().expect("bytes").value > 1_000_000,
        "{usage:?}"
    );
    assert!(
        usage.inodes_used.as_ref().expect("inodes").value > 50,
        "{usage:?}"
    );

    // Remove by a 12-digit ID prefix, then again (idempotent); layers go with the last user.
    let prefix = &image.config_digest[7..19];
    for _ in 0..2 {
        client
            .remove_image(RemoveImageRequest {
                image: spec(prefix),
            })
            .await
            .expect("RemoveImage");
    }
    assert!(status(&d, &image.reference).await.is_none());
    assert!(
        snapshot_dirs(&d).is_empty(),
        "snapshots left: {:?}",
        snapshot_dirs(&d)
    );
}

#[tokio::test]
async fn tag_moves_to_the_newly_pulled_image() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    let oci = images.get("oci").expect("oci");
    pull(&d, &oci.reference, None).await.expect("pull");
    // Re-point the tag at a different image and pull again.
    let layer = LayerBuilder::new()
        .file("hello", "v2", 0o644)
        .build(Compression::Gzip)
        .expect("layer");
    let other = ImageBuilder::new(Platform::linux_amd64()).layer(layer);
    let pushed = other
        .push(&registry, &oci.repository, ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        &registry,
        &oci.repository,
        "oci",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("retag");
    let new_id = pull(&d, &oci.reference, None).await.expect("pull retagged");
    assert_eq!(new_id, pushed.config_digest);
    let old = status(&d, &oci.config_digest)
        .await
        .expect("old image kept");
    assert!(
        !old.repo_tags.contains(&oci.reference),
        "tag moved: {:?}",
        old.repo_tags
    );
    let new = status(&d, &oci.reference).await.expect("tag resolves");
    assert_eq!(new.id, pushed.config_digest);
}

#[tokio::test]
async fn pull_errors_have_precise_codes() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    let missing = format!("{}/berth-test/busybox:no-such-tag", registry.host());
    let err = pull(&d, &missing, None).await.expect_err("missing tag");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = pull(&d, "Bad//Ref", None).await.expect_err("bad ref");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = pull(&d, "", None).await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    let bad_auth = AuthConfig {
        auth: "%%%".into(),
        ..Default::default()
    };
    let err = pull(
        &d,
        &images.get("oci").expect("oci").reference,
        Some(bad_auth),
    )
    .await
    .expect_err("bad auth field");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("auth"), "{}", err.message());

    // Without an insecure entry, berth speaks https to the registry and fails clearly.
    let strict = Berthd::start().await.expect("berthd");
    let err = pull(&strict, &images.get("oci").expect("oci").reference, None)
        .await
        .expect_err("https to a plain-http registry");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
}

#[tokio::test]
async fn pulls_with_basic_auth_from_request_or_config() {
    let (open, images) = registry_with_images().await;
    let locked = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("berth".into(), "s3cret".into())),
        storage: Some(open.storage_dir()),
    })
    .expect("auth registry");
    let image = images.get("oci").expect("oci");
    let reference = image.reference.replace(&open.host(), &locked.host());

    let d = berthd_for(&[&locked], "").await;
    let err = pull(&d, &reference, None)
        .await
        .expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let wrong = AuthConfig {
        username: "berth".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = pull(&d, &reference, Some(wrong))
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let right = AuthConfig {
        username: "berth".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&d, &reference, Some(right))
            .await
            .expect("user/password"),
        image.config_digest
    );
    let b64 = AuthConfig {
        auth: "YmVydGg6czNjcmV0".into(),
        ..Default::default()
    }; // berth:s3cret
    pull(&d, &reference, Some(b64)).await.expect("auth field");

    let configured = berthd_for(
        &[&locked],
        &format!(
            "[registry.credentials]\n\"{}\" = {{ username = \"berth\", password = \"s3cret\" }}\n",
            locked.host()
        ),
    )
    .await;
    pull(&configured, &reference, None)
        .await
        .expect("configured credentials");
}

#[tokio::test]
async fn pulls_through_mirrors_in_order_then_upstream() {
    let (registry, images) = registry_with_images().await;
    let image = images.get("oci").expect("oci");
    // "mirror-only.invalid" cannot be resolved: only the mirrors can serve it. The first
    // mirror is dead; the second works.
    let config = format!(
        "[registry.mirrors]\n\"mirror-only.invalid\" = [\"http://127.0.0.1:1\", \"http://{}\"]\n",
        registry.host()
    );
    let d = berthd_for(&[&registry], &config).await;
    let via_mirror = format!("mirror-only.invalid/{}:oci", image.repository);
    assert_eq!(
        pull(&d, &via_mirror, None).await.expect("pull via mirror"),
        image.config_digest
    );
    let st = status(&d, &via_mirror)
        .await
        .expect("recorded under the requested name");
    assert!(st.repo_tags.contains(&via_mirror), "{:?}", st.repo_tags);
    assert!(
        d.stderr().contains("mirror failed"),
        "dead mirror is logged"
    );
}

#[tokio::test]
async fn concurrent_pulls_sharing_layers_fetch_each_blob_once() {
    let (registry, images) = registry_with_images().await;
    let d = berthd_for(&[&registry], "").await;
    let oci = images.get("oci").expect("oci").clone();
    let docker = images.get("docker").expect("docker").clone();
    let (a, b, c) = tokio::join!(
        pull(&d, &oci.reference, None),
        pull(&d, &docker.reference, None),
        pull(&d, &oci.reference, None),
    );
    a.expect("pull oci");
    b.expect("pull docker");
    c.expect("pull oci again");
    for layer in &oci.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            1,
            "layer {} fetched once",
            layer.digest
        );
    }
    // A later pull of an image whose layers are present fetches no layer at all.
    pull(&d, &images.get("multi-oci").expect("multi").reference, None)
        .await
        .expect("pull multi");
    for layer in &oci.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            1,
            "layer {} refetched",
            layer.digest
        );
    }
}

async fn push_single_layer(registry: &Registry, name: &str, layer: &LayerBuilder) -> String {
    let layer = layer.build(Compression::Gzip).expect("build layer");
    let image = ImageBuilder::new(Platform::linux_amd64()).layer(layer);
    let pushed = image
        .push(registry, name, ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        registry,
        name,
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag");
    format!("{}/{name}:latest", registry.host())
}

#[tokio::test]
async fn malicious_layers_are_rejected_and_leave_nothing_behind() {
    let registry = Registry::start().expect("registry");
    let d = berthd_for(&[&registry], "").await;
    let outside = tempfile::tempdir().expect("outside dir");
    let target = outside.path().display().to_string();

    let mut dotdot = LayerBuilder::new();
    dotdot.file("../../../../../../../tmp/berth-escape-dotdot", "x", 0o644);
    let mut symlink_parent = LayerBuilder::new();
    symlink_parent
        .symlink("evil", &target)
        .file("evil/pwned", "x", 0o644);
    let mut relative_symlink = LayerBuilder::new();
    relative_symlink.symlink("up", "../../../../../../..").file(
        "up/tmp/berth-escape-rel",
        "x",
        0o644,
    );
    let cases = [
        ("escape-dotdot", dotdot),
        ("escape-symlink", symlink_parent),
        ("escape-relative", relative_symlink),
    ];
    for (name, layer) in &cases {
        let reference = push_single_layer(&registry, &format!("berth-test/{name}"), layer).await;
        let err = pull(&d, &reference, None).await.expect_err(name);
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{name}: {}",
            err.message()
        );
        assert!(
            err.message().contains("rejected"),
            "{name}: {}",
            err.message()
        );
        assert!(
            status(&d, &reference).await.is_none(),
            "{name}: no image recorded"
        );
    }
    assert!(!Path::new("/tmp/berth-escape-dotdot").exists());
    assert!(!Path::new("/tmp/berth-escape-rel").exists());
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("ls").count(),
        0,
        "nothing written outside"
    );
    assert!(
        snapshot_dirs(&d).is_empty(),
        "no snapshot left: {:?}",
        snapshot_dirs(&d)
    );
}

#[tokio::test]
async fn layer_that_does_not_match_its_diff_id_is_rejected() {
    let registry = Registry::start().expect("registry");
    let d = berthd_for(&[&registry], "").await;
    let real = LayerBuilder::new()
        .file("a", "real", 0o644)
        .build(Compression::Gzip)
        .expect("layer");
    let mut lying = real.clone();
    lying.diff_id = e2e::images::sha256_digest(b"something else");
    let image = ImageBuilder::new(Platform::linux_amd64()).layer(lying);
    let pushed = image
        .push(&registry, "berth-test/lying", ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        &registry,
        "berth-test/lying",
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag");
    let err = pull(
        &d,
        &format!("{}/berth-test/lying:latest", registry.host()),
        None,
    )
    .await
    .expect_err("diff id mismatch");
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    assert!(snapshot_dirs(&d).is_empty());
}

#[tokio::test]
async fn pull_killed_midway_leaves_a_store_the_next_start_uses() {
    let registry = Registry::start().expect("registry");
    // A big incompressible layer so the pull is still running when berthd dies.
    let mut big = LayerBuilder::new();
    for i in 0..8 {
        let data: Vec<u8> = (0..8 << 20)
            .map(|j: u32| (j.wrapping_mul(2654435761) >> (i + 7)) as u8)
            .collect();
        big.file(&format!("blob-{i}"), data, 0o644);
    }
    let reference = push_single_layer(&registry, "berth-test/big", &big).await;

    let mut d = berthd_for(&[&registry], "").await;
    let client = d.images().await.expect("client");
    let puller = {
        let mut client = client.clone();
        let reference = reference.clone();
        tokio::spawn(async move {
            client
                .pull_image(PullImageRequest {
                    image: spec(&reference),
                    auth: None,
                    sandbox_config: None,
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    d.stop_with(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .expect("kill -9 berthd");
    let _ = puller.await;

    // Restart on the same dirs: leftovers are swept, the pull then works and is recorded.
    let dir = d.dir().to_path_buf();
    let mut restarted =
        Berthd::spawn_in_existing(&dir, &insecure_config(&[&registry])).expect("respawn");
    restarted
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    let leftovers: Vec<_> = snapshot_dirs(&restarted)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp snapshots survived restart: {leftovers:?}"
    );
    pull(&restarted, &reference, None)
        .await
        .expect("pull after restart");
    assert!(status(&restarted, &reference).await.is_some());
}

#[tokio::test]
async fn pulls_zstd_and_uncompressed_layers() {
    let registry = Registry::start().expect("registry");
    let d = berthd_for(&[&registry], "").await;
    let zstd_layer = LayerBuilder::new()
        .file("etc/zstd-layer", "compressed with zstd", 0o644)
        .build(Compression::Zstd)
        .expect("zstd layer");
    let plain_layer = LayerBuilder::new()
        .file("etc/plain-layer", "not compressed", 0o600)
        .build(Compression::None)
        .expect("plain layer");
    let image = ImageBuilder::new(Platform::linux_amd64())
        .layer(zstd_layer)
        .layer(plain_layer);
    let pushed = image
        .push(&registry, "berth-test/mixed", ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        &registry,
        "berth-test/mixed",
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag");
    let reference = format!("{}/berth-test/mixed:latest", registry.host());
    assert_eq!(
        pull(&d, &reference, None).await.expect("pull"),
        pushed.config_digest
    );
    let zstd_file = find_in_snapshots(&d, "etc/zstd-layer").expect("zstd layer unpacked");
    assert_eq!(
        std::fs::read_to_string(zstd_file).expect("read"),
        "compressed with zstd"
    );
    let plain = find_in_snapshots(&d, "etc/plain-layer").expect("plain layer unpacked");
    assert_eq!(plain.metadata().expect("stat").mode() & 0o777, 0o600);
}
