//! CheckpointContainer and restore (CreateContainer from a checkpoint archive, or from an OCI
//! image built from one and pulled from a registry) with CRIU, over berth's socket and through
//! the real `crictl`.
//!
//! Where `criu check` fails (this project's development hosts: "vdso: Unexpected rt vDSO area
//! bounds" on Linux 6.18), berth must refuse with CRIU's own reason and leave nothing behind:
//! `checkpoint_where_criu_cannot_work_says_why_and_leaves_nothing`. The checkpoint/restore
//! tests proper need a kernel CRIU works on; `scripts/criu-lane.sh` runs them in a VM that has
//! one, with `BERTH_REQUIRE_CRIU=1` so that they fail instead of skipping there.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::containers::{Env, env, read_log};
use e2e::images::{Compression, ImageBuilder, Layer, ManifestFormat, Platform, push_manifest};
use proto::cri;
use tonic::Code;

/// CRI-O's checkpoint image annotation (Kubernetes' documented `buildah config` step).
const CRIO_ANNOTATION: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";
/// checkpointctl's, which containerd 2.x reads.
const CRIU_ANNOTATION: &str = "org.criu.checkpoint.container.name";
const CHECKPOINT_REPOSITORY: &str = "berth-test/checkpoint";

const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done",
];

/// `criu check`'s verdict on this host: Ok, or the reason CRIU gives.
fn criu_works() -> Result<(), String> {
    let out = std::process::Command::new("criu").arg("check").output();
    match out {
        Err(e) => Err(format!("criu not runnable: {e}")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            Err(String::from_utf8_lossy(&o.stderr).into_owned()
                + &String::from_utf8_lossy(&o.stdout))
        }
    }
}

/// Whether the CRIU round-trip tests run: only where `criu check` passes; the CRIU lane sets
/// `BERTH_REQUIRE_CRIU=1` to make a failing check an error.
fn need_criu() -> bool {
    match criu_works() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("BERTH_REQUIRE_CRIU").is_none(),
                "BERTH_REQUIRE_CRIU is set but criu check fails: {why}"
            );
            eprintln!(
                "skipped: CRIU cannot work on this kernel (scripts/criu-lane.sh runs this test in a VM where it can): {}",
                why.lines()
                    .find(|l| l.contains("Error"))
                    .unwrap_or(why.trim())
            );
            false
        }
    }
}

async fn checkpoint(e: &Env, id: &str, location: &Path) -> Result<(), tonic::Status> {
    e.d.runtime()
        .await
        .expect("client")
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: id.into(),
            location: location.display().to_string(),
            timeout: 60,
        })
        .await
        .map(|_| ())
}

/// Numbers the counter printed so far.
fn counts(log: &Path) -> Vec<u64> {
    read_log(log)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until the counter has printed at least `n` numbers; returns them.
async fn wait_counts(log: &Path, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = counts(log);
        if c.len() >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "counter printed only {c:?} to {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No work directory of a checkpoint remains under the daemon's root.
fn assert_no_work_files(root: &Path) {
    let leftovers: Vec<_> = walk(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-work-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn checkpoint_where_criu_cannot_work_says_why_and_leaves_nothing() {
    let Err(why) = criu_works() else {
        eprintln!("skipped: criu check passes here; the round-trip tests below cover this host");
        return;
    };
    let Some(e) = env().await else { return };
    let (_pod, id) = e.run_container("ckpt-nocriu", COUNTER, |_| {}).await;
    let out = tempfile::tempdir().expect("out");
    let location = out.path().join("ckpt.tar");
    let err = checkpoint(&e, &id, &location)
        .await
        .expect_err("no CRIU here");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let msg = err.message();
    if which_criu() {
        // CRIU's own first error line, e.g. "vdso: Unexpected rt vDSO area bounds".
        let first = why
            .lines()
            .find_map(|l| l.split_once("): ").map(|(_, m)| m.trim()))
            .expect("criu check printed an error line");
        assert!(msg.contains("`criu check` failed"), "{msg}");
        assert!(msg.contains(first), "{msg} lacks CRIU's reason `{first}`");
    } else {
        assert!(msg.contains("CRIU is not installed"), "{msg}");
    }
    assert!(!location.exists(), "no archive on failure");
    assert_eq!(
        std::fs::read_dir(out.path()).expect("ls").count(),
        0,
        "no temp file"
    );
    assert_no_work_files(&e.d.root_dir);
    // The container was not disturbed.
    assert_eq!(
        e.status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
}

fn which_criu() -> bool {
    [
        "/usr/sbin/criu",
        "/sbin/criu",
        "/usr/bin/criu",
        "/usr/local/sbin/criu",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

#[tokio::test]
async fn checkpoint_requests_are_checked_before_criu_runs() {
    let Some(e) = env().await else { return };
    let mut rt = e.d.runtime().await.expect("client");
    let err = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("container_id"), "{}", err.message());
    let (pod, id) = e
        .run_container("ckpt-bad", &["sh", "-c", "exit 0"], |_| {})
        .await;
    let _ = pod;
    for location in ["", "relative/ckpt.tar"] {
        let err = checkpoint(&e, &id, Path::new(location))
            .await
            .expect_err("bad location");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("location"), "{}", err.message());
    }
    let out = tempfile::tempdir().expect("out");
    let location = out.path().join("ckpt.tar");
    let err = checkpoint(&e, "no-such-container", &location)
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    e.wait_exited(&id).await;
    let err = checkpoint(&e, &id, &location).await.expect_err("exited");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("only a running container"),
        "{}",
        err.message()
    );
    assert!(!location.exists());
}

#[tokio::test]
async fn create_from_a_file_that_is_not_a_checkpoint_is_refused_cleanly() {
    let Some(e) = env().await else { return };
    let pc = e.pod("restore-bad");
    let pod = e.run_pod(&pc).await;
    let dir = tempfile::tempdir().expect("dir");
    let plain = dir.path().join("not-a-checkpoint.tar");
    std::fs::write(&plain, "hello").expect("write");
    for (path, expect) in [
        (plain.clone(), "not a checkpoint archive"),
        (
            dir.path().join("missing.tar"),
            "no checkpoint archive at this path",
        ),
    ] {
        let mut c = e.container("restore-bad", &["true"]);
        c.image = Some(cri::ImageSpec {
            image: path.display().to_string(),
            ..Default::default()
        });
        let err = e.create(&pod, &pc, c).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains("config.image.image"),
            "{}",
            err.message()
        );
        assert!(err.message().contains(expect), "{}", err.message());
    }
    let restore_dir = e.d.root_dir.join("checkpoint-restore");
    let left = std::fs::read_dir(&restore_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        left,
        0,
        "extracted archives left in {}",
        restore_dir.display()
    );
}

/// Checkpoints a running counter, checks the archive's layout, and returns (archive dir,
/// archive path, pod config, pod, container id, the last count logged before).
async fn checkpoint_counter(
    e: &Env,
    name: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    cri::PodSandboxConfig,
    String,
    String,
    u64,
) {
    let pc = e.pod(name);
    let pod = e.run_pod(&pc).await;
    let c = e.container(name, COUNTER);
    let log = e.log_path(&pc, &c);
    let id = e.run(&pod, &pc, c).await;
    let before = *wait_counts(&log, 5).await.last().expect("counts");
    let out = tempfile::tempdir().expect("out");
    let location = out.path().join("ckpt.tar");
    checkpoint(e, &id, &location)
        .await
        .expect("CheckpointContainer");
    // Left running, still counting.
    assert_eq!(
        e.status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let n = counts(&log).len();
    wait_counts(&log, n + 2).await;
    // The layout CRI-O and containerd write.
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&location).expect("open"))
        .entries()
        .expect("entries")
        .map(|en| {
            en.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    for want in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "container.log",
        "dump.log",
        "checkpoint/inventory.img",
        "checkpoint/descriptors.json",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert_no_work_files(&e.d.root_dir);
    (out, location, pc, pod, id, before)
}

/// Creates and starts a container restored from `archive` in `pod`; checks it continues the
/// count past `before`.
async fn restore_and_check(
    e: &Env,
    pc: &cri::PodSandboxConfig,
    pod: &str,
    name: &str,
    image: &str,
    before: u64,
) {
    let mut c = e.container(name, &["ignored"]);
    // As kubelet would: the next attempt, with its own log.
    c.metadata = Some(cri::ContainerMetadata {
        name: name.into(),
        attempt: 1,
    });
    c.log_path = format!("{name}/1.log");
    c.image = Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    let log = e.log_path(pc, &c);
    let id = e
        .create(pod, pc, c)
        .await
        .expect("CreateContainer from the checkpoint");
    e.start(&id).await.expect("StartContainer restores");
    let restored = wait_counts(&log, 3).await;
    assert!(
        restored[0] > before,
        "restored counter started at {} (it had reached {before} before the checkpoint): {restored:?}",
        restored[0]
    );
    for w in restored.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "the restored counter counts on: {restored:?}"
        );
    }
    let st = e.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    e.stop(&id).await;
    let st = e.wait_exited(&id).await;
    assert_ne!(st.exit_code, 0, "killed by the stop");
    e.remove(&id).await;
}

#[tokio::test]
async fn checkpointed_counter_continues_after_restore_in_the_same_pod() {
    if !need_criu() {
        return;
    }
    let Some(e) = env().await else { return };
    let (_out, archive, pc, pod, id, before) = checkpoint_counter(&e, "ckpt-same").await;
    // The original goes first (same name, same pod), as kubelet replaces a container.
    e.stop(&id).await;
    e.remove(&id).await;
    let archive = archive.display().to_string();
    restore_and_check(&e, &pc, &pod, "ckpt-same", &archive, before).await;
}

#[tokio::test]
async fn checkpointed_counter_continues_after_restore_in_a_new_pod() {
    if !need_criu() {
        return;
    }
    let Some(e) = env().await else { return };
    let (_out, archive, _pc, _pod, _id, before) = checkpoint_counter(&e, "ckpt-src").await;
    let pc = e.pod("ckpt-dst");
    let pod = e.run_pod(&pc).await;
    let archive = archive.display().to_string();
    restore_and_check(&e, &pc, &pod, "ckpt-dst", &archive, before).await;
}

#[tokio::test]
async fn restored_web_server_keeps_its_tcp_listener_and_written_files() {
    if !need_criu() {
        return;
    }
    let Some(e) = env().await else { return };
    // httpd listens on 8080 and serves /www/index.html, written into its writable layer.
    let (_pod, id) = e.run_web_server("ckpt-web", 8080).await;
    let out = tempfile::tempdir().expect("out");
    let location = out.path().join("web.tar");
    checkpoint(&e, &id, &location)
        .await
        .expect("CheckpointContainer");
    let pc = e.pod("ckpt-web-dst");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("ckpt-web-dst", &["ignored"]);
    c.image = Some(cri::ImageSpec {
        image: location.display().to_string(),
        ..Default::default()
    });
    let rid = e.create(&pod, &pc, c).await.expect("CreateContainer");
    e.start(&rid).await.expect("StartContainer restores");
    // The restored listener (no new httpd was started) answers in the new pod's network.
    let r = e
        .exec_sync(
            &rid,
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"],
            30,
        )
        .await
        .expect("ExecSync");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "hello-from-pod",
        "exit {} stderr {}",
        r.exit_code,
        String::from_utf8_lossy(&r.stderr)
    );
}

#[tokio::test]
async fn a_restore_criu_cannot_do_fails_the_start_with_its_reason_and_leaves_nothing() {
    if !need_criu() {
        return;
    }
    let Some(e) = env().await else { return };
    let (out, archive, _pc, _pod, _id, _) = checkpoint_counter(&e, "ckpt-broken").await;
    // The same archive without CRIU's process tree image.
    let broken = out.path().join("broken.tar");
    {
        let mut src = tar::Archive::new(std::fs::File::open(&archive).expect("open"));
        let mut dst = tar::Builder::new(std::fs::File::create(&broken).expect("create"));
        for entry in src.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.path().expect("path").ends_with("pstree.img") {
                continue;
            }
            let header = entry.header().clone();
            dst.append(&header, &mut entry).expect("append");
        }
        dst.finish().expect("finish");
    }
    let pc = e.pod("ckpt-broken-dst");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("ckpt-broken-dst", &["ignored"]);
    c.image = Some(cri::ImageSpec {
        image: broken.display().to_string(),
        ..Default::default()
    });
    let rid = e.create(&pod, &pc, c).await.expect("CreateContainer");
    let err = e.start(&rid).await.expect_err("nothing to restore");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("criu restore failed"),
        "{}",
        err.message()
    );
    let st = e.status(&rid).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError");
    e.remove(&rid).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&rid),
        "the restored root stays mounted:\n{mounts}"
    );
    assert!(
        !e.d.root_dir.join("containers").join(&rid).exists(),
        "the container's directory (and its extracted checkpoint) remains"
    );
}

/// Pushes an OCI image made from `archive` as Kubernetes documents it (`buildah from scratch;
/// buildah add $c archive.tar /; buildah config --annotation=<annotation>=<name> $c; buildah
/// commit`): one layer holding the archive's files, the annotation on the manifest. Then pulls
/// it; its reference.
async fn push_checkpoint_image(
    e: &Env,
    archive: &Path,
    tag: &str,
    annotation: Option<(&str, &str)>,
) -> String {
    let tar = std::fs::read(archive).expect("read the archive");
    let layer = Layer::from_tar(&tar, Compression::Gzip).expect("layer");
    let mut image = ImageBuilder::new(Platform::linux_amd64()).layer(layer);
    if let Some((key, name)) = annotation {
        image = image.annotation(key, name);
    }
    let pushed = image
        .push(&e.registry, CHECKPOINT_REPOSITORY, ManifestFormat::Oci)
        .await
        .expect("push the checkpoint image");
    push_manifest(
        &e.registry,
        CHECKPOINT_REPOSITORY,
        tag,
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag the checkpoint image");
    let reference = format!("{}/{CHECKPOINT_REPOSITORY}:{tag}", e.registry.host());
    e.pull(&reference)
        .await
        .expect("PullImage of the checkpoint image");
    reference
}

/// An archive in the checkpoint layout whose process is `COUNTER` on `base_image`, with a file
/// in its writable-layer diff, but whose CRIU images are not CRIU's (on any host the restore
/// reaches CRIU and CRIU refuses it).
fn synthetic_archive(dir: &Path, base_image: &str) -> std::path::PathBuf {
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("append");
    }
    let mut diff = tar::Builder::new(Vec::new());
    add(&mut diff, "var/restored-marker", b"from the checkpoint");
    let diff = diff.into_inner().expect("diff tar");
    let config = serde_json::json!({
        "id": "0123456789abcdef",
        "name": "ckimg",
        "rootfsImageName": base_image,
        "runtime": "berth",
        "createdTime": "2026-12-07T10:00:00Z",
        "checkpointedTime": "2026-12-07T10:00:05Z",
    });
    let spec = serde_json::json!({
        "process": {
            "terminal": false,
            "args": COUNTER,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        },
    });
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, "checkpoint/", &[][..]).expect("dir");
    add(&mut b, "checkpoint/inventory.img", b"not a CRIU image");
    add(&mut b, "config.dump", config.to_string().as_bytes());
    add(&mut b, "spec.dump", spec.to_string().as_bytes());
    add(&mut b, "rootfs-diff.tar", &diff);
    add(&mut b, "deleted.files", b"[]");
    let path = dir.join("synthetic.tar");
    std::fs::write(&path, b.into_inner().expect("tar")).expect("write the archive");
    path
}

/// Nothing of a container or of an extraction remains after a failed restore was removed.
fn assert_restore_left_nothing(e: &Env, id: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(id),
        "the restored root stays mounted:\n{mounts}"
    );
    assert!(
        !e.d.root_dir.join("containers").join(id).exists(),
        "the container's directory (and its extracted checkpoint) remains"
    );
    let restore_dir = e.d.root_dir.join("checkpoint-restore");
    let left = std::fs::read_dir(&restore_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "extractions left in {}", restore_dir.display());
}

#[tokio::test]
async fn a_pulled_checkpoint_image_is_restored_and_a_failed_restore_leaves_nothing() {
    let Some(e) = env().await else { return };
    let dir = tempfile::tempdir().expect("dir");
    let archive = synthetic_archive(dir.path(), &e.image);
    let reference =
        push_checkpoint_image(&e, &archive, "synthetic", Some((CRIO_ANNOTATION, "ckimg"))).await;
    let pc = e.pod("ckimg");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("ckimg", &["ignored"]);
    c.image = Some(cri::ImageSpec {
        image: reference.clone(),
        ..Default::default()
    });
    let id = e
        .create(&pod, &pc, c)
        .await
        .expect("CreateContainer from the checkpoint image");
    // Restored, not run as an image: the checkpointed base image, the checkpoint beside the
    // container, the archive's diff in its writable layer.
    let st = e.status(&id).await;
    let shown = st
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    assert!(
        shown.contains("berth-test/busybox"),
        "the restored container shows its base image, not {shown}"
    );
    let cdir = e.d.root_dir.join("containers").join(&id);
    assert!(
        cdir.join("restore/config.dump").is_file(),
        "no checkpoint in {}",
        cdir.display()
    );
    assert!(cdir.join("restore/checkpoint/inventory.img").is_file());
    let marker = walk(&cdir)
        .into_iter()
        .find(|p| p.ends_with("var/restored-marker") && !p.starts_with(cdir.join("restore")));
    let marker = marker.expect("the archive's rootfs diff in the writable layer");
    assert_eq!(
        std::fs::read_to_string(marker).expect("marker"),
        "from the checkpoint"
    );
    // StartContainer reaches CRIU, which refuses: here for the kernel, where CRIU works for
    // the images that are not CRIU's.
    let err = e
        .start(&id)
        .await
        .expect_err("no CRIU restore of these images");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let msg = err.message();
    match criu_works() {
        _ if !which_criu() => assert!(msg.contains("CRIU is not installed"), "{msg}"),
        Ok(()) => assert!(msg.contains("criu restore failed"), "{msg}"),
        Err(why) => {
            let first = why
                .lines()
                .find_map(|l| l.split_once("): ").map(|(_, m)| m.trim()))
                .expect("criu check printed an error line");
            assert!(msg.contains("criu restore failed"), "{msg}");
            assert!(msg.contains(first), "{msg} lacks CRIU's reason `{first}`");
        }
    }
    let st = e.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError");
    e.remove(&id).await;
    assert_restore_left_nothing(&e, &id);
}

#[tokio::test]
async fn checkpoint_images_without_a_checkpoint_or_without_the_annotation_are_not_restored() {
    let Some(e) = env().await else { return };
    let pc = e.pod("ckimg-bad");
    let pod = e.run_pod(&pc).await;
    // The annotation on an image whose layer is not a checkpoint: refused, nothing left.
    let dir = tempfile::tempdir().expect("dir");
    let plain = dir.path().join("plain.tar");
    {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "hello.txt", &b"hello"[..])
            .expect("append");
        std::fs::write(&plain, b.into_inner().expect("tar")).expect("write");
    }
    let reference =
        push_checkpoint_image(&e, &plain, "not-a-checkpoint", Some((CRIU_ANNOTATION, "x"))).await;
    let mut c = e.container("ckimg-bad", &["true"]);
    c.image = Some(cri::ImageSpec {
        image: reference,
        ..Default::default()
    });
    let err = e.create(&pod, &pc, c).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("config.image.image"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("holds no checkpoint"),
        "{}",
        err.message()
    );
    let restore_dir = e.d.root_dir.join("checkpoint-restore");
    assert_eq!(
        std::fs::read_dir(&restore_dir)
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "extractions left in {}",
        restore_dir.display()
    );
    // The archive's files without the annotation: an ordinary image, run as one.
    let archive = synthetic_archive(dir.path(), &e.image);
    let reference = push_checkpoint_image(&e, &archive, "unannotated", None).await;
    let mut c = e.container("ckimg-plain", &["/bin/true"]);
    c.image = Some(cri::ImageSpec {
        image: reference.clone(),
        ..Default::default()
    });
    let id = e.create(&pod, &pc, c).await.expect("CreateContainer");
    let st = e.status(&id).await;
    assert_eq!(
        st.image.as_ref().map(|i| i.image.as_str()),
        Some(reference.as_str())
    );
    assert!(
        !e.d.root_dir
            .join("containers")
            .join(&id)
            .join("restore")
            .exists(),
        "an image without the annotation is not restored"
    );
    e.remove(&id).await;
}

#[tokio::test]
async fn checkpointed_counter_continues_after_restore_from_a_pulled_checkpoint_image() {
    if !need_criu() {
        return;
    }
    let Some(e) = env().await else { return };
    let (_out, archive, _pc, _pod, _id, before) = checkpoint_counter(&e, "ckpt-img-src").await;
    let reference = push_checkpoint_image(
        &e,
        &archive,
        "counter",
        Some((CRIO_ANNOTATION, "ckpt-img-src")),
    )
    .await;
    let pc = e.pod("ckpt-img-dst");
    let pod = e.run_pod(&pc).await;
    restore_and_check(&e, &pc, &pod, "ckpt-img-dst", &reference, before).await;
}

/// The `crictl` to test with: `$CRICTL`, the workspace's `target/cri-tools/crictl` (which
/// scripts/criu-lane.sh unpacks from the workplace's pinned build), or one on the usual paths.
fn crictl_binary() -> Option<std::path::PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CRICTL")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([
            workspace.join("target/cri-tools/crictl"),
            "/usr/local/bin/crictl".into(),
            "/usr/bin/crictl".into(),
        ])
        .find(|p| p.is_file())
}

#[tokio::test]
async fn crictl_checkpoint_exports_the_archive_or_says_why_it_cannot() {
    let Some(crictl) = crictl_binary() else {
        eprintln!(
            "skipped: no crictl (set CRICTL, or install it from ../shared/tools/cri-tools/crictl.xz)"
        );
        return;
    };
    let Some(e) = env().await else { return };
    let (_pod, id) = e.run_container("ckpt-crictl", COUNTER, |_| {}).await;
    let out = tempfile::tempdir().expect("out");
    let location = out.path().join("crictl.tar");
    // An empty config, so a stray /etc/crictl.yaml is never read.
    let config = out.path().join("crictl.yaml");
    std::fs::write(&config, "").expect("crictl config");
    let endpoint = format!("unix://{}", e.d.socket.display());
    let o = tokio::process::Command::new(&crictl)
        .arg("--config")
        .arg(&config)
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--timeout", "300s", "checkpoint"])
        .arg(format!("--export={}", location.display()))
        .arg(&id)
        .output()
        .await
        .expect("run crictl");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    match criu_works() {
        Ok(()) => {
            assert!(o.status.success(), "crictl checkpoint: {stdout}{stderr}");
            assert!(
                stdout.contains(&id),
                "crictl prints the container: {stdout}"
            );
            let names: Vec<String> =
                tar::Archive::new(std::fs::File::open(&location).expect("archive"))
                    .entries()
                    .expect("entries")
                    .map(|en| {
                        en.expect("entry")
                            .path()
                            .expect("path")
                            .display()
                            .to_string()
                    })
                    .collect();
            for want in ["config.dump", "spec.dump", "checkpoint/inventory.img"] {
                assert!(
                    names.iter().any(|n| n == want),
                    "{want} missing from {names:?}"
                );
            }
        }
        Err(why) => {
            assert!(
                !o.status.success(),
                "crictl checkpoint succeeded without CRIU: {stdout}"
            );
            assert!(stderr.contains("FailedPrecondition"), "{stderr}");
            if which_criu() {
                let first = why
                    .lines()
                    .find_map(|l| l.split_once("): ").map(|(_, m)| m.trim()))
                    .expect("criu check printed an error line");
                assert!(stderr.contains("`criu check` failed"), "{stderr}");
                assert!(
                    stderr.contains(first),
                    "{stderr} lacks CRIU's reason `{first}`"
                );
            } else {
                assert!(stderr.contains("CRIU is not installed"), "{stderr}");
            }
            assert!(!location.exists(), "no archive on failure");
            assert_eq!(
                e.status(&id).await.state,
                cri::ContainerState::ContainerRunning as i32,
                "the container keeps running"
            );
        }
    }
}
