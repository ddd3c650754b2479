//! The newer CRI features kubelet 1.30+ relies on, end to end: the runtime handlers and features
//! `Status` reports, supplemental groups policies, how `ContainerStatus` names the image,
//! recursive read-only mounts, image volumes and user namespaces with idmapped mounts. Each test
//! checks what the container observes and what the RPCs report. Needs root (CI runs as root).

use std::os::unix::fs::{MetadataExt, chown};
use std::path::Path;

use e2e::containers::{Env, env, security};
use e2e::images::{
    Compression, ImageBuilder, LayerBuilder, ManifestFormat, Platform, push_manifest,
};
use proto::cri::{
    self, ExecSyncRequest, IdMapping, ImageSpec, Int64Value, Mount, MountPropagation,
    NamespaceMode, PullImageRequest, RemoveContainerRequest, RemoveImageRequest,
    RuntimeConfigRequest, StatusRequest, SupplementalGroupsPolicy, UserNamespace,
};
use tonic::Code;

/// Host IDs the user namespace tests map container IDs 0..65536 to.
const USERNS_HOST_ID: u32 = 300_000;

async fn exec_sh(e: &Env, id: &str, script: &str) -> (i32, String, String) {
    let r =
        e.d.runtime()
            .await
            .expect("client")
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Creates and starts a container sleeping in `pod`.
async fn sleeping(
    e: &Env,
    pod: &str,
    pc: &cri::PodSandboxConfig,
    name: &str,
    tune: impl FnOnce(&mut cri::ContainerConfig),
) -> String {
    let mut c = e.container(name, &["/bin/sh", "-c", "exec sleep 3600"]);
    tune(&mut c);
    let id = e.create(pod, pc, c).await.expect("CreateContainer");
    e.start(&id).await.expect("StartContainer");
    id
}

fn bind(container_path: &str, host_path: &Path, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Default::default()
    }
}

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

/// A host directory with a tmpfs mounted below it (`sub`), unmounted on drop.
struct DirWithSubmount {
    dir: tempfile::TempDir,
}

impl DirWithSubmount {
    fn new() -> DirWithSubmount {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("sub");
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        std::fs::write(sub.join("file"), "in a submount\n").expect("file");
        DirWithSubmount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DirWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("sub"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

#[tokio::test]
async fn recursive_read_only_mounts_make_submounts_read_only() {
    let Some(e) = env().await else { return };
    let host = DirWithSubmount::new();
    let pc = e.pod("rro");
    let pod = e.run_pod(&pc).await;
    let mut rro = bind("/rro", host.path(), true);
    rro.recursive_read_only = true;
    let script = "cat /rro/sub/file; \
        touch /rro/top 2>/dev/null && echo rro-top-writable || echo rro-top-readonly; \
        touch /rro/sub/new 2>/dev/null && echo rro-sub-writable || echo rro-sub-readonly; \
        touch /ro/sub/new 2>/dev/null && echo ro-sub-writable || echo ro-sub-readonly; \
        touch /ro/top 2>/dev/null && echo ro-top-writable || echo ro-top-readonly";
    let mut c = e.container("rro", &["/bin/sh", "-c", script]);
    c.mounts = vec![rro, bind("/ro", host.path(), true)];
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(
        lines,
        [
            "in a submount",
            "rro-top-readonly",
            "rro-sub-readonly",
            // A plain read-only bind leaves its submounts writable: what RRO is for.
            "ro-sub-writable",
            "ro-top-readonly",
        ]
    );
    assert!(st.mounts[0].recursive_read_only, "reported as requested");
}

#[tokio::test]
async fn recursive_read_only_requests_need_readonly_and_private_propagation() {
    let Some(e) = env().await else { return };
    let host = tempfile::tempdir().expect("tempdir");
    let pc = e.pod("rro-bad");
    let pod = e.run_pod(&pc).await;
    let cases = [
        (false, MountPropagation::PropagationPrivate, "readonly"),
        (
            true,
            MountPropagation::PropagationHostToContainer,
            "PROPAGATION_PRIVATE",
        ),
        (
            true,
            MountPropagation::PropagationBidirectional,
            "PROPAGATION_PRIVATE",
        ),
    ];
    for (i, (readonly, propagation, says)) in cases.into_iter().enumerate() {
        let mut m = bind("/data", host.path(), readonly);
        m.recursive_read_only = true;
        m.propagation = propagation as i32;
        let mut c = e.container(&format!("rro-bad-{i}"), &["true"]);
        c.mounts = vec![m];
        let err = e.create(&pod, &pc, c).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message()
                .contains("config.mounts[0].recursive_read_only")
                && err.message().contains(says),
            "{err}"
        );
    }
}

/// Pushes `berth-test/data:<tag>` made of `layers` and pulls it into the daemon; returns its
/// reference and image ID.
async fn data_image(e: &Env, tag: &str, layers: Vec<LayerBuilder>) -> (String, String) {
    let mut builder = ImageBuilder::new(Platform::linux_amd64());
    for layer in layers {
        builder = builder.layer(layer.build(Compression::Gzip).expect("layer"));
    }
    let pushed = builder
        .push(&e.registry, "berth-test/data", ManifestFormat::Oci)
        .await
        .expect("push data image");
    push_manifest(
        &e.registry,
        "berth-test/data",
        tag,
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag data image");
    let reference = format!("{}/berth-test/data:{tag}", e.registry.host());
    let id =
        e.d.images()
            .await
            .expect("client")
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .expect("pull data image")
            .into_inner()
            .image_ref;
    (reference, id)
}

fn image_mount(container_path: &str, image: &str) -> Mount {
    Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The snapshot dirs of a container's image volumes, from `ContainerStatus` verbose info.
async fn volume_layers(e: &Env, id: &str) -> Vec<String> {
    let info =
        e.d.runtime()
            .await
            .expect("client")
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .info;
    let doc: serde_json::Value = serde_json::from_str(&info["info"]).expect("info JSON");
    doc["imageVolumes"]
        .as_array()
        .expect("imageVolumes")
        .iter()
        .flat_map(|v| v["lower"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn image_volumes_mount_an_images_layers_read_only_and_hold_them() {
    let Some(e) = env().await else { return };
    let mut base = LayerBuilder::new();
    base.file("/data/greeting", "hello from the base layer\n", 0o644)
        .file("/data/replaced", "old\n", 0o644)
        .file("/data/deleted", "gone soon\n", 0o644)
        .file("/bin/tool", "#!/bin/sh\necho tool ran\n", 0o755);
    let mut top = LayerBuilder::new();
    top.file("/data/replaced", "new\n", 0o644)
        .whiteout("/data/deleted");
    let (multi, multi_id) = data_image(&e, "multi", vec![base.clone(), top]).await;
    let (single, _) = data_image(&e, "single", vec![base]).await;

    let pc = e.pod("imgvol");
    let pod = e.run_pod(&pc).await;
    let id = sleeping(&e, &pod, &pc, "imgvol", |c| {
        c.mounts = vec![
            image_mount("/multi", &multi_id),
            image_mount("/single", &single),
        ];
    })
    .await;
    let (code, out, err) = exec_sh(
        &e,
        &id,
        "cat /multi/data/greeting /multi/data/replaced; ls /multi/data; \
         cat /single/data/replaced; /bin/sh /multi/bin/tool; \
         touch /multi/x 2>/dev/null && echo multi-writable || echo multi-readonly; \
         touch /single/x 2>/dev/null && echo single-writable || echo single-readonly",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "hello from the base layer\nnew\ngreeting\nreplaced\nold\ntool ran\n\
         multi-readonly\nsingle-readonly\n",
        "the top layer wins, whiteouts apply, the volume is read-only"
    );
    let st = e.status(&id).await;
    assert_eq!(st.mounts.len(), 2);
    assert_eq!(
        st.mounts[0].image.as_ref().map(|i| i.image.as_str()),
        Some(multi_id.as_str())
    );

    // The volume's image is held: removing it keeps the layers the container uses.
    let layers = volume_layers(&e, &id).await;
    assert!(!layers.is_empty());
    let mut images = e.d.images().await.expect("client");
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: multi.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
    let (code, out, _) = exec_sh(&e, &id, "cat /multi/data/greeting").await;
    assert_eq!((code, out.as_str()), (0, "hello from the base layer\n"));
    assert!(
        layers.iter().all(|l| Path::new(l).is_dir()),
        "layers stay while the container exists: {layers:?}"
    );
    e.d.runtime()
        .await
        .expect("client")
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    // The base layer is still the single image's; the top layer only the removed image's.
    let gone: Vec<&String> = layers.iter().filter(|l| !Path::new(l).exists()).collect();
    assert_eq!(
        gone.len(),
        1,
        "the removed image's own layer goes with the container: {layers:?}"
    );
}

#[tokio::test]
async fn image_volume_sub_paths_mount_a_directory_of_the_image_only() {
    let Some(e) = env().await else { return };
    let mut base = LayerBuilder::new();
    base.file("/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
        .file("/data/deep/file", "deep\n", 0o644)
        .symlink("/escape", "../../../../..");
    let mut top = LayerBuilder::new();
    top.file("/data/top", "top\n", 0o644);
    let (_, id_ref) = data_image(&e, "subpath", vec![base, top]).await;

    let pc = e.pod("imgvol-sub");
    let pod = e.run_pod(&pc).await;
    let mut etc = image_mount("/vol", &id_ref);
    etc.image_sub_path = "etc".into();
    let mut data = image_mount("/data", &id_ref);
    data.image_sub_path = "data".into();
    let id = sleeping(&e, &pod, &pc, "imgvol-sub", |c| {
        c.mounts = vec![etc.clone(), data.clone()];
    })
    .await;
    let (code, out, err) = exec_sh(
        &e,
        &id,
        "ls /vol; ls /data; cat /data/deep/file; ls /vol/etc 2>/dev/null || echo no-etc; \
         touch /vol/x 2>/dev/null && echo writable || echo readonly",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out, "passwd\ndeep\ntop\ndeep\nno-etc\nreadonly\n",
        "only the sub path is mounted, merged across layers, read-only"
    );
    // ContainerStatus reports the volume's image by the ID PullImage returned.
    let st = e.status(&id).await;
    let image = st.mounts[0].image.as_ref().expect("image");
    assert!(image.image_ref.starts_with("sha256:"), "{image:?}");
    assert_eq!(st.mounts[0].image_sub_path, "etc");

    // Missing, escaping, absolute and file sub paths, and a writable image volume, are refused
    // at CreateContainer, naming the field.
    let cases: [(&str, bool, Code, &str); 6] = [
        ("not-existing", true, Code::NotFound, "does not exist"),
        // Leads to the host's /etc/hostname if symlinks were followed on the host.
        (
            "escape/etc/hostname",
            true,
            Code::NotFound,
            "does not exist",
        ),
        ("../etc", true, Code::InvalidArgument, "without `..`"),
        ("/etc", true, Code::InvalidArgument, "relative"),
        ("etc/passwd", true, Code::InvalidArgument, "not a directory"),
        ("", false, Code::InvalidArgument, "readonly"),
    ];
    for (i, (sub, readonly, code, says)) in cases.into_iter().enumerate() {
        let mut m = image_mount("/vol", &id_ref);
        m.image_sub_path = sub.into();
        m.readonly = readonly;
        let mut c = e.container(&format!("bad-sub-{i}"), &["true"]);
        c.mounts = vec![m];
        let err = e.create(&pod, &pc, c).await.expect_err("refused");
        assert_eq!(err.code(), code, "{sub}: {err}");
        assert!(err.message().contains("config.mounts[0]"), "{err}");
        assert!(err.message().contains(says), "{sub}: {err}");
    }
}

#[tokio::test]
async fn image_volume_for_an_image_not_pulled_is_not_found() {
    let Some(e) = env().await else { return };
    let pc = e.pod("imgvol-missing");
    let pod = e.run_pod(&pc).await;
    let missing = format!("{}/berth-test/never-pulled:v1", e.registry.host());
    let mut c = e.container("imgvol-missing", &["true"]);
    c.mounts = vec![image_mount("/vol", &missing)];
    let err = e.create(&pod, &pc, c).await.expect_err("not pulled");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(
        err.message().contains("config.mounts[0].image") && err.message().contains(&missing),
        "{err}"
    );
}

fn kubelet_mapping() -> Vec<IdMapping> {
    vec![IdMapping {
        host_id: USERNS_HOST_ID,
        container_id: 0,
        length: 65536,
    }]
}

/// `pc` with its own user namespace, as kubelet asks for `hostUsers: false`.
fn with_userns(pc: &mut cri::PodSandboxConfig, uids: Vec<IdMapping>, gids: Vec<IdMapping>) {
    let ns = pc
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids,
        gids,
    });
}

#[tokio::test]
async fn user_namespace_pods_map_ids_and_idmap_the_rootfs_and_volumes() {
    let Some(e) = env().await else { return };
    let vol = tempfile::tempdir().expect("volume dir");
    std::fs::write(vol.path().join("owned-by-root"), "root's\n").expect("file");
    std::fs::write(vol.path().join("owned-by-1000"), "user's\n").expect("file");
    chown(vol.path().join("owned-by-1000"), Some(1000), Some(1000)).expect("chown");
    // Two layers: the image volume is an overlay of idmapped layers, like the rootfs (made by
    // the shim where the kernel's overlayfs takes only attached idmapped layers, before 6.15).
    let (_, image_id) = {
        let mut base = LayerBuilder::new();
        base.file("/data/base", "base layer\n", 0o644);
        let mut layer = LayerBuilder::new();
        layer.file("/data/in-image", "image volume\n", 0o644);
        data_image(&e, "userns", vec![base, layer]).await
    };

    let mut pc = e.pod("userns");
    with_userns(&mut pc, kubelet_mapping(), kubelet_mapping());
    let pod = e.run_pod(&pc).await;
    let id = sleeping(&e, &pod, &pc, "userns", |c| {
        let mut idmapped = bind("/vol", vol.path(), false);
        idmapped.uid_mappings = kubelet_mapping();
        idmapped.gid_mappings = kubelet_mapping();
        let mut idmapped_ro = idmapped.clone();
        idmapped_ro.container_path = "/vol-ro".into();
        idmapped_ro.readonly = true;
        c.mounts = vec![
            idmapped,
            idmapped_ro,
            bind("/raw", vol.path(), true),
            image_mount("/img", &image_id),
        ];
        let ns = security(c)
            .namespace_options
            .get_or_insert_with(Default::default);
        ns.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: kubelet_mapping(),
            gids: kubelet_mapping(),
        });
    })
    .await;
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; \
        stat -c '%n %u %g' / /bin/busybox /etc/hosts /dev /dev/shm /vol/owned-by-root \
            /vol/owned-by-1000 /raw/owned-by-root /img/data/in-image /img/data/base; \
        touch /created-inside && echo created; echo written > /vol/from-container; \
        cat /img/data/in-image /img/data/base; stat -c '%n %u %g' /vol-ro/owned-by-1000; \
        touch /vol-ro/x 2>/dev/null && echo vol-ro-writable || echo vol-ro-readonly";
    let (code, out, err) = exec_sh(&e, &id, script).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let map_line = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let want_map = format!("0 {USERNS_HOST_ID} 65536");
    assert_eq!(map_line(lines[0]), want_map, "uid_map: {out}");
    assert_eq!(map_line(lines[1]), want_map, "gid_map: {out}");
    assert_eq!(lines[2], "0", "root inside: {out}");
    assert_eq!(
        lines[3..13],
        [
            "/ 0 0",
            "/bin/busybox 0 0",
            "/etc/hosts 0 0",
            "/dev 0 0",
            "/dev/shm 0 0",
            "/vol/owned-by-root 0 0",
            "/vol/owned-by-1000 1000 1000",
            // Not idmapped: the host's root is nobody inside.
            "/raw/owned-by-root 65534 65534",
            "/img/data/in-image 0 0",
            "/img/data/base 0 0",
        ],
        "{out}"
    );
    assert_eq!(
        lines[13..],
        [
            "created",
            "image volume",
            "base layer",
            "/vol-ro/owned-by-1000 1000 1000",
            "vol-ro-readonly"
        ],
        "{out}"
    );
    // On the host, what the container's root wrote belongs to the mapped ID.
    let written = std::fs::metadata(vol.path().join("from-container")).expect("written");
    assert_eq!(
        (written.uid(), written.gid()),
        (0, 0),
        "through the idmapped mount, container root writes as host root's mapping"
    );
    let info =
        e.d.runtime()
            .await
            .expect("client")
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .info;
    let doc: serde_json::Value = serde_json::from_str(&info["info"]).expect("JSON");
    let upper = doc["upper"].as_str().expect("upper");
    let created = std::fs::metadata(Path::new(upper).join("created-inside")).expect("in upper");
    assert_eq!(
        (created.uid(), created.gid()),
        (USERNS_HOST_ID, USERNS_HOST_ID),
        "the writable layer holds the host IDs"
    );

    // An exec joins the same user namespace.
    let (code, exec_view, _) = exec_sh(
        &e,
        &id,
        "cat /proc/self/uid_map; readlink /proc/self/ns/user; readlink /proc/1/ns/user",
    )
    .await;
    assert_eq!(code, 0);
    let exec_lines: Vec<&str> = exec_view.lines().collect();
    assert_eq!(map_line(exec_lines[0]), want_map, "{exec_view}");
    assert_eq!(
        exec_lines[1], exec_lines[2],
        "same namespace as PID 1: {exec_view}"
    );
    let host_ns = std::fs::read_link("/proc/self/ns/user").expect("own userns");
    assert_ne!(exec_lines[1], host_ns.to_string_lossy(), "not the host's");
}

#[tokio::test]
async fn user_namespace_pods_configure_their_own_namespaces_and_share_pids() {
    let Some(e) = env().await else { return };
    let mut pc = e.pod("userns-pod");
    with_userns(&mut pc, kubelet_mapping(), kubelet_mapping());
    let linux = pc.linux.get_or_insert_with(Default::default);
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "100".into());
    linux
        .sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    if let Some(ns) = linux
        .security_context
        .as_mut()
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = NamespaceMode::Pod as i32;
    }
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "userns-pod",
        &[
            "/bin/sh",
            "-c",
            "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start \
             /proc/sys/kernel/shm_rmid_forced /proc/1/comm; \
             cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; \
             echo hi > /dev/shm/x && cat /dev/shm/x",
        ],
    );
    security(&mut c).namespace_options = Some(cri::NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: kubelet_mapping(),
            gids: kubelet_mapping(),
        }),
        ..Default::default()
    });
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(
        lines,
        [
            "userns-pod",
            "100",
            "1",
            "berth-pod-init",
            &format!("0 {USERNS_HOST_ID} 65536"),
            "hi",
        ],
        "hostname and sysctls set in the pod's namespaces, the pod's PID 1, the mapping"
    );
}

#[tokio::test]
async fn user_namespace_requests_are_validated_naming_the_field() {
    let Some(e) = env().await else { return };
    let range = |container_id, host_id, length| IdMapping {
        host_id,
        container_id,
        length,
    };
    let cases = [
        (
            vec![range(0, 300_000, 1000), range(500, 400_000, 1000)],
            "overlap in container_id",
        ),
        (
            vec![range(0, 300_000, 1000), range(1000, 300_500, 1000)],
            "overlap in host_id",
        ),
        (vec![], "at least one mapping"),
    ];
    for (i, (uids, says)) in cases.into_iter().enumerate() {
        let mut pc = e.pod(&format!("userns-bad-{i}"));
        with_userns(&mut pc, uids, kubelet_mapping());
        let err = e.d.run_pod(pc).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message()
                .contains("namespace_options.userns_options.uids")
                && err.message().contains(says),
            "{err}"
        );
    }
    let mut pc = e.pod("userns-node");
    let ns = pc
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.userns_options = Some(UserNamespace {
        mode: NamespaceMode::Node as i32,
        uids: kubelet_mapping(),
        gids: kubelet_mapping(),
    });
    let err = e.d.run_pod(pc).await.expect_err("NODE with mappings");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("mode NODE"), "{err}");

    // A container must run in its pod's user namespace, and unprivileged.
    let mut pc = e.pod("userns-ctr");
    with_userns(&mut pc, kubelet_mapping(), kubelet_mapping());
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("other-mapping", &["true"]);
    security(&mut c)
        .namespace_options
        .get_or_insert_with(Default::default)
        .userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: vec![range(0, 900_000, 65536)],
        gids: vec![range(0, 900_000, 65536)],
    });
    let err = e.create(&pod, &pc, c).await.expect_err("other mapping");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("userns_options must match"), "{err}");
    let mut c = e.container("privileged", &["true"]);
    security(&mut c).privileged = true;
    let err = e.create(&pod, &pc, c).await.expect_err("privileged");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("privileged"), "{err}");
    let mut c = e.container("unmapped", &["true"]);
    security(&mut c).run_as_user = Some(Int64Value { value: 70_000 });
    let err = e.create(&pod, &pc, c).await.expect_err("unmapped user");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("run_as_user 70000 is not mapped"),
        "{err}"
    );
}

/// Image volumes of a user-namespaced container under the runc handler: runc 1.1 cannot idmap,
/// so the shim stages each image (one layer and several, one with a sub path) from idmapped
/// layers and runc binds it; inside, the image's files belong to the container's root.
#[tokio::test]
async fn user_namespace_image_volumes_are_idmapped_under_runc_too() {
    const RUNC: &str = "/usr/bin/runc";
    if !Path::new(RUNC).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs runc: {RUNC} is missing"
        );
        eprintln!("skipped: {RUNC} is not installed (apt-get install runc)");
        return;
    }
    let Some(e) = e2e::containers::env_with(&format!("[runtimes.runc]\npath = \"{RUNC}\"\n")).await
    else {
        return;
    };
    let (_, one) = {
        let mut layer = LayerBuilder::new();
        layer.file("/data/in-image", "one layer\n", 0o644);
        data_image(&e, "userns-runc-one", vec![layer]).await
    };
    let (_, two) = {
        let mut base = LayerBuilder::new();
        base.file("/data/base", "base\n", 0o644);
        let mut top = LayerBuilder::new();
        top.file("/data/sub/top", "top\n", 0o644);
        data_image(&e, "userns-runc-two", vec![base, top]).await
    };
    let mut pc = e.pod("userns-runc-img");
    with_userns(&mut pc, kubelet_mapping(), kubelet_mapping());
    let pod =
        e.d.run_pod_with_handler(pc.clone(), "runc")
            .await
            .expect("RunPodSandbox runc");
    let id = sleeping(&e, &pod, &pc, "userns-runc-img", |c| {
        let mut sub = image_mount("/sub", &two);
        sub.image_sub_path = "data/sub".into();
        c.mounts = vec![image_mount("/one", &one), image_mount("/two", &two), sub];
        let ns = security(c)
            .namespace_options
            .get_or_insert_with(Default::default);
        ns.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: kubelet_mapping(),
            gids: kubelet_mapping(),
        });
    })
    .await;
    let (code, out, err) = exec_sh(
        &e,
        &id,
        "stat -c '%n %u %g' /one/data/in-image /two/data/base /two/data/sub/top /sub/top; \
         cat /one/data/in-image /sub/top; touch /one/x 2>/dev/null && echo writable || echo ro",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "/one/data/in-image 0 0",
            "/two/data/base 0 0",
            "/two/data/sub/top 0 0",
            "/sub/top 0 0",
            "one layer",
            "top",
            "ro"
        ],
        "{out}"
    );
    e.d.remove_pod(&pod).await;
}
