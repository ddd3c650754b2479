//! Runs the community's CRI validation suite, `critest` (cri-tools), against a berthd built
//! from this tree, the way containerd and CRI-O run it in their CI: a private berthd (own
//! socket, dirs, bridge, /24 and nftables table), a private registry holding offline
//! stand-ins of every image critest pulls (built by `cri-test-images.sh`), and berthd's
//! registry mirrors pointing every public registry at it. Prints
//! `critest: N passed, M failed, K skipped` from critest's JUnit report, keeps the report, and
//! exits non-zero on any failed spec or when fewer than `--min-passed` specs passed.
//!
//! Usage: `berth-critest --critest PATH --images-script PATH [--work-dir DIR]
//! [--report-dir DIR] [--min-passed N] [--config-extra TOML] [--nri] [-- CRITEST-ARGS...]`
//! (root). `--nri` turns berthd's NRI on at a private socket and hands it to critest
//! (`-nri-socket`), which adds its 13 NRI specs, each connecting as a plugin. Specs run serially. The one spec skipped by default pulls an image by a digest published
//! upstream, which no offline image can have.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::pods::TestNetwork;
use e2e::registry::Registry;

/// Specs that cannot pass offline, skipped by name.
const SKIPPED: &str = "public image with digest should be pulled and removed";

/// The registries critest names images in; each is mirrored to the local registry.
const PUBLIC_REGISTRIES: [&str; 6] = [
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "docker.io",
    "quay.io",
    "public.ecr.aws",
];

struct Args {
    critest: PathBuf,
    images_script: PathBuf,
    work_dir: PathBuf,
    report_dir: PathBuf,
    min_passed: usize,
    config_extra: String,
    nri: bool,
    critest_args: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut critest = None;
    let mut images_script = None;
    let mut work_dir = PathBuf::from("/var/tmp/berth-cri-test-images");
    let mut report_dir = PathBuf::from("target/critest");
    let mut min_passed = 0;
    let mut config_extra = String::new();
    let mut nri = false;
    let mut critest_args = Vec::new();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--critest" => critest = Some(PathBuf::from(value()?)),
            "--images-script" => images_script = Some(PathBuf::from(value()?)),
            "--work-dir" => work_dir = PathBuf::from(value()?),
            "--report-dir" => report_dir = PathBuf::from(value()?),
            "--min-passed" => {
                min_passed = value()?.parse().map_err(|e| format!("--min-passed: {e}"))?
            }
            "--config-extra" => config_extra = value()?,
            "--nri" => nri = true,
            "--" => critest_args.extend(it.by_ref()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        critest: critest.ok_or("--critest PATH is required")?,
        images_script: images_script.ok_or("--images-script PATH is required")?,
        work_dir,
        report_dir,
        min_passed,
        config_extra,
        nri,
        critest_args,
    })
}

/// Counts of specs from a JUnit report: (passed, failed, skipped). Suite nodes
/// (`[BeforeSuite]`, …) are not specs, but a failed one counts as a failure.
fn junit_counts(xml: &str) -> (usize, usize, usize) {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in xml.split("<testcase").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or_default();
        let spec = body.trim_start().starts_with("name=\"[It]");
        // A self-closing <testcase .../> has no children: it passed.
        let open_end = body.find('>').unwrap_or(body.len());
        let children = if body[..open_end].ends_with('/') {
            ""
        } else {
            &body[open_end..]
        };
        if children.contains("<failure") || children.contains("<error") {
            failed += 1;
        } else if !spec {
            continue;
        } else if children.contains("<skipped") {
            skipped += 1;
        } else {
            passed += 1;
        }
    }
    (passed, failed, skipped)
}

/// The failed cases of a JUnit report: (name, failure text), entities decoded, each text cut
/// to `max` characters, so a CI log's tail says why a spec failed.
fn junit_failures(xml: &str, max: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for case in xml.split("<testcase").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or_default();
        let Some(at) = body.find("<failure").or_else(|| body.find("<error")) else {
            continue;
        };
        let attr = |text: &str, name: &str| {
            let key = format!("{name}=\"");
            text.find(&key).map(|i| {
                let rest = &text[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
        };
        let name = attr(body, "name").unwrap_or_default();
        let failure = &body[at..];
        let open_end = failure.find('>').unwrap_or(failure.len());
        let mut text = attr(&failure[..open_end], "message").unwrap_or_default();
        let inner = failure[open_end..].trim_start_matches('>');
        let inner = &inner[..inner.find("</").unwrap_or(inner.len())];
        if !inner.trim().is_empty() {
            text.push('\n');
            text.push_str(inner.trim());
        }
        let text: String = unescape(&text).chars().take(max).collect();
        out.push((unescape(&name), text));
    }
    out
}

/// XML's five named entities and numeric character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// berthd's NRI section serving plugins on `socket`.
fn nri_config(socket: &Path) -> String {
    format!(
        "\n[nri]\nenable = true\nsocket_path = \"{}\"\n",
        socket.display()
    )
}

fn berthd_config(net: &TestNetwork, cni: &Path, registry: &str, extra: &str) -> String {
    let mirrors: String = PUBLIC_REGISTRIES
        .iter()
        .map(|r| format!("\"{r}\" = [\"http://{registry}\"]\n"))
        .collect();
    format!(
        "{}[registry]\ninsecure = [\"{registry}\"]\n[registry.mirrors]\n{mirrors}{extra}\n",
        net.config_toml(cni)
    )
}

async fn run(args: Args) -> Result<bool, String> {
    let started = Instant::now();
    let registry = Registry::start().map_err(|e| format!("start registry: {e}"))?;
    let host = registry.host();
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| format!("create {}: {e}", args.work_dir.display()))?;
    let status = Command::new("bash")
        .arg(&args.images_script)
        .env("REGISTRY", &host)
        .env("WORK_DIR", &args.work_dir)
        .status()
        .map_err(|e| format!("run {}: {e}", args.images_script.display()))?;
    if !status.success() {
        return Err(format!("{} failed: {status}", args.images_script.display()));
    }
    eprintln!(
        "berth-critest: test images pushed to {host} ({:.0?})",
        started.elapsed()
    );

    // critest's pods name no cgroup parent, so berthd makes its default `berth/`; remove it
    // afterwards unless it was there before (an installed berth's).
    let had_default_parent = ["memory/berth", "berth"]
        .iter()
        .any(|p| Path::new("/sys/fs/cgroup").join(p).exists());
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().map_err(|e| format!("cni dir: {e}"))?;
    // NRI's socket lives beside the CNI config: private to this run, removed with it.
    let nri_socket = cni.path().join("nri").join("nri.sock");
    let mut extra = args.config_extra.clone();
    if args.nri {
        extra.push_str(&nri_config(&nri_socket));
    }
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(berthd_config(&net, cni.path(), &host, &extra)),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("start berthd: {e}"))?;

    std::fs::create_dir_all(&args.report_dir)
        .map_err(|e| format!("create {}: {e}", args.report_dir.display()))?;
    let report_dir = std::fs::canonicalize(&args.report_dir)
        .map_err(|e| format!("{}: {e}", args.report_dir.display()))?;
    let junit = report_dir.join("junit.xml");
    let _ = std::fs::remove_file(&junit);
    // An empty crictl config, so a stray /etc/crictl.yaml is never read.
    let crictl_config = d.dir().join("crictl.yaml");
    std::fs::write(&crictl_config, "").map_err(|e| format!("crictl config: {e}"))?;
    let endpoint = format!("unix://{}", d.socket.display());
    let critest_started = Instant::now();
    let status = Command::new(&args.critest)
        .arg("--config")
        .arg(&crictl_config)
        .arg("--runtime-endpoint")
        .arg(&endpoint)
        .arg("--image-endpoint")
        .arg(&endpoint)
        .arg(format!("-ginkgo.skip={SKIPPED}"))
        .arg("-ginkgo.no-color")
        .arg(format!("-ginkgo.junit-report={}", junit.display()))
        .arg(format!(
            "-ginkgo.json-report={}",
            report_dir.join("report.json").display()
        ))
        .args(if args.nri {
            vec!["-nri-socket".to_string(), nri_socket.display().to_string()]
        } else {
            Vec::new()
        })
        .args(&args.critest_args)
        .status()
        .map_err(|e| format!("run {}: {e}", args.critest.display()))?;
    let took = critest_started.elapsed();
    let xml = std::fs::read_to_string(&junit).map_err(|e| {
        format!(
            "critest wrote no report {} ({status}): {e}",
            junit.display()
        )
    })?;
    let (passed, failed, skipped) = junit_counts(&xml);
    println!(
        "berth-critest: critest took {took:.0?}; JUnit report {}",
        junit.display()
    );
    if std::env::var_os("BERTH_E2E_SHOW_LOGS").is_some() || failed > 0 {
        eprintln!("--- berthd stderr (tail) ---");
        let log = d.stderr();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }
    drop(d);
    for (name, text) in junit_failures(&xml, 3000) {
        eprintln!("--- failed: {name} ---\n{text}");
    }
    if !had_default_parent {
        e2e::pods::remove_empty_cgroup("berth");
    }
    println!("critest: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 && !status.success() {
        eprintln!("berth-critest: critest exited {status} with no failed spec in its report");
        return Ok(false);
    }
    if passed < args.min_passed {
        eprintln!(
            "berth-critest: {passed} specs passed, fewer than the {} expected",
            args.min_passed
        );
        return Ok(false);
    }
    Ok(failed == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-critest: {e}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("berth-critest: needs root (pods, cgroups and a pod network)");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("berth-critest: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_cases_are_counted_by_outcome() {
        let xml = r#"<testsuites><testsuite>
            <testcase name="[BeforeSuite]" time="0"></testcase>
            <testcase name="[It] a" time="1"></testcase>
            <testcase name="[It] b"/>
            <testcase name="[It] c"><skipped message="x"></skipped></testcase>
            <testcase name="[It] d"><failure message="boom">trace</failure></testcase>
            <testcase name="[It] e"><system-err>noise</system-err></testcase>
            </testsuite></testsuites>"#;
        assert_eq!(junit_counts(xml), (3, 1, 1));
        assert_eq!(
            junit_failures(xml, 100),
            vec![("[It] d".to_string(), "boom\ntrace".to_string())]
        );
    }

    #[test]
    fn failure_text_is_unescaped_and_cut() {
        let xml = r#"<testcase name="[It] a &amp; b"><failure message="expected &quot;x&quot; &lt;&#xA;&#65;">at x.go:1 &amp;</failure></testcase>"#;
        assert_eq!(
            junit_failures(xml, 100),
            vec![(
                "[It] a & b".to_string(),
                "expected \"x\" <\nA\nat x.go:1 &".to_string()
            )]
        );
        assert_eq!(junit_failures(xml, 4)[0].1, "expe");
        assert_eq!(unescape("a & b &bogus; &#xZZ;"), "a & b &bogus; &#xZZ;");
    }
}
