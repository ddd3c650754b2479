//! The harness's registry and test images: what is pushed can be pulled back intact.

use std::io::Read;
use std::path::Path;

use e2e::http;
use e2e::images::{
    self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, TEST_TAGS, TestImage,
    TestImages,
};
use e2e::registry::Registry;
use serde_json::Value;

async fn start_and_push() -> (Registry, TestImages) {
    let registry = Registry::start().expect("start registry");
    let images = images::push_test_images(&registry)
        .await
        .expect("push test images");
    (registry, images)
}

fn image<'a>(images: &'a TestImages, tag: &str) -> &'a TestImage {
    images
        .get(tag)
        .unwrap_or_else(|| panic!("tag {tag} pushed"))
}

async fn get_manifest(registry: &Registry, image: &TestImage, reference: &str) -> http::Response {
    let path = format!("/v2/{}/manifests/{reference}", image.repository);
    let accept = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ");
    let response = http::request(
        &registry.host(),
        hyper::Method::GET,
        &path,
        &[("accept", &accept)],
        bytes::Bytes::new(),
    )
    .await
    .expect("GET manifest");
    assert_eq!(response.status, 200, "GET {path}: {}", response.body_text());
    response
}

async fn get_blob(registry: &Registry, repository: &str, digest: &str) -> bytes::Bytes {
    let path = format!("/v2/{repository}/blobs/{digest}");
    let response = http::get(&registry.host(), &path).await.expect("GET blob");
    assert_eq!(response.status, 200, "GET {path}: {}", response.body_text());
    assert_eq!(
        images::sha256_digest(&response.body),
        digest,
        "blob {digest} hashes to its digest"
    );
    response.body
}

fn tar_entries(gzipped: &[u8]) -> Vec<String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut tar)
        .expect("gunzip layer");
    let mut archive = tar::Archive::new(&tar[..]);
    archive
        .entries()
        .expect("tar entries")
        .map(|e| String::from_utf8_lossy(&e.expect("tar entry").path_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn every_tag_serves_its_manifest_with_content_type_and_digest() {
    let (registry, images) = start_and_push().await;
    let expected = [
        ("oci", OCI_MANIFEST),
        ("docker", DOCKER_MANIFEST),
        ("multi-oci", OCI_INDEX),
        ("multi-docker", DOCKER_MANIFEST_LIST),
        ("latest", OCI_MANIFEST),
    ];
    assert_eq!(expected.len(), TEST_TAGS.len());
    for (tag, media_type) in expected {
        let image = image(&images, tag);
        assert_eq!(image.manifest_media_type, media_type);
        assert_eq!(
            image.reference,
            format!("{}/berth-test/busybox:{tag}", registry.host())
        );
        let response = get_manifest(&registry, image, tag).await;
        assert_eq!(
            response.header("content-type"),
            Some(media_type),
            "tag {tag}"
        );
        assert_eq!(
            response.header("docker-content-digest"),
            Some(image.manifest_digest.as_str()),
            "tag {tag}"
        );
        assert_eq!(images::sha256_digest(&response.body), image.manifest_digest);
    }
    assert_eq!(
        image(&images, "latest").manifest_digest,
        image(&images, "oci").manifest_digest
    );
}

#[tokio::test]
async fn every_blob_hashes_to_its_digest() {
    let (registry, images) = start_and_push().await;
    for image in images.iter() {
        get_blob(&registry, &image.repository, &image.config_digest).await;
        for layer in &image.layers {
            let blob = get_blob(&registry, &image.repository, &layer.digest).await;
            assert_eq!(blob.len() as u64, layer.size);
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut tar)
                .expect("gunzip");
            assert_eq!(images::sha256_digest(&tar), layer.diff_id);
        }
    }
}

#[tokio::test]
async fn oci_and_docker_images_share_config_and_layers_with_own_media_types() {
    let (_registry, images) = start_and_push().await;
    let oci = image(&images, "oci");
    let docker = image(&images, "docker");
    assert_eq!(oci.config_digest, docker.config_digest);
    assert_eq!(oci.layers.len(), 3);
    for (o, d) in oci.layers.iter().zip(&docker.layers) {
        assert_eq!(o.digest, d.digest);
        assert_eq!(o.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(
            d.media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert_eq!(image(&images, "multi-oci").config_digest, oci.config_digest);
}

#[tokio::test]
async fn indexes_list_amd64_image_and_arm64_decoy() {
    let (registry, images) = start_and_push().await;
    for (tag, single, child_type) in [
        ("multi-oci", "oci", OCI_MANIFEST),
        ("multi-docker", "docker", DOCKER_MANIFEST),
    ] {
        let index_image = image(&images, tag);
        let response = get_manifest(&registry, index_image, tag).await;
        let index: Value = serde_json::from_slice(&response.body).expect("index json");
        let entries = index["manifests"].as_array().expect("manifests array");
        assert_eq!(entries.len(), 2, "{tag} has two entries");
        let amd64 = &entries[0];
        assert_eq!(amd64["platform"]["architecture"], "amd64");
        assert_eq!(
            amd64["digest"],
            image(&images, single).manifest_digest.as_str()
        );
        let arm64 = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == "arm64")
            .expect("an arm64 entry");
        assert_eq!(arm64["platform"]["variant"], "v8");
        assert_eq!(arm64["mediaType"], child_type);
        let digest = arm64["digest"].as_str().expect("digest");
        assert!(
            index_image
                .platform_manifests
                .contains(&("linux/arm64/v8".to_string(), digest.to_string()))
        );
        check_decoy(&registry, index_image, digest).await;
    }
}

async fn check_decoy(registry: &Registry, index_image: &TestImage, digest: &str) {
    let response = get_manifest(registry, index_image, digest).await;
    let manifest: Value = serde_json::from_slice(&response.body).expect("decoy manifest");
    let repository = &index_image.repository;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: Value =
        serde_json::from_slice(&get_blob(registry, repository, config_digest).await)
            .expect("decoy config");
    assert_eq!(config["architecture"], "arm64");
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let layer = get_blob(registry, repository, layer_digest).await;
    assert_eq!(tar_entries(&layer), ["DECOY-ARM64"]);
}

#[tokio::test]
async fn layers_hold_busybox_testprogs_and_whiteouts() {
    let (registry, images) = start_and_push().await;
    let oci = image(&images, "oci");
    let mut layers = Vec::new();
    for layer in &oci.layers {
        layers.push(tar_entries(
            &get_blob(&registry, &oci.repository, &layer.digest).await,
        ));
    }
    let has = |layer: usize, name: &str| layers[layer].iter().any(|e| e == name);
    for name in [
        "bin/busybox",
        "bin/sh",
        "lib64/ld-linux-x86-64.so.2",
        "etc/passwd",
        "tmp/",
    ] {
        assert!(has(0, name), "busybox layer has {name}: {:?}", layers[0]);
    }
    assert!(layers[0].iter().any(|e| e.contains("libc.so.6")));
    for name in ["pause", "exitwith", "printenv-args"] {
        assert!(
            has(1, &format!("usr/local/bin/{name}")),
            "layer 2 has {name}"
        );
        assert!(Path::new(images::testprogs_dir()).join(name).is_file());
    }
    assert!(has(1, "removed-by-whiteout") && has(1, "opaque-dir/old-file"));
    for name in [
        ".wh.removed-by-whiteout",
        "opaque-dir/.wh..wh..opq",
        "opaque-dir/new-file",
    ] {
        assert!(has(2, name), "whiteout layer has {name}: {:?}", layers[2]);
    }
}

#[tokio::test]
async fn pushing_again_gives_the_same_digests() {
    let (registry, first) = start_and_push().await;
    let second = images::push_test_images(&registry)
        .await
        .expect("push again");
    for tag in TEST_TAGS {
        assert_eq!(
            image(&first, tag).manifest_digest,
            image(&second, tag).manifest_digest,
            "tag {tag}"
        );
    }
}

#[test]
fn registry_process_is_gone_after_drop() {
    let registry = Registry::start().expect("start registry");
    let pid = registry.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(registry);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry pid {pid} still exists after drop"
    );
}

#[test]
fn busybox_layer_runs_dynamic_sh_and_testprogs_in_a_chroot() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let rootfs = tempfile::tempdir().expect("rootfs dir");
    for layer in [images::busybox_layer(), images::testprogs_layer()] {
        let tar = layer.expect("build layer").tar().expect("layer tar");
        tar::Archive::new(&tar[..])
            .unpack(rootfs.path())
            .expect("unpack layer");
    }
    let output = std::process::Command::new("/usr/sbin/chroot")
        .arg(rootfs.path())
        .args([
            "/bin/sh",
            "-c",
            "ls /bin/ls && /usr/local/bin/printenv-args one two && id berth",
        ])
        .env_clear()
        .env("PATH", "/bin")
        .output()
        .expect("run chroot");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{:?}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        &lines[..3],
        ["/bin/ls", "/usr/local/bin/printenv-args", "one"]
    );
    assert!(lines.contains(&"PATH=/bin"));
    assert_eq!(
        lines.last(),
        Some(&"uid=1000(berth) gid=1000(berth) groups=1000(berth),2000(extra)")
    );
}
