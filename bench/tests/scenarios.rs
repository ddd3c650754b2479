//! berth-bench's scenarios against a real berthd (the e2e harness's, debug build), a real
//! registry and real containers: each produces its figures without errors, the memory
//! accounting finds one berth-shim per pod, and the run leaves no pod behind.

use std::time::Duration;

use berth_bench::memory::HelperRules;
use berth_bench::scenario::burst::Burst;
use berth_bench::scenario::churn::Churn;
use berth_bench::scenario::{Bench, burst, churn, density, exec, pod_start};
use berth_bench::target::{Target, TargetSpec};
use berth_bench::workload::Workload;
use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::push_test_images;
use e2e::pods::TestNetwork;
use e2e::registry::Registry;
use regex::Regex;

struct Setup {
    bench: Bench,
    berthd: Berthd,
    _registry: Registry,
    _net: TestNetwork,
    _dirs: Vec<tempfile::TempDir>,
}

async fn setup() -> Setup {
    let registry = Registry::start().expect("registry");
    let image = push_test_images(&registry).await.expect("push test images");
    let image = image.get("oci").expect("oci image").reference.clone();
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let config = format!(
        "{}[registry]\ninsecure = [\"{}\"]\n",
        net.config_toml(cni.path()),
        registry.host()
    );
    let berthd = Berthd::start_with(BerthdOptions {
        config_toml: Some(config),
        ..Default::default()
    })
    .await
    .expect("berthd");
    let state = regex::escape(&berthd.state_dir.display().to_string());
    let spec = TargetSpec {
        name: Some("berth".into()),
        endpoint: berthd.socket.clone(),
        runtime_handler: String::new(),
        rules: HelperRules {
            helper: Some(Regex::new(&format!("berth-shim pod {state}$")).expect("regex")),
            sandbox: None,
        },
        daemon_pid: None,
    };
    let target = Target::connect(&spec).await.expect("connect");
    assert_eq!(
        target.daemon_pid,
        berthd.pid(),
        "daemon PID from the socket"
    );
    let logs = tempfile::tempdir().expect("log dir");
    let bench = Bench {
        targets: vec![target],
        workload: Workload {
            run_id: format!("test-{}", std::process::id()),
            image,
            cgroup_parent: format!("/berth-bench-test-{}", std::process::id()),
            log_root: logs.path().to_path_buf(),
        },
        proc_root: "/proc".into(),
        gap: Duration::ZERO,
    };
    Setup {
        bench,
        berthd,
        _registry: registry,
        _net: net,
        _dirs: vec![cni, logs],
    }
}

async fn teardown(s: &Setup) {
    let errors = s.bench.targets[0].cleanup(&s.bench.workload.run_id).await;
    assert!(errors.is_empty(), "cleanup: {errors:?}");
    s.bench.workload.remove_cgroup_parent();
    assert!(s.berthd.pod_ids().await.is_empty(), "pods left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_measure_berthd_and_leave_no_pods() {
    let s = setup().await;
    let b = &s.bench;

    let r = pod_start::run(b, 3).await.expect("pod-start");
    assert!(
        r[0].errors.is_empty(),
        "pod-start errors: {:?}",
        r[0].errors
    );
    for step in pod_start::STEPS {
        assert_eq!(r[0].samples[step].len(), 3, "samples of {step}");
    }
    // berthd's step timings, scraped from its /metrics, are in the report's notes.
    assert!(
        r[0].notes
            .iter()
            .any(|n| n.starts_with("StartContainer steps") && n.contains("inside shim: ")),
        "no StartContainer breakdown in {:?}",
        r[0].notes
    );

    let r = burst::run(
        b,
        &Burst {
            pods: 4,
            clients: vec![1, 3],
            rounds: 1,
        },
    )
    .await
    .expect("burst");
    assert!(r[0].errors.is_empty(), "burst errors: {:?}", r[0].errors);
    assert_eq!(r[0].samples[&burst::step(1)].len(), 4);
    assert_eq!(r[0].samples[&burst::step(3)].len(), 4);
    assert!(
        r[0].metrics
            .iter()
            .any(|m| m.name == burst::wall(3) && m.value.is_some()),
        "{:?}",
        r[0].metrics
    );

    let r = density::run(b, 2, Duration::from_millis(100))
        .await
        .expect("density");
    assert!(r[0].errors.is_empty(), "density errors: {:?}", r[0].errors);
    let loaded = &r[0].memory["loaded"];
    let helpers = loaded.helpers_by_command();
    assert_eq!(helpers["berth-shim"].0, 2, "{loaded:?}");
    // The shim berthd started ahead of the next pod is counted, under its own name.
    assert_eq!(helpers["berth-spare"].0, 1, "{loaded:?}");
    assert!(loaded.daemon().rss_kib > 0);

    let r = exec::run(b, 2).await.expect("exec");
    // Before streaming lands berthd answers Unimplemented, which is reported, not fatal.
    let unimplemented = r[0].errors.iter().any(|e| e.contains("Unimplemented"));
    assert!(
        unimplemented || r[0].samples["ExecSync"].len() == 2,
        "exec: {:?}",
        r[0]
    );

    let c = Churn {
        workers: 2,
        duration: Duration::from_secs(1),
        rounds: 1,
    };
    let r = churn::run(b, c).await.expect("churn");
    assert!(r[0].errors.is_empty(), "churn errors: {:?}", r[0].errors);
    assert!(!r[0].samples["pod lifecycle"].is_empty());

    teardown(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_is_cleaned_up_by_its_label() {
    let s = setup().await;
    let b = &s.bench;
    b.prepull(&[]).await.expect("pre-pull");
    // Pods left running, as when a scenario is interrupted between start and teardown.
    for n in 0..2 {
        berth_bench::workload::start_pod(&b.workload, &b.targets[0], 0, n, false)
            .await
            .expect("start pod");
    }
    assert_eq!(s.berthd.pod_ids().await.len(), 2);
    teardown(&s).await;
}
