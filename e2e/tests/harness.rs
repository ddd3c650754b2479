//! The whole harness at once: a registry with the test images and a berthd answering the
//! always-on RPCs, as every later end-to-end test will use them.

use e2e::daemon::Berthd;
use e2e::images::push_test_images;
use e2e::registry::Registry;
use proto::cri;

#[tokio::test]
async fn harness_starts_registry_and_berthd_pushes_images_and_calls_version_and_status() {
    let registry = Registry::start().expect("start registry");
    let images = push_test_images(&registry).await.expect("push test images");
    for tag in ["oci", "docker", "multi-oci", "multi-docker", "latest"] {
        let image = images
            .get(tag)
            .unwrap_or_else(|| panic!("test image {tag}"));
        assert!(
            image.reference.starts_with(&registry.host()),
            "{}",
            image.reference
        );
        assert!(image.config_digest.starts_with("sha256:"));
    }
    let multi = images.get("multi-oci").expect("multi-oci");
    assert!(
        multi
            .platform_manifests
            .iter()
            .any(|(p, _)| p.starts_with("linux/arm64")),
        "multi-arch index carries the arm64 decoy: {:?}",
        multi.platform_manifests
    );

    let berthd = Berthd::start().await.expect("start berthd");
    let mut rt = berthd.runtime().await.expect("client");
    let version = rt
        .version(cri::VersionRequest::default())
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "berth");
    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert!(status.info.contains_key("config"));
    let ready = status.status.expect("status").conditions;
    assert!(ready.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
}
