//! runc as the reference for the native executor: each CRI container config of a table runs
//! once under the default handler and once under runc (the `runc` RuntimeClass handler), and
//! what the process observes — `/proc/self/status` (ids, groups, capability sets,
//! NoNewPrivs, Seccomp), `/proc/self/mountinfo` (normalised), rlimits, cgroup limit files,
//! hostname, `/dev`, environment, cwd, `oom_score_adj`, exit code — must be the same, apart
//! from the differences docs/runtime-handlers.md lists as deliberate (`DELIBERATE` below).
//! `BERTH_DIFF_DUMP=1` prints every observation of both.

use std::collections::BTreeSet;
use std::path::Path;

use e2e::containers::{Env, env_with, read_log, security};
use proto::cri::{
    self, Capability, ContainerConfig, Int64Value, LinuxContainerResources, Mount,
    MountPropagation, PodSandboxConfig, SecurityProfile, security_profile::ProfileType,
};

const RUNC: &str = "/usr/bin/runc";

/// What the probe prints, section by section (`== name` lines start a section).
const PROBE: &str = r#"
echo "== status"; grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
echo "== mounts"; awk '{ opt=""; i=7; while ($i != "-") { sub(/:[0-9]+$/, "", $i); opt=opt" "$i; i++ }; fs=$(i+1); so=$(i+3); if (fs=="overlay") so="-"; print $5, $6, fs, so, opt }' /proc/self/mountinfo | sort
echo "== limits"; cat /proc/self/limits
echo "== cgroup"; for f in memory/memory.limit_in_bytes cpu/cpu.shares cpu/cpu.cfs_quota_us pids/pids.max memory.max cpu.max cpu.weight pids.max; do [ -e /sys/fs/cgroup/$f ] && echo "$f $(cat /sys/fs/cgroup/$f)"; done; ls /sys/fs/cgroup
echo "== hostname"; hostname
echo "== dev"; ls -la /dev | awk '{print $1, $3, $4, $5, $6, $NF}' | grep -v '^total'
echo "== env"; env | sort
echo "== cwd"; pwd
echo "== oom"; cat /proc/self/oom_score_adj
echo "== sysctl"; cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ping_group_range
echo "== end"
"#;

/// Differences found and kept on purpose, each explained in docs/runtime-handlers.md:
/// (section, line seen only under one handler, which handler: "native" or "runc").
const DELIBERATE: &[(&str, &str, &str)] = &[
    // The native executor remounts the tmpfs holding the cgroup hierarchies read-only; runc
    // 1.1 leaves it writable (only the hierarchies in it are read-only).
    (
        "mounts",
        "/sys/fs/cgroup ro,nosuid,nodev,noexec,relatime tmpfs",
        "native",
    ),
];

struct Case {
    name: &'static str,
    configure: fn(&mut ContainerConfig, &Path),
}

fn caps(c: &mut ContainerConfig, add: &[&str], drop: &[&str]) {
    security(c).capabilities = Some(Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
}

fn user(c: &mut ContainerConfig, uid: i64) {
    security(c).run_as_user = Some(Int64Value { value: uid });
    security(c).run_as_group = Some(Int64Value { value: uid });
}

fn host_mount(
    c: &mut ContainerConfig,
    dir: &Path,
    sub: &str,
    propagation: MountPropagation,
    readonly: bool,
) {
    let source = dir.join(sub);
    std::fs::create_dir_all(&source).expect("host dir");
    c.mounts.push(Mount {
        container_path: format!("/mnt/{sub}"),
        host_path: source.display().to_string(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    });
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "default",
            configure: |_, _| {},
        },
        Case {
            name: "non-root",
            configure: |c, _| user(c, 1000),
        },
        Case {
            name: "non-root-with-added-capability",
            configure: |c, _| {
                user(c, 1000);
                caps(c, &["NET_ADMIN"], &[]);
            },
        },
        Case {
            name: "drop-all",
            configure: |c, _| caps(c, &[], &["ALL"]),
        },
        Case {
            name: "add-all",
            configure: |c, _| caps(c, &["ALL"], &[]),
        },
        Case {
            name: "drop-some-add-some",
            configure: |c, _| caps(c, &["SYS_PTRACE", "CAP_SYS_NICE"], &["CHOWN", "NET_RAW"]),
        },
        Case {
            name: "privileged",
            configure: |c, _| security(c).privileged = true,
        },
        Case {
            name: "readonly-rootfs",
            configure: |c, _| security(c).readonly_rootfs = true,
        },
        Case {
            name: "no-new-privs-and-runtime-default-seccomp",
            configure: |c, _| {
                security(c).no_new_privs = true;
                security(c).seccomp = Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                });
            },
        },
        Case {
            name: "supplemental-groups",
            configure: |c, _| {
                user(c, 1000);
                security(c).supplemental_groups = vec![1234, 5678];
            },
        },
        Case {
            name: "masked-and-readonly-paths",
            configure: |c, _| {
                security(c).masked_paths = vec!["/proc/kcore".into(), "/etc/hostname".into()];
                security(c).readonly_paths = vec!["/proc/sys".into(), "/etc".into()];
            },
        },
        Case {
            name: "resources-and-oom-score",
            configure: |c, _| {
                c.linux.get_or_insert_with(Default::default).resources =
                    Some(LinuxContainerResources {
                        memory_limit_in_bytes: 64 << 20,
                        cpu_shares: 512,
                        cpu_period: 100_000,
                        cpu_quota: 50_000,
                        oom_score_adj: 500,
                        ..Default::default()
                    });
            },
        },
        Case {
            name: "host-path-mounts",
            configure: |c, dir| {
                host_mount(
                    c,
                    dir,
                    "private",
                    MountPropagation::PropagationPrivate,
                    false,
                );
                host_mount(
                    c,
                    dir,
                    "rslave",
                    MountPropagation::PropagationHostToContainer,
                    true,
                );
            },
        },
        Case {
            name: "localhost-seccomp",
            configure: |c, dir| {
                let profile = dir.join("seccomp.json");
                std::fs::write(
                    &profile,
                    r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
                )
                .expect("write profile");
                security(c).seccomp = Some(SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: profile.display().to_string(),
                });
            },
        },
        Case {
            name: "strict-supplemental-groups",
            configure: |c, _| {
                user(c, 1000);
                security(c).supplemental_groups = vec![4321];
                security(c).supplemental_groups_policy =
                    cri::SupplementalGroupsPolicy::Strict as i32;
            },
        },
        Case {
            name: "device",
            configure: |c, _| {
                c.devices.push(cri::Device {
                    container_path: "/dev/mynull".into(),
                    host_path: "/dev/null".into(),
                    permissions: "rw".into(),
                });
            },
        },
        Case {
            name: "env-and-workdir",
            configure: |c, _| {
                c.envs.push(cri::KeyValue {
                    key: "GREETING".into(),
                    value: "hello".into(),
                });
                c.working_dir = "/tmp".into();
            },
        },
    ]
}

/// A directory bind-mounted onto itself and made shared, unmounted on drop.
struct SharedMount(std::path::PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> SharedMount {
        use nix::mount::{MsFlags, mount};
        let none: Option<&str> = None;
        mount(Some(dir), dir, none, MsFlags::MS_BIND, none).expect("bind the test dir");
        mount(none, dir, none, MsFlags::MS_SHARED, none).expect("make it shared");
        SharedMount(dir.to_path_buf())
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The probe's output as (section, line) pairs.
fn observe_lines(log: &[String]) -> BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in log {
        if let Some(name) = line.strip_prefix("== ") {
            section = name.to_string();
            continue;
        }
        out.insert((section.clone(), line.clone()));
    }
    out
}

/// Runs the probe with the case's config: its exit code and observations, or why it did not
/// start (itself an observation to compare).
async fn observe(
    env: &Env,
    pod: &str,
    pc: &PodSandboxConfig,
    case: &Case,
    handler: &str,
    dir: &Path,
) -> (i32, BTreeSet<(String, String)>) {
    let mut c = env.container(&format!("{}-{handler}", case.name), &["sh", "-c", PROBE]);
    (case.configure)(&mut c, dir);
    let log_path = Path::new(&pc.log_directory).join(&c.log_path);
    let id = env.create(pod, pc, c).await.expect("CreateContainer");
    if let Err(e) = env.start(&id).await {
        let failed = (String::from("start"), String::from("fails"));
        eprintln!("{} under {handler}: {}", case.name, e.message());
        env.remove(&id).await;
        return (-1, BTreeSet::from([failed]));
    }
    let st = env.wait_exited(&id).await;
    let log = read_log(&log_path);
    assert!(
        log.last().map(String::as_str) == Some("== end"),
        "{} under {handler}: the probe did not finish: {log:?}",
        case.name
    );
    env.remove(&id).await;
    (st.exit_code, observe_lines(&log))
}

#[tokio::test]
async fn native_executor_and_runc_give_containers_the_same_view() {
    if !Path::new(RUNC).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs runc: {RUNC} is missing"
        );
        eprintln!("skipped: {RUNC} is not installed (apt-get install runc)");
        return;
    }
    let Some(env) = env_with(&format!("[runtimes.runc]\npath = \"{RUNC}\"\n")).await else {
        return;
    };
    let host = tempfile::tempdir().expect("host dir");
    // Bidirectional mounts need a shared source: this test's own directory, made a shared
    // mount of itself (unmounted at the end).
    let shared = SharedMount::new(host.path());
    let pod = |name: &str| {
        let mut pc = env.pod(name);
        pc.hostname = "oracle".into();
        let linux = pc.linux.get_or_insert_with(Default::default);
        linux
            .sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        linux
            .sysctls
            .insert("net.ipv4.ping_group_range".into(), "0 1000".into());
        pc
    };
    let native_pc = pod("diff-native");
    let runc_pc = pod("diff-runc");
    let native_pod = env.run_pod(&native_pc).await;
    let runc_pod = env
        .d
        .run_pod_with_handler(runc_pc.clone(), "runc")
        .await
        .expect("RunPodSandbox runc");
    let report = compare(
        &env,
        (&native_pod, &native_pc),
        (&runc_pod, &runc_pc),
        &cases(),
        host.path(),
        &[],
    )
    .await;
    env.d.remove_pod(&native_pod).await;
    env.d.remove_pod(&runc_pod).await;
    drop(shared);
    assert!(
        report.is_empty(),
        "undocumented differences between the native executor and runc:\n{}",
        report.join("\n")
    );
}

/// Runs each case in the native pod and in the runc pod: every difference not listed as
/// deliberate, and every case that does not start.
async fn compare(
    env: &Env,
    (native_pod, native_pc): (&str, &PodSandboxConfig),
    (runc_pod, runc_pc): (&str, &PodSandboxConfig),
    cases: &[Case],
    dir: &Path,
    skipped_sections: &[&str],
) -> Vec<String> {
    let mut report = Vec::new();
    for case in cases {
        let (native_code, native) = observe(env, native_pod, native_pc, case, "native", dir).await;
        let (runc_code, runc) = observe(env, runc_pod, runc_pc, case, "runc", dir).await;
        if std::env::var_os("BERTH_DIFF_DUMP").is_some() {
            eprintln!("{}: native {native:#?}\nrunc {runc:#?}", case.name);
        }
        // A config that starts under neither would compare equal: every case must start.
        for (which, seen) in [("native", &native), ("runc", &runc)] {
            if seen.contains(&("start".to_string(), "fails".to_string())) {
                report.push(format!("{}: does not start under {which}", case.name));
            }
        }
        if native_code != runc_code {
            report.push(format!(
                "{}: exit code native {native_code}, runc {runc_code}",
                case.name
            ));
        }
        for (which, only, other) in [("native", &native, &runc), ("runc", &runc, &native)] {
            for (section, line) in only.difference(other) {
                if skipped_sections.contains(&section.as_str()) {
                    continue;
                }
                let deliberate = DELIBERATE
                    .iter()
                    .any(|(s, l, w)| s == section && line.contains(l) && *w == which);
                if !deliberate {
                    report.push(format!(
                        "{}: [{section}] only under {which}: {line}",
                        case.name
                    ));
                }
            }
        }
    }
    report
}

/// The namespace options of a user namespace pod sharing its PID namespace (critest's user
/// namespace spec), for the pod and its containers.
fn userns_options() -> cri::NamespaceOption {
    let mapping = vec![cri::IdMapping {
        host_id: 320_000,
        container_id: 0,
        length: 65536,
    }];
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: mapping.clone(),
            gids: mapping,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn user_namespace_pods_give_containers_the_same_view_under_both() {
    if !Path::new(RUNC).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs runc: {RUNC} is missing"
        );
        eprintln!("skipped: {RUNC} is not installed (apt-get install runc)");
        return;
    }
    let Some(env) = env_with(&format!("[runtimes.runc]\npath = \"{RUNC}\"\n")).await else {
        return;
    };
    let host = tempfile::tempdir().expect("host dir");
    let pod = |name: &str| {
        let mut pc = env.pod(name);
        pc.hostname = "oracle".into();
        let linux = pc.linux.get_or_insert_with(Default::default);
        linux
            .sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        // No ping_group_range: the pod's namespaces are set up before the user namespace has
        // its mappings, and the kernel refuses group IDs it cannot map then.
        linux
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options = Some(userns_options());
        pc
    };
    let native_pc = pod("diff-userns-native");
    let runc_pc = pod("diff-userns-runc");
    let native_pod = env.run_pod(&native_pc).await;
    let runc_pod = env
        .d
        .run_pod_with_handler(runc_pc.clone(), "runc")
        .await
        .expect("RunPodSandbox runc");
    let cases = [
        Case {
            name: "userns-default",
            configure: |c, _| security(c).namespace_options = Some(userns_options()),
        },
        Case {
            name: "userns-non-root-with-idmapped-volume",
            configure: |c, dir| {
                security(c).namespace_options = Some(userns_options());
                user(c, 1000);
                host_mount(c, dir, "vol", MountPropagation::PropagationPrivate, false);
                let mapping = userns_options().userns_options.map(|u| u.uids);
                if let Some(m) = c.mounts.last_mut() {
                    m.uid_mappings = mapping.clone().unwrap_or_default();
                    m.gid_mappings = mapping.unwrap_or_default();
                }
            },
        },
    ];
    let report = compare(
        &env,
        (&native_pod, &native_pc),
        (&runc_pod, &runc_pc),
        &cases,
        host.path(),
        // Not compared yet: how /dev and the masks are made in a user namespace differs
        // (docs/runtime-handlers.md lists what was found).
        &["mounts", "dev"],
    )
    .await;
    env.d.remove_pod(&native_pod).await;
    env.d.remove_pod(&runc_pod).await;
    assert!(
        report.is_empty(),
        "undocumented differences between the native executor and runc in a user namespace:\n{}",
        report.join("\n")
    );
}

#[tokio::test]
async fn a_signal_gives_the_same_exit_code_under_both() {
    if !Path::new(RUNC).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs runc: {RUNC} is missing"
        );
        eprintln!("skipped: {RUNC} is not installed");
        return;
    }
    let Some(env) = env_with(&format!("[runtimes.runc]\npath = \"{RUNC}\"\n")).await else {
        return;
    };
    let mut codes = Vec::new();
    for handler in ["", "runc"] {
        let name = if handler.is_empty() {
            "native"
        } else {
            handler
        };
        let mut pc = env.pod(&format!("sig-{name}"));
        pc.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(Default::default)
            .pid = cri::NamespaceMode::Pod as i32;
        let pod = env
            .d
            .run_pod_with_handler(pc.clone(), handler)
            .await
            .expect("RunPodSandbox");
        // In the pod's shared PID namespace the shell is not PID 1, which ignores SIGTERM.
        let c = env.container("killed", &["sh", "-c", "kill -TERM $$; sleep 5"]);
        let (st, _) = env.run_to_end(&pod, &pc, c).await;
        codes.push((st.exit_code, st.reason.clone()));
        env.d.remove_pod(&pod).await;
    }
    assert_eq!(codes[0], codes[1], "native vs runc");
    assert_eq!(codes[0].0, 143, "128 + SIGTERM");
}
