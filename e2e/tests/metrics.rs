//! Prometheus `/metrics` end to end: a real berthd serves it over HTTP on a free port, and the
//! text is parsed with a Prometheus text-format parser. Needs root (CI runs as root).

mod obs_env;

use e2e::daemon::{Berthd, BerthdOptions};
use obs_env::env;
use prometheus_parse::{Scrape, Value};
use proto::cri;
use tonic::Code;

/// Parses a scrape.
fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of the sample `name` whose labels include `labels` (0 if there is none).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| number(&x.value))
        .sum()
}

/// A counter's, gauge's or untyped sample's value (0 for histogram buckets and summaries).
fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(_) | Value::Summary(_) => 0.0,
    }
}

async fn scrape(d: &Berthd) -> Scrape {
    parse(&d.metrics_text().await.expect("GET /metrics"))
}

const VERSION: &str = "/runtime.v1.RuntimeService/Version";

#[tokio::test]
async fn metrics_count_calls_pods_containers_pulls_and_shims() {
    let Some(e) = env().await else { return };
    let before = scrape(&e.d).await;
    assert_eq!(
        value(
            &before,
            "berth_image_pulls_total",
            &[("outcome", "success")]
        ),
        1.0,
        "the env's pull"
    );
    assert!(value(&before, "berth_image_pull_bytes_total", &[]) > 0.0);
    assert_eq!(
        value(
            &before,
            "berth_image_pull_duration_seconds_count",
            &[("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(value(&before, "berth_build_info", &[]), 1.0);

    // Calls move the counters, per method and code.
    let mut rt = e.d.runtime().await.expect("client");
    for _ in 0..3 {
        rt.version(cri::VersionRequest::default())
            .await
            .expect("Version");
    }
    let missing = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(missing.code(), Code::NotFound);
    let bad_pull = e
        .pull(&format!("{}/berth-test/nothing:here", e.registry.host()))
        .await;
    assert!(bad_pull.is_err());

    // A pod with one running and one created container.
    let pc = e.pod("metrics");
    let pod = e.run_pod(&pc).await;
    let running = e
        .run(&pod, &pc, e.container("sleeper", &["sleep", "300"]))
        .await;
    let created = e
        .create(&pod, &pc, e.container("waiting", &["true"]))
        .await
        .expect("CreateContainer");

    let after = scrape(&e.d).await;
    let calls = |s: &Scrape, method: &str, code: &str| {
        value(
            s,
            "berth_grpc_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    // The harness's readiness probe and Status calls count too: compare before and after.
    assert!(
        calls(&after, VERSION, "OK") >= calls(&before, VERSION, "OK") + 3.0,
        "Version calls counted"
    );
    assert_eq!(
        value(
            &after,
            "berth_grpc_request_duration_seconds_count",
            &[("method", VERSION), ("code", "OK")]
        ),
        calls(&after, VERSION, "OK"),
        "one latency sample per call"
    );
    assert_eq!(
        calls(
            &after,
            "/runtime.v1.RuntimeService/ContainerStatus",
            "NotFound"
        ),
        1.0
    );
    assert_eq!(
        calls(&after, "/runtime.v1.RuntimeService/RunPodSandbox", "OK"),
        1.0
    );
    assert!(value(&after, "berth_grpc_errors_total", &[("code", "NotFound")]) >= 1.0);
    assert_eq!(
        value(&after, "berth_image_pulls_total", &[("outcome", "failure")]),
        1.0
    );
    assert_eq!(value(&after, "berth_pods", &[("state", "ready")]), 1.0);
    assert_eq!(value(&after, "berth_pods", &[("state", "notready")]), 0.0);
    assert_eq!(
        value(&after, "berth_containers", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        value(&after, "berth_containers", &[("state", "created")]),
        1.0
    );
    assert_eq!(
        value(&after, "berth_containers", &[("state", "exited")]),
        0.0
    );
    assert_eq!(value(&after, "berth_shims", &[]), 1.0);
    let rss = value(&after, "berth_shim_memory_rss_bytes", &[]);
    assert!(rss > 0.0 && rss < (64 << 20) as f64, "shim RSS {rss}");
    assert_eq!(
        value(
            &after,
            "berth_container_events_total",
            &[("type", "created")]
        ),
        3.0,
        "pod + 2 containers"
    );

    // Gauges follow the stores.
    e.stop(&running).await;
    e.remove(&created).await;
    e.d.remove_pod(&pod).await;
    let end = scrape(&e.d).await;
    assert_eq!(value(&end, "berth_pods", &[("state", "ready")]), 0.0);
    assert_eq!(
        value(&end, "berth_containers", &[("state", "running")]),
        0.0
    );
    assert_eq!(value(&end, "berth_shims", &[]), 0.0);
    assert_eq!(
        value(&end, "berth_container_events_total", &[("type", "deleted")]),
        3.0
    );

    // Only /metrics is served.
    let host = e.d.metrics_host().await.expect("metrics address");
    let other = e2e::http::get(&host, "/").await.expect("GET /");
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn empty_metrics_address_turns_the_endpoint_off() {
    let d = Berthd::start_with(BerthdOptions {
        args: vec!["--metrics-address".into(), String::new()],
        ..Default::default()
    })
    .await
    .expect("berthd");
    let err = d.metrics_host().await.expect_err("no endpoint");
    assert!(err.to_string().contains("off"), "{err}");
    assert!(
        d.stderr().contains("metrics endpoint turned off"),
        "{}",
        d.stderr()
    );
}

#[tokio::test]
async fn taken_metrics_port_fails_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("berth.sock");
    let out = e2e::daemon::run_berthd(
        &[
            "--config",
            "/dev/null",
            "--socket",
            socket.to_str().expect("utf-8"),
            "--root-dir",
            dir.path().join("root").to_str().expect("utf-8"),
            "--state-dir",
            dir.path().join("state").to_str().expect("utf-8"),
            "--metrics-address",
            &addr,
        ],
        std::time::Duration::from_secs(20),
    )
    .expect("berthd exits");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("[metrics] address"),
        "{stderr}"
    );
}

const STEP_COUNT: &str = "berth_operation_step_duration_seconds_count";
const STEP_SUM: &str = "berth_operation_step_duration_seconds_sum";

#[tokio::test]
async fn each_step_of_a_pod_start_and_teardown_is_timed() {
    let Some(e) = env().await else { return };
    let pc = e.pod("steps");
    let pod = e.run_pod(&pc).await;
    e.run(&pod, &pc, e.container("sleeper", &["sleep", "300"]))
        .await;
    e.d.remove_pod(&pod).await;
    let scrape = scrape(&e.d).await;
    let expect = [
        (
            "RunPodSandbox",
            &[
                "validate",
                "files",
                "netns",
                "shim_network_cgroup",
                "record_ready",
            ][..],
        ),
        (
            "StartContainer",
            &[
                "find",
                "cgroup",
                "shim",
                "record_running",
                "shim/overlay",
                "shim/fork",
                "shim/child_prepare",
                "shim/child_namespaces",
                "shim/child_isolate",
                "shim/child_system_mounts",
                "shim/child_cri_mounts",
                "shim/child_pivot_root",
                "shim/child_credentials",
                "shim/child_exec",
            ][..],
        ),
        ("StopPodSandbox", &["kill", "network", "shim_shutdown"][..]),
        ("RemovePodSandbox", &["cgroup_and_files", "record"][..]),
    ];
    for (operation, steps) in expect {
        for name in steps {
            let count = value(
                &scrape,
                STEP_COUNT,
                &[("operation", operation), ("step", name)],
            );
            assert_eq!(count, 1.0, "{operation} {name}: one pod, one sample");
        }
    }
    // The shim's steps happen inside berthd's round trip to it.
    let round_trip = value(
        &scrape,
        STEP_SUM,
        &[("operation", "StartContainer"), ("step", "shim")],
    );
    let inside: f64 = scrape
        .samples
        .iter()
        .filter(|x| x.metric == STEP_SUM)
        .filter(|x| x.labels.get("operation") == Some("StartContainer"))
        .filter(|x| x.labels.get("step").is_some_and(|s| s.starts_with("shim/")))
        .map(|x| number(&x.value))
        .sum();
    assert!(
        inside > 0.0 && inside <= round_trip,
        "shim steps {inside} s within the round trip {round_trip} s"
    );
}
