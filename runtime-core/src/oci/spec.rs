//! The OCI runtime spec (`config.json`) of a container, translated from the shim's
//! `StartContainer` — the same CRI decisions the native executor gets — as containerd's CRI
//! plugin builds it (`internal/cri/server/container_create_linux.go` and
//! `internal/cri/opts/spec_linux*.go`): namespaces joining the pod's pinned ones, the standard
//! system mounts, CRI mounts with their propagation, the device cgroup, capabilities,
//! seccomp, AppArmor, masked and read-only paths, user and groups.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp,
    Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use proto::shim::{IdMapping, MountSpec, StartContainer};

/// What the translation needs besides the request, read from the host by the caller.
#[derive(Debug, Default)]
pub struct HostParts {
    /// The pod's pinned namespaces (`<ns_dir>/{net,ipc,uts,pid}`).
    pub ns_dir: PathBuf,
    /// `linux.seccomp` JSON ([`crate::seccomp::to_oci_json`]); `None`: unconfined.
    pub seccomp: Option<serde_json::Value>,
    /// The AppArmor profile to run under; `None`: unconfined.
    pub apparmor: Option<String>,
    /// Every capability the kernel knows, for privileged containers and `ALL`.
    pub all_capabilities: Vec<String>,
    /// The host's devices, for a privileged container ([`super::host_devices::list`]).
    pub devices: Vec<oci_spec::runtime::LinuxDevice>,
}

/// The OCI runtime spec for `req`; an error names what an OCI runtime handler cannot do.
pub fn build(req: &StartContainer, host: &HostParts) -> Result<Spec, String> {
    check_supported(req)?;
    let caps = if req.all_capabilities {
        &host.all_capabilities
    } else {
        &req.capabilities
    };
    let caps = capabilities(caps)?;
    let empty: HashSet<Capability> = HashSet::new();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(empty.clone())
        .ambient(empty)
        .build()
        .map_err(err("capabilities"))?;
    let user = UserBuilder::default()
        .uid(req.uid)
        .gid(req.gid)
        .additional_gids(req.additional_gids.clone())
        .build()
        .map_err(err("user"))?;
    let mut process = ProcessBuilder::default()
        .terminal(req.tty)
        .user(user)
        .args(req.args.clone())
        .env(req.env.clone())
        .cwd(PathBuf::from(&req.cwd))
        .capabilities(capabilities)
        .no_new_privileges(req.no_new_privs)
        .rlimits(Vec::new())
        .build()
        .map_err(err("process"))?;
    if req.has_oom_score_adj {
        process.set_oom_score_adj(Some(req.oom_score_adj));
    }
    process.set_apparmor_profile(host.apparmor.clone());
    let root = RootBuilder::default()
        .path(PathBuf::from(&req.rootfs))
        .readonly(req.readonly_rootfs)
        .build()
        .map_err(err("root"))?;
    let resources = LinuxResourcesBuilder::default()
        .devices(device_rules(&req.device_rules)?)
        .build()
        .map_err(err("resources"))?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(req, &host.ns_dir)?)
        .resources(resources)
        .masked_paths(req.masked_paths.clone())
        .readonly_paths(req.readonly_paths.clone())
        .rootfs_propagation(root_propagation(&req.mounts))
        .build()
        .map_err(err("linux"))?;
    linux.set_uid_mappings(id_mappings(&req.userns_uids)?);
    linux.set_gid_mappings(id_mappings(&req.userns_gids)?);
    linux.set_devices((!host.devices.is_empty()).then(|| host.devices.clone()));
    linux.set_sysctl(None);
    if !req.cgroup_path.is_empty() {
        let path = format!("/{}", req.cgroup_path.trim_start_matches('/'));
        linux.set_cgroups_path(Some(PathBuf::from(path)));
    }
    if let Some(json) = &host.seccomp {
        let seccomp: LinuxSeccomp = serde_json::from_value(json.clone())
            .map_err(|e| format!("seccomp profile as OCI linux.seccomp: {e}"))?;
        linux.set_seccomp(Some(seccomp));
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts(req)?)
        .linux(linux)
        .build()
        .map_err(err("spec"))?;
    spec.set_hostname(None);
    spec.set_annotations(None);
    Ok(spec)
}

fn err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> String {
    move |e| format!("build OCI {what}: {e}")
}

/// What the shim must have staged before the translation (the runtime is not asked to idmap
/// or to resolve inside an image), refused by name rather than ignored.
fn check_supported(req: &StartContainer) -> Result<(), String> {
    for m in &req.mounts {
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(format!(
                "idmapped mount {}: not staged (oci::idmapped::stage)",
                m.destination
            ));
        }
        if !m.image_sub_path.is_empty() {
            return Err(format!(
                "image volume {}: sub path not staged (oci::image_volumes::stage)",
                m.destination
            ));
        }
    }
    Ok(())
}

/// A user namespace's mappings as `linux.uidMappings`/`gidMappings` (runc 1.1 needs them even
/// when it joins the namespace by path: it maps the IDs it sets up with them); `None` without.
fn id_mappings(ranges: &[IdMapping]) -> Result<Option<Vec<LinuxIdMapping>>, String> {
    if ranges.is_empty() {
        return Ok(None);
    }
    ranges
        .iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container_id)
                .host_id(r.host_id)
                .size(r.length)
                .build()
                .map_err(err("id mapping"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn capabilities(names: &[String]) -> Result<HashSet<Capability>, String> {
    names
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| format!("capability `{name}` is unknown to the OCI runtime spec"))
        })
        .collect()
}

/// The pod's namespaces joined by path, a new mount namespace, and the PID namespace the
/// container asks for (new, the pod's, a target container's, or the host's); in a user
/// namespace pod also the pod's pinned user namespace, which owns its network, IPC and UTS
/// (and shared PID) namespaces, so the runtime joins it first and the others from inside it.
fn namespaces(req: &StartContainer, ns_dir: &Path) -> Result<Vec<LinuxNamespace>, String> {
    let ns = |typ, path: Option<PathBuf>| {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p).build(),
            None => b.build(),
        }
        .map_err(err("namespace"))
    };
    let mut out = Vec::new();
    if !req.userns_uids.is_empty() {
        out.push(ns(
            LinuxNamespaceType::User,
            Some(ns_dir.join(crate::shim::NS_USER)),
        )?);
    }
    out.push(ns(LinuxNamespaceType::Mount, None)?);
    match req.pid_mode {
        1 => out.push(ns(LinuxNamespaceType::Pid, Some(ns_dir.join("pid")))?),
        2 => {}
        3 => out.push(ns(
            LinuxNamespaceType::Pid,
            Some(PathBuf::from(&req.pid_ns_path)),
        )?),
        _ => out.push(ns(LinuxNamespaceType::Pid, None)?),
    }
    for (own, typ, name) in [
        (req.pod_net, LinuxNamespaceType::Network, "net"),
        (req.pod_ipc, LinuxNamespaceType::Ipc, "ipc"),
        (req.pod_uts, LinuxNamespaceType::Uts, "uts"),
    ] {
        if own {
            out.push(ns(typ, Some(ns_dir.join(name)))?);
        }
    }
    Ok(out)
}

/// `rshared` if any bind is, else `rslave` (as the native executor and containerd).
fn root_propagation(mounts: &[MountSpec]) -> String {
    if mounts.iter().any(|m| m.propagation == 2 && !m.tmpfs) {
        "rshared".into()
    } else {
        "rslave".into()
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(err("mount"))
}

/// containerd's default mounts (without `/run`, which the CRI plugin drops), the cgroup
/// mount the CRI plugin adds, then the CRI mounts in order.
fn mounts(req: &StartContainer) -> Result<Vec<Mount>, String> {
    let ro = if req.privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ];
    for m in &req.mounts {
        out.push(cri_mount(m)?);
    }
    Ok(out)
}

fn cri_mount(m: &MountSpec) -> Result<Mount, String> {
    if m.tmpfs {
        let options: Vec<&str> = m.options.split(',').filter(|o| !o.is_empty()).collect();
        return mount(&m.destination, "tmpfs", "tmpfs", &options);
    }
    match m.image_layers.as_slice() {
        [] => {}
        [only] => {
            return mount(
                &m.destination,
                "bind",
                only,
                &["rbind", "rprivate", "ro", "nosuid", "nodev"],
            );
        }
        layers => {
            let lower = format!("lowerdir={}", layers.join(":"));
            return mount(
                &m.destination,
                "overlay",
                "overlay",
                &[&lower, "ro", "nosuid", "nodev"],
            );
        }
    }
    let propagation = match m.propagation {
        1 => "rslave",
        2 => "rshared",
        _ => "rprivate",
    };
    let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
    if m.recursive_read_only {
        options.push("rro");
    }
    mount(&m.destination, "bind", &m.source, &options)
}

/// Device cgroup rules as berthd wrote them (`a`, `c 1:3 rwm`, `c *:* m`): everything
/// denied first, then each rule allowed, as containerd does.
fn device_rules(rules: &[String]) -> Result<Vec<LinuxDeviceCgroup>, String> {
    let rule = |allow: bool, typ, major, minor, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(major) = major {
            b = b.major(major);
        }
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        b.build().map_err(err("device rule"))
    };
    let mut out = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")?];
    for text in rules {
        if text.trim() == "a" {
            out.push(rule(true, LinuxDeviceType::A, None, None, "rwm")?);
            continue;
        }
        let bad =
            || format!("device rule `{text}`: expected `a` or `<c|b> <major>:<minor> <access>`");
        let mut parts = text.split_whitespace();
        let (Some(kind), Some(numbers), Some(access), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let typ = match kind {
            "c" => LinuxDeviceType::C,
            "b" => LinuxDeviceType::B,
            "a" => LinuxDeviceType::A,
            _ => return Err(bad()),
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
        let number = |n: &str| -> Result<Option<i64>, String> {
            match n {
                "*" => Ok(None),
                n => n.parse().map(Some).map_err(|_| bad()),
            }
        };
        out.push(rule(true, typ, number(major)?, number(minor)?, access)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn request() -> StartContainer {
        StartContainer {
            id: "c1".into(),
            rootfs: "/run/berth/rootfs/c1".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![5, 6],
            capabilities: vec!["CAP_CHOWN".into(), "CAP_KILL".into()],
            pod_net: true,
            pod_ipc: true,
            pod_uts: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            cgroup_path: "/berth/pod/c1".into(),
            device_rules: vec!["c 1:3 rwm".into(), "c *:* m".into()],
            ..Default::default()
        }
    }

    fn host() -> HostParts {
        HostParts {
            ns_dir: "/run/berth/ns/pod".into(),
            ..Default::default()
        }
    }

    fn to_json(req: &StartContainer) -> Value {
        serde_json::to_value(build(req, &host()).expect("spec")).expect("json")
    }

    #[test]
    fn process_carries_the_cri_user_groups_and_capabilities_and_nothing_else() {
        let v = to_json(&request());
        let p = &v["process"];
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 6]})
        );
        assert_eq!(p["args"], json!(["sh", "-c", "true"]));
        assert_eq!(p["cwd"], "/");
        let mut bounding: Vec<&str> = p["capabilities"]["bounding"]
            .as_array()
            .expect("bounding")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        bounding.sort();
        assert_eq!(bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(p["capabilities"]["inheritable"], json!([]));
        assert_eq!(p["capabilities"]["ambient"], json!([]));
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(p.get("rlimits"), Some(&json!([])));
        assert!(p.get("oomScoreAdj").is_none());
        assert!(v.get("hostname").is_none());
    }

    #[test]
    fn namespaces_join_the_pods_pinned_ones_and_the_pid_mode_decides_pid() {
        let mut req = request();
        let types = |req: &StartContainer| -> Vec<(String, Option<String>)> {
            to_json(req)["linux"]["namespaces"]
                .as_array()
                .expect("namespaces")
                .iter()
                .map(|n| {
                    (
                        n["type"].as_str().unwrap_or_default().to_string(),
                        n["path"].as_str().map(String::from),
                    )
                })
                .collect()
        };
        let ns = types(&req);
        assert!(ns.contains(&("network".into(), Some("/run/berth/ns/pod/net".into()))));
        assert!(ns.contains(&("uts".into(), Some("/run/berth/ns/pod/uts".into()))));
        assert!(ns.contains(&("pid".into(), None)));
        assert!(ns.contains(&("mount".into(), None)));
        req.pid_mode = 1;
        assert!(types(&req).contains(&("pid".into(), Some("/run/berth/ns/pod/pid".into()))));
        req.pid_mode = 2;
        assert!(!types(&req).iter().any(|(t, _)| t == "pid"));
        req.pod_net = false;
        assert!(!types(&req).iter().any(|(t, _)| t == "network"));
    }

    #[test]
    fn cri_mounts_keep_propagation_readonly_and_order() {
        let mut req = request();
        req.mounts = vec![
            MountSpec {
                destination: "/data".into(),
                source: "/srv/data".into(),
                readonly: true,
                propagation: 1,
                ..Default::default()
            },
            MountSpec {
                destination: "/shared".into(),
                source: "/srv/shared".into(),
                propagation: 2,
                ..Default::default()
            },
            MountSpec {
                destination: "/tmp".into(),
                tmpfs: true,
                options: "size=1m,noexec".into(),
                ..Default::default()
            },
        ];
        let v = to_json(&req);
        let mounts = v["mounts"].as_array().expect("mounts");
        let tail: Vec<&Value> = mounts.iter().skip(mounts.len() - 3).collect();
        assert_eq!(tail[0]["options"], json!(["rbind", "rslave", "ro"]));
        assert_eq!(tail[1]["options"], json!(["rbind", "rshared", "rw"]));
        assert_eq!(tail[2]["type"], "tmpfs");
        assert_eq!(tail[2]["options"], json!(["size=1m", "noexec"]));
        assert_eq!(v["linux"]["rootfsPropagation"], "rshared");
        let sys = mounts
            .iter()
            .find(|m| m["destination"] == "/sys")
            .expect("/sys");
        assert!(
            sys["options"]
                .as_array()
                .expect("opts")
                .contains(&json!("ro"))
        );
    }

    #[test]
    fn device_rules_deny_everything_then_allow_each_rule() {
        let v = to_json(&request());
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([
                {"allow": false, "type": "a", "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "access": "m"},
            ])
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/pod/c1");
        let mut req = request();
        req.device_rules = vec!["c x:1 rwm".into()];
        assert!(
            build(&req, &host())
                .unwrap_err()
                .contains("device rule `c x:1 rwm`")
        );
    }

    fn mapping(container_id: u32, host_id: u32, length: u32) -> proto::shim::IdMapping {
        proto::shim::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    #[test]
    fn a_user_namespace_is_joined_first_by_path_with_its_mappings() {
        let mut req = request();
        req.pid_mode = 1;
        req.userns_uids = vec![mapping(0, 100000, 65536)];
        req.userns_gids = vec![mapping(0, 200000, 1000), mapping(1000, 300000, 1)];
        let v = to_json(&req);
        let ns = v["linux"]["namespaces"].as_array().expect("namespaces");
        assert_eq!(
            ns[0],
            json!({"type": "user", "path": "/run/berth/ns/pod/user"})
        );
        assert!(ns.contains(&json!({"type": "pid", "path": "/run/berth/ns/pod/pid"})));
        assert_eq!(
            v["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}])
        );
        assert_eq!(
            v["linux"]["gidMappings"],
            json!([
                {"containerID": 0, "hostID": 200000, "size": 1000},
                {"containerID": 1000, "hostID": 300000, "size": 1}
            ])
        );
        // The process's IDs are the container's, inside the namespace.
        assert_eq!(v["process"]["user"]["uid"], 1000);
        // Without one: no user namespace and no mappings.
        let v = to_json(&request());
        assert!(
            !v["linux"]["namespaces"]
                .as_array()
                .expect("namespaces")
                .iter()
                .any(|n| n["type"] == "user")
        );
        assert!(v["linux"].get("uidMappings").is_none());
        assert!(v["linux"].get("gidMappings").is_none());
    }

    #[test]
    fn idmapped_mounts_the_shim_did_not_stage_are_refused_by_name() {
        let mut req = request();
        req.mounts = vec![MountSpec {
            destination: "/vol".into(),
            source: "/srv/vol".into(),
            uid_mappings: vec![mapping(0, 100000, 65536)],
            gid_mappings: vec![mapping(0, 100000, 65536)],
            ..Default::default()
        }];
        let e = build(&req, &host()).unwrap_err();
        assert!(e.contains("idmapped mount /vol"), "{e}");
    }

    #[test]
    fn privileged_gets_every_capability_and_writable_sys() {
        let mut req = request();
        req.privileged = true;
        req.all_capabilities = true;
        let mut host = host();
        host.all_capabilities = vec!["CAP_SYS_ADMIN".into(), "CAP_CHOWN".into()];
        let v = serde_json::to_value(build(&req, &host).expect("spec")).expect("json");
        assert_eq!(
            v["process"]["capabilities"]["effective"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let sys = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/sys")
            .cloned()
            .expect("/sys");
        assert!(
            !sys["options"]
                .as_array()
                .expect("opts")
                .contains(&json!("ro"))
        );
    }
}
