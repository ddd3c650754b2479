//! The newer CRI features kubelet 1.30+ relies on, end to end: the runtime handlers and features
//! `Status` reports, supplemental groups policies, how `ContainerStatus` names the image,
//! and (as they land) the newer mount and namespace features. Each test
//! checks what the container observes and what the RPCs report. Needs root (CI runs as root).

use e2e::containers::{env, security};
use proto::cri::{
    self, ImageSpec, Int64Value, RuntimeConfigRequest, StatusRequest, SupplementalGroupsPolicy,
};
use tonic::Code;

#[tokio::test]
async fn status_lists_every_handler_with_its_features_and_the_cgroup_driver() {
    let Some(e) = env().await else { return };
    let mut rt = e.d.runtime().await.expect("client");
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "berth"], "default handler and its name");
    for h in &status.runtime_handlers {
        let f = h.features.as_ref().expect("features");
        // This machine's kernel (6.x) has mount_setattr and idmapped overlayfs layers.
        assert!(f.recursive_read_only_mounts, "{h:?}");
        assert!(f.user_namespaces, "{h:?}");
    }
    assert!(
        status
            .features
            .expect("runtime features")
            .supplemental_groups_policy
    );
    let config = rt
        .runtime_config(RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

/// The sorted, distinct numbers of `id -G`.
fn groups(line: &str) -> Vec<u32> {
    let mut g: Vec<u32> = line
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    g.sort_unstable();
    g.dedup();
    g
}

#[tokio::test]
async fn supplemental_groups_policy_merge_adds_image_groups_and_strict_does_not() {
    let Some(e) = env().await else { return };
    let pc = e.pod("groups");
    let pod = e.run_pod(&pc).await;
    // The test image's /etc/group puts user berth (1000) in group extra (2000).
    for (policy, want_id, want_status) in [
        (
            SupplementalGroupsPolicy::Merge,
            vec![2000, 3000, 4000],
            vec![3000, 2000, 4000],
        ),
        (
            SupplementalGroupsPolicy::Strict,
            vec![3000, 4000],
            vec![3000, 4000],
        ),
    ] {
        let name = format!("groups-{}", policy.as_str_name().to_lowercase());
        let mut c = e.container(&name, &["/bin/sh", "-c", "id -G; id -g; id -u"]);
        let sc = security(&mut c);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000];
        sc.supplemental_groups_policy = policy as i32;
        let (st, lines) = e.run_to_end(&pod, &pc, c).await;
        assert_eq!(st.exit_code, 0, "{lines:?}");
        assert_eq!(groups(&lines[0]), want_id, "{policy:?}: id -G {lines:?}");
        assert_eq!(lines[1..], ["3000", "1000"], "{policy:?}");
        let user = st.user.and_then(|u| u.linux).expect("ContainerStatus.user");
        assert_eq!((user.uid, user.gid), (1000, 3000), "{policy:?}");
        let want: Vec<i64> = want_status.iter().map(|g| i64::from(*g)).collect();
        assert_eq!(user.supplemental_groups, want, "{policy:?}");
    }
    let mut c = e.container("groups-bad", &["true"]);
    security(&mut c).supplemental_groups_policy = 9;
    let err = e.create(&pod, &pc, c).await.expect_err("unknown policy");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("supplemental_groups_policy"),
        "{err}"
    );
}

#[tokio::test]
async fn container_status_names_the_image_by_tag_repo_digest_and_id() {
    let Some(e) = env().await else { return };
    let image =
        e.d.images()
            .await
            .expect("client")
            .image_status(cri::ImageStatusRequest {
                image: Some(ImageSpec {
                    image: e.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("image");
    let pc = e.pod("naming");
    let pod = e.run_pod(&pc).await;
    // kubelet creates containers by the image ID PullImage returned.
    let mut c = e.container("naming", &["true"]);
    c.image = Some(ImageSpec {
        image: image.id.clone(),
        ..Default::default()
    });
    let (st, _) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.image_id, image.id, "image_id is the config digest");
    assert!(image.id.starts_with("sha256:"), "{}", image.id);
    assert_eq!(
        st.image_ref, image.repo_digests[0],
        "image_ref is the repo digest"
    );
    assert!(st.image_ref.contains("@sha256:"), "{}", st.image_ref);
    assert_eq!(
        st.image.expect("image").image,
        image.repo_tags[0],
        "image is the repo tag, as containerd reports it"
    );
}
