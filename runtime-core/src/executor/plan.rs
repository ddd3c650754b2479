//! Validation and everything computed before `fork`, so that a bad spec fails without a
//! mount or a process, and the child does little besides system calls.

use std::ffi::CString;

use nix::mount::MsFlags;

use super::caps::{self, CapPlan};
use super::error::{ExecError, Failure};
use super::{ContainerProcess, ExecProcess, MountKind, Propagation, Rlimit, Rootfs};

/// `PATH` used to find `args[0]` when the container's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A validated [`ContainerProcess`] in the form the child uses.
#[derive(Debug)]
pub(super) struct Plan {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// The container's `PATH`, for finding `args[0]`.
    pub search_path: String,
    pub caps: CapPlan,
    pub rlimits: Vec<ResourceLimit>,
    /// Propagation of the container's `/`: `rshared` if any bind is, else `rslave`.
    pub root_propagation: MsFlags,
    /// The AppArmor profile the child sets for its `execve`, decided from the host's view.
    pub apparmor: Option<crate::apparmor::ExecLabel>,
}

/// A resource limit with its `RLIMIT_*` number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ResourceLimit {
    pub name: String,
    pub resource: libc::c_int,
    pub soft: u64,
    pub hard: u64,
}

/// What a container process and an exec have in common: the command, environment and
/// capabilities to exec with.
struct ProcessParts<'a> {
    id: &'a str,
    args: &'a [String],
    env: &'a [String],
    capabilities: Option<&'a [String]>,
    apparmor: Option<&'a crate::apparmor::AppArmorProfile>,
}

impl Plan {
    /// Checks `spec` and prepares what the child needs.
    pub fn new(spec: &ContainerProcess) -> Result<Plan, ExecError> {
        check_spec(spec).map_err(|reason| invalid(&spec.id, reason))?;
        let rlimits = spec
            .rlimits
            .iter()
            .map(resource_limit)
            .collect::<Result<_, _>>()
            .map_err(|reason| invalid(&spec.id, reason))?;
        let parts = ProcessParts {
            id: &spec.id,
            args: &spec.args,
            env: &spec.env,
            capabilities: spec.capabilities.as_deref(),
            apparmor: spec.apparmor.as_ref(),
        };
        Plan::build(parts, "args", rlimits, root_propagation(spec))
    }

    /// Checks an exec request and prepares what its child needs.
    pub fn for_exec(spec: &ExecProcess) -> Result<Plan, ExecError> {
        if spec.args.is_empty() {
            return Err(invalid(&spec.id, "no command (cmd is empty)".into()));
        }
        check_absolute("cwd", &spec.cwd).map_err(|reason| invalid(&spec.id, reason))?;
        let parts = ProcessParts {
            id: &spec.id,
            args: &spec.args,
            env: &spec.env,
            capabilities: spec.capabilities.as_deref(),
            apparmor: spec.apparmor.as_ref(),
        };
        Plan::build(
            parts,
            "cmd",
            Vec::new(),
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
        )
    }

    fn build(
        p: ProcessParts,
        args_name: &str,
        rlimits: Vec<ResourceLimit>,
        root_propagation: MsFlags,
    ) -> Result<Plan, ExecError> {
        let last_cap = caps::last_cap().map_err(Failure::host)?;
        let all_caps = caps::permitted().map_err(Failure::host)?;
        Ok(Plan {
            argv: c_strings(args_name, p.args).map_err(|r| invalid(p.id, r))?,
            envp: c_strings("env", p.env).map_err(|r| invalid(p.id, r))?,
            search_path: search_path(p.env),
            caps: CapPlan::new(p.capabilities, last_cap, all_caps).map_err(|r| invalid(p.id, r))?,
            rlimits,
            root_propagation,
            apparmor: match p.apparmor {
                Some(profile) => crate::apparmor::prepare(profile)
                    .map_err(|r| invalid(p.id, format!("apparmor: {r}")))?,
                None => None,
            },
        })
    }
}

fn invalid(id: &str, reason: String) -> ExecError {
    ExecError::InvalidSpec {
        id: id.to_string(),
        reason,
    }
}

fn check_spec(spec: &ContainerProcess) -> Result<(), String> {
    if spec.id.is_empty() {
        return Err("empty container ID".into());
    }
    if spec.args.is_empty() {
        return Err("no command (args is empty)".into());
    }
    check_absolute("cwd", &spec.cwd)?;
    check_rootfs(&spec.rootfs)?;
    for mount in &spec.mounts {
        check_absolute("mount destination", &mount.destination)?;
        if mount.destination.trim_matches('/').is_empty() {
            return Err("mount destination `/` is not allowed".into());
        }
        check_mount_kind(mount)?;
    }
    for path in spec.masked_paths.iter().chain(&spec.readonly_paths) {
        check_absolute("masked or read-only path", path)?;
    }
    Ok(())
}

/// Recursive read-only binds must be read-only and private (as the CRI requires); image
/// volumes need layers usable as overlayfs lower dirs.
fn check_mount_kind(mount: &super::Mount) -> Result<(), String> {
    let dest = &mount.destination;
    match &mount.kind {
        MountKind::Bind {
            recursive_readonly: true,
            readonly,
            propagation,
            ..
        } => {
            if !readonly {
                return Err(format!("mount {dest}: recursive read-only needs readonly"));
            }
            if *propagation != Propagation::Private {
                return Err(format!(
                    "mount {dest}: recursive read-only needs private propagation, not {propagation:?}"
                ));
            }
            Ok(())
        }
        MountKind::Image { layers, .. } => {
            if layers.is_empty() {
                return Err(format!("image volume {dest} has no layers"));
            }
            layers.iter().try_for_each(|dir| {
                let text = dir.to_string_lossy();
                if text.contains([',', ':']) || !dir.is_absolute() {
                    return Err(format!(
                        "image volume {dest}: layer `{text}` must be absolute and free of ',' and ':'"
                    ));
                }
                Ok(())
            })
        }
        _ => Ok(()),
    }
}

fn check_absolute(what: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(format!("{what} `{path}` is not an absolute path"));
    }
    Ok(())
}

fn check_rootfs(rootfs: &Rootfs) -> Result<(), String> {
    let Rootfs::Overlay {
        lower,
        upper,
        work,
        target,
    } = rootfs;
    if lower.is_empty() {
        return Err("overlay rootfs without lower layers".into());
    }
    for dir in lower.iter().chain([upper, work]) {
        // ',' separates overlay options and ':' lower layers.
        let text = dir.to_string_lossy();
        if text.contains([',', ':']) || !dir.is_absolute() {
            return Err(format!(
                "overlay directory `{text}` must be absolute and free of ',' and ':'"
            ));
        }
    }
    if !target.is_absolute() {
        return Err(format!(
            "rootfs target `{}` is not absolute",
            target.display()
        ));
    }
    Ok(())
}

fn c_strings(what: &str, items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{what} entry {s:?} contains NUL")))
        .collect()
}

fn search_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string()
}

fn resource_limit(limit: &Rlimit) -> Result<ResourceLimit, String> {
    let resource = match limit.resource.as_str() {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        other => return Err(format!("unknown rlimit `{other}`")),
    };
    if limit.soft > limit.hard {
        return Err(format!(
            "{}: soft limit {} above hard limit {}",
            limit.resource, limit.soft, limit.hard
        ));
    }
    Ok(ResourceLimit {
        name: limit.resource.clone(),
        resource: resource as libc::c_int,
        soft: limit.soft,
        hard: limit.hard,
    })
}

fn root_propagation(spec: &ContainerProcess) -> MsFlags {
    let shared = spec.mounts.iter().any(|m| {
        matches!(
            m.kind,
            MountKind::Bind {
                propagation: Propagation::RShared,
                ..
            }
        )
    });
    let kind = if shared {
        MsFlags::MS_SHARED
    } else {
        MsFlags::MS_SLAVE
    };
    MsFlags::MS_REC | kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_comes_from_the_container_env() {
        let env = ["A=1".to_string(), "PATH=/opt/bin:/bin".to_string()];
        assert_eq!(search_path(&env), "/opt/bin:/bin");
        assert_eq!(search_path(&[]), DEFAULT_PATH);
    }

    #[test]
    fn rlimits_are_checked() {
        let limit = |resource: &str, soft, hard| Rlimit {
            resource: resource.into(),
            soft,
            hard,
        };
        let nofile = resource_limit(&limit("RLIMIT_NOFILE", 10, 20)).expect("valid");
        assert_eq!(nofile.resource, libc::RLIMIT_NOFILE as libc::c_int);
        assert_eq!(
            resource_limit(&limit("RLIMIT_FOO", 1, 1)).unwrap_err(),
            "unknown rlimit `RLIMIT_FOO`"
        );
        assert!(resource_limit(&limit("RLIMIT_CORE", 2, 1)).is_err());
    }
}
