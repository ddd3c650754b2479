//! CheckpointContainer and restore (CreateContainer from a checkpoint archive) with CRIU.
//!
//! Where `criu check` fails (this project's development hosts: "vdso: Unexpected rt vDSO area
//! bounds" on Linux 6.18), berth must refuse with CRIU's own reason and leave nothing behind:
//! `checkpoint_where_criu_cannot_work_says_why_and_leaves_nothing`. The checkpoint/restore
//! tests proper need a kernel CRIU works on; `scripts/criu-lane.sh` runs them in a VM that has
//! one, with `BERTH_REQUIRE_CRIU=1` so that they fail instead of skipping there.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::containers::{Env, env, read_log};
use proto::cri;
use tonic::Code;

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
    archive: &Path,
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
        image: archive.display().to_string(),
        ..Default::default()
    });
    let log = e.log_path(pc, &c);
    let id = e
        .create(pod, pc, c)
        .await
        .expect("CreateContainer from the archive");
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
