//! berthd as a process: socket handling, config errors, shutdown, the always-on RPCs.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use e2e::daemon::{Berthd, BerthdOptions, run_berthd};
use nix::sys::signal::Signal;
use proto::cri;

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn version_reports_berth_and_cri_v1() {
    let d = Berthd::start().await.expect("start berthd");
    let v = d
        .runtime()
        .await
        .expect("client")
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn verbose_status_returns_effective_config_as_json_like_crictl_info_needs() {
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some("[network]\npod_cidr = \"10.88.42.0/24\"\n[cni]\nconf_dir = \"/nonexistent/berth-e2e\"\n".into()),
        ..Default::default()
    })
    .await
    .expect("start berthd");
    let resp = d
        .runtime()
        .await
        .expect("client")
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let conditions = resp.status.expect("status").conditions;
    let runtime = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .expect("RuntimeReady");
    assert!(runtime.status, "runtime not ready: {runtime:?}");
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(network.status, "built-in pod network is ready: {network:?}");
    // crictl info decodes every info value as JSON.
    for (key, value) in &resp.info {
        serde_json::from_str::<serde_json::Value>(value)
            .unwrap_or_else(|e| panic!("info[{key}] is not JSON ({e}): {value}"));
    }
    let config: serde_json::Value =
        serde_json::from_str(&resp.info["config"]).expect("config JSON");
    assert_eq!(config["network"]["pod_cidr"], "10.88.42.0/24");
    assert_eq!(config["socket"], d.socket.display().to_string());

    let quiet = d
        .runtime()
        .await
        .expect("client")
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(quiet.info.is_empty(), "non-verbose Status carries info");
}

#[tokio::test]
async fn runtime_config_reports_the_cgroup_driver_in_use() {
    let d = Berthd::start().await.expect("start berthd");
    let resp = d
        .runtime()
        .await
        .expect("client")
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        resp.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn socket_is_mode_0660_and_sigterm_removes_it() {
    let mut d = Berthd::start().await.expect("start berthd");
    let meta = std::fs::metadata(&d.socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let status = d
        .stop_with(Signal::SIGTERM, EXIT_TIMEOUT)
        .await
        .expect("stop");
    assert!(status.success(), "exit {status}; stderr:\n{}", d.stderr());
    assert!(!d.socket.exists(), "socket left behind after SIGTERM");
    assert!(d.stderr().contains("SIGTERM"), "{}", d.stderr());
}

#[tokio::test]
async fn sigint_shuts_down_cleanly_too() {
    let mut d = Berthd::start().await.expect("start berthd");
    let status = d
        .stop_with(Signal::SIGINT, EXIT_TIMEOUT)
        .await
        .expect("stop");
    assert!(status.success(), "exit {status}; stderr:\n{}", d.stderr());
    assert!(!d.socket.exists());
}

#[tokio::test]
async fn second_daemon_on_the_same_socket_is_refused_and_the_first_keeps_serving() {
    let first = Berthd::start().await.expect("start berthd");
    let out = run_berthd(
        &[
            "--config",
            "/dev/null",
            "--socket",
            first.socket.to_str().expect("utf-8"),
            "--root-dir",
            first.root_dir.to_str().expect("utf-8"),
            "--state-dir",
            first.state_dir.to_str().expect("utf-8"),
        ],
        EXIT_TIMEOUT,
    )
    .expect("run second berthd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another berthd"), "{stderr}");
    assert!(
        stderr.contains(&first.pid().expect("pid").to_string()),
        "names the live daemon's pid: {stderr}"
    );
    first
        .runtime()
        .await
        .expect("client")
        .version(cri::VersionRequest::default())
        .await
        .expect("first daemon still answers");
}

#[tokio::test]
async fn stale_socket_from_a_killed_daemon_is_replaced() {
    let mut first = Berthd::start().await.expect("start berthd");
    first
        .stop_with(Signal::SIGKILL, EXIT_TIMEOUT)
        .await
        .expect("kill -9");
    assert!(first.socket.exists(), "kill -9 leaves the socket behind");
    let dir = first.dir().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let sock = dir.join("berth.sock");
        let mut child = std::process::Command::new(e2e::daemon::berthd_binary()?)
            .args(["--config", "/dev/null", "--socket"])
            .arg(&sock)
            .arg("--root-dir")
            .arg(dir.join("root"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let ok = wait_for_connect(&sock, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        std::io::Result::Ok(ok)
    })
    .await
    .expect("join")
    .expect("spawn");
    assert!(out, "restarted berthd did not take over the stale socket");
}

fn wait_for_connect(sock: &std::path::Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        // A stale socket refuses connections; the new daemon's accepts them.
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn start_fails_with(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, config).expect("write config");
    let sock = dir.path().join("berth.sock");
    let out = run_berthd(
        &[
            "--config",
            file.to_str().expect("utf-8"),
            "--socket",
            sock.to_str().expect("utf-8"),
        ],
        EXIT_TIMEOUT,
    )
    .expect("run berthd");
    assert_eq!(out.status.code(), Some(2), "bad config must exit 2");
    assert!(!sock.exists(), "bad config must not create the socket");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains(file.to_str().expect("utf-8")),
        "names the file: {stderr}"
    );
    stderr
}

#[test]
fn unknown_config_key_fails_at_start_naming_file_and_key() {
    let err = start_fails_with("[streaming]\nadress = \"127.0.0.1:0\"\n");
    assert!(err.contains("unknown field `adress`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn wrong_type_in_config_fails_at_start_naming_the_key() {
    let err = start_fails_with("[log]\nlevel = 3\n");
    assert!(
        err.contains("key `log.level`") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn unparseable_pod_cidr_fails_at_start_with_the_reason() {
    let err = start_fails_with("[network]\npod_cidr = \"10.88.0.0/33\"\n");
    assert!(err.contains("key `network.pod_cidr`"), "{err}");
    assert!(err.contains("not an IPv4 CIDR"), "{err}");
}

#[test]
fn missing_named_config_file_fails_at_start() {
    let out = run_berthd(&["--config", "/nonexistent/berth.toml"], EXIT_TIMEOUT).expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/berth.toml"), "{stderr}");
}

#[test]
fn printed_default_config_is_accepted_by_check_config() {
    let out = run_berthd(&["--print-default-config"], EXIT_TIMEOUT).expect("print");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, &out.stdout).expect("write");
    let check = run_berthd(
        &["--config", file.to_str().expect("utf-8"), "--check-config"],
        EXIT_TIMEOUT,
    )
    .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("pod_cidr = \"10.88.0.0/16\""));
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let mut d = Berthd::start_with(BerthdOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    })
    .await
    .expect("start berthd");
    d.stop_with(Signal::SIGTERM, EXIT_TIMEOUT)
        .await
        .expect("stop");
    let stderr = d.stderr();
    assert!(!stderr.trim().is_empty());
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}
