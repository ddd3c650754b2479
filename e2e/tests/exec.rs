//! ExecSync end to end: commands run inside a running container with exactly the container's
//! namespaces, cgroup, user, capabilities, seccomp and no_new_privs; exit codes, output
//! limits, timeouts and bad requests. Needs root (CI runs as root).

use std::time::{Duration, Instant};

use e2e::containers::{Env, env, security};
use proto::cri::{self, Int64Value, StopContainerRequest};
use tonic::Code;

/// Starts a pod with one container running `script` (then sleeping) and returns its ID.
async fn running(
    e: &Env,
    name: &str,
    script: &str,
    tune: impl FnOnce(&mut cri::ContainerConfig),
) -> String {
    let full = format!("{script}; exec sleep 3600");
    e.run_container(name, &["/bin/sh", "-c", &full], tune)
        .await
        .1
}

async fn sh(e: &Env, id: &str, script: &str) -> String {
    let r = e
        .exec_sync(id, &["/bin/sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// What a process sees of its own identity and confinement.
const IDENTITY: &str = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; for n in mnt pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup; hostname; ls /";

#[tokio::test]
async fn exec_runs_with_exactly_the_containers_namespaces_cgroup_and_security() {
    let Some(e) = env().await else { return };
    let id = running(
        &e,
        "same",
        &format!("( {IDENTITY} ) > /tmp/main.tmp; mv /tmp/main.tmp /tmp/main"),
        |c| {
            let sc = security(c);
            sc.run_as_user = Some(Int64Value { value: 1234 });
            sc.run_as_group = Some(Int64Value { value: 2345 });
            sc.supplemental_groups = vec![3456];
            sc.no_new_privs = true;
            sc.capabilities = Some(cri::Capability {
                drop_capabilities: vec!["NET_RAW".into(), "CHOWN".into()],
                ..Default::default()
            });
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            });
        },
    )
    .await;
    // The container wrote its view before sleeping.
    let deadline = Instant::now() + Duration::from_secs(10);
    let main = loop {
        let main = sh(&e, &id, "cat /tmp/main 2>/dev/null || true").await;
        if !main.is_empty() || Instant::now() > deadline {
            break main;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exec_view = sh(&e, &id, IDENTITY).await;
    assert_eq!(
        exec_view, main,
        "exec'd process differs from the container process"
    );
    assert!(main.contains("Uid:\t1234\t1234\t1234\t1234"), "{main}");
    assert!(main.contains("NoNewPrivs:\t1"), "{main}");
    assert!(main.contains("Seccomp:\t2"), "{main}");
    // The exec'd process is inside the container's PID namespace and sees its processes.
    let ps = sh(
        &e,
        &id,
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo self=$$",
    )
    .await;
    assert!(ps.starts_with("sleep 3600"), "{ps}");
    assert!(!ps.contains("self=1\n"), "{ps}");
}

#[tokio::test]
async fn exec_sync_reports_output_exit_codes_and_missing_commands() {
    let Some(e) = env().await else { return };
    let id = running(&e, "codes", "true", |_| {}).await;
    let r = e
        .exec_sync(&id, &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], 0)
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    // Killed by a signal: 128 + signal, as a shell reports it.
    let r = e
        .exec_sync(&id, &["/bin/sh", "-c", "kill -9 $$"], 0)
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 137);
    // A command that does not exist answers like a shell would.
    let r = e
        .exec_sync(&id, &["no-such-command"], 0)
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 127);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("no-such-command") && stderr.contains("not found"),
        "{stderr}"
    );
    let r = e
        .exec_sync(&id, &["/etc/passwd"], 0)
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 126, "{}", String::from_utf8_lossy(&r.stderr));
    // The environment and working directory are the container's.
    let r = e
        .exec_sync(&id, &["/bin/sh", "-c", "echo $PATH; pwd"], 0)
        .await
        .expect("ExecSync");
    assert!(String::from_utf8_lossy(&r.stdout).contains("/bin"), "{r:?}");
}

#[tokio::test]
async fn exec_sync_caps_output_and_kills_on_timeout() {
    let Some(e) = env().await else { return };
    let id = running(&e, "limits", "true", |_| {}).await;
    let r = e
        .exec_sync(
            &id,
            &["/bin/sh", "-c", "head -c 20000000 /dev/zero; echo done >&2"],
            30,
        )
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 0);
    assert_eq!(
        r.stdout.len() + r.stderr.len(),
        (16 << 20) - (64 << 10),
        "output is trimmed to fit the 16 MiB gRPC message limit"
    );
    assert_eq!(r.stderr, b"done\n", "the smaller stream is kept whole");

    let started = Instant::now();
    let err = e
        .exec_sync(
            &id,
            &["/bin/sh", "-c", "echo $$ > /tmp/victim; exec sleep 60"],
            1,
        )
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timed out"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The timed-out command was killed.
    let victim = sh(&e, &id, "cat /tmp/victim").await;
    let alive = sh(
        &e,
        &id,
        &format!("test -e /proc/{} && echo alive || echo gone", victim.trim()),
    )
    .await;
    assert_eq!(alive.trim(), "gone");
}

#[tokio::test]
async fn exec_sync_rejects_bad_requests_and_stopped_containers() {
    let Some(e) = env().await else { return };
    let id = running(&e, "bad", "true", |_| {}).await;
    let err = e.exec_sync(&id, &[], 0).await.expect_err("empty cmd");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{err:?}");
    let err = e
        .exec_sync(&id, &["true"], -1)
        .await
        .expect_err("negative timeout");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = e.exec_sync("", &["true"], 0).await.expect_err("no id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = e
        .exec_sync("0123456789abcdef", &["true"], 0)
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    e.d.runtime()
        .await
        .expect("client")
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
    let err = e.exec_sync(&id, &["true"], 0).await.expect_err("stopped");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{err:?}");
}
