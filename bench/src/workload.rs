//! The pods and containers every scenario creates: one busybox container per pod, the same
//! configs on every runtime, labelled with the run's ID so cleanup finds them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::cri::{
    ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, LinuxContainerConfig,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

use crate::stats::ms;
use crate::target::{NAMESPACE, RUN_LABEL, Target};

/// How long the first log line may take to appear.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared settings of a run's pods.
#[derive(Debug)]
pub struct Workload {
    /// Unique per invocation: `<pid>-<unix seconds>`.
    pub run_id: String,
    /// The container image (busybox with `sh` and `sleep`).
    pub image: String,
    /// Pod cgroup parent (cgroupfs path), removed when the run ends.
    pub cgroup_parent: String,
    /// Root of the pods' log directories.
    pub log_root: PathBuf,
}

impl Workload {
    /// The config of pod number `n` on target `target` (its log directory is created here,
    /// as kubelet creates it before RunPodSandbox).
    pub fn pod_config(&self, target: usize, n: usize) -> std::io::Result<PodSandboxConfig> {
        let name = format!("bench-t{target}-{n}");
        let log_directory = self.log_root.join(&name);
        std::fs::create_dir_all(&log_directory)?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("{}-{name}", self.run_id),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: log_directory.display().to_string(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["berth-bench.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The pod's one container: prints a line (to time log readiness), then sleeps.
    pub fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: ["/bin/sh", "-c", "echo ready; exec sleep 3600"]
                .map(String::from)
                .to_vec(),
            log_path: "app.log".into(),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// Removes the run's (empty) cgroup parent from every hierarchy, deepest first.
    pub fn remove_cgroup_parent(&self) {
        let rel = self.cgroup_parent.trim_matches('/');
        if rel.is_empty() {
            return;
        }
        let base = Path::new("/sys/fs/cgroup");
        let mut roots = vec![base.join(rel)];
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            roots.push(entry.path().join(rel));
        }
        for root in roots {
            remove_empty_tree(&root);
        }
    }
}

fn remove_empty_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Timings of one pod brought up as kubelet does, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct PodTimings {
    pub run: f64,
    pub create: f64,
    pub start: f64,
    /// From StartContainer's return until the container's first log line is on disk.
    pub first_log: Option<f64>,
}

impl PodTimings {
    /// RunPodSandbox + CreateContainer + StartContainer.
    pub fn total(&self) -> f64 {
        self.run + self.create + self.start
    }
}

/// A pod that is up, with its container.
#[derive(Debug, Clone)]
pub struct RunningPod {
    pub pod_id: String,
    pub container_id: String,
    pub timings: PodTimings,
}

/// RunPodSandbox + CreateContainer + StartContainer of pod `n` on `target` (index `t`),
/// then, if `wait_log`, waits for the first log line. A pod that fails halfway is removed.
pub async fn start_pod(
    w: &Workload,
    target: &Target,
    t: usize,
    n: usize,
    wait_log: bool,
) -> Result<RunningPod, String> {
    let config = w
        .pod_config(t, n)
        .map_err(|e| format!("create log directory: {e}"))?;
    let t0 = Instant::now();
    let pod_id = target.run_pod(config.clone()).await?;
    let t1 = Instant::now();
    let started = async {
        let container_id = target
            .create_container(&pod_id, &config, w.container_config())
            .await?;
        let t2 = Instant::now();
        target.start_container(&container_id).await?;
        Ok::<_, String>((container_id, t2, Instant::now()))
    }
    .await;
    let (container_id, t2, t3) = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = target.remove_pod(&pod_id).await;
            return Err(e);
        }
    };
    let first_log = if wait_log {
        let log = Path::new(&config.log_directory).join("app.log");
        wait_for_content(&log, LOG_TIMEOUT)
            .await
            .map(|()| ms(t3.elapsed()))
    } else {
        None
    };
    Ok(RunningPod {
        pod_id,
        container_id,
        timings: PodTimings {
            run: ms(t1 - t0),
            create: ms(t2 - t1),
            start: ms(t3 - t2),
            first_log,
        },
    })
}

/// Waits until `file` is non-empty; `None` on timeout.
async fn wait_for_content(file: &Path, timeout: Duration) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::metadata(file).is_ok_and(|m| m.len() > 0) {
            return Some(());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    None
}

/// Target order for iteration `i`: rotated each iteration so no runtime always goes first.
pub fn interleave(i: usize, targets: usize) -> impl Iterator<Item = usize> {
    (0..targets).map(move |k| (i + k) % targets.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_alternates_who_goes_first() {
        let orders: Vec<Vec<usize>> = (0..3).map(|i| interleave(i, 2).collect()).collect();
        assert_eq!(orders, vec![vec![0, 1], vec![1, 0], vec![0, 1]]);
        assert_eq!(interleave(5, 1).collect::<Vec<_>>(), vec![0]);
    }
}
