//! Seccomp for containers: the CRI's `SecurityProfile` (RuntimeDefault, Unconfined,
//! Localhost OCI JSON) compiled to a BPF filter, installed by the container's process just
//! before `execve`.
//!
//! berth builds the BPF itself (`compile.rs` documents the program) instead of using
//! libseccomp or rust-vmm's seccompiler: OCI profiles give different actions to different
//! syscalls and argument values, which seccompiler's filters (one match action each) cannot
//! express in one program, and its installer always sets `no_new_privs`, which a container
//! that may escalate privileges must not get.
//!
//! ```no_run
//! use runtime_core::seccomp::{self, SeccompProfile};
//! // In the runtime, before forking the container's process:
//! let filter = seccomp::compile(&SeccompProfile::RuntimeDefault)?;
//! // In the container's process, last thing before execve:
//! if let Some(filter) = &filter {
//!     seccomp::install(filter)?;
//! }
//! # Ok::<(), seccomp::SeccompError>(())
//! ```

mod arch;
mod compile;
mod default;
mod oci_export;
mod profile;
mod syscall_table;

use std::io;
use std::path::{Path, PathBuf};

pub use arch::Arch;
pub use oci_export::to_oci_json;

use compile::Instruction;

/// The seccomp profile kubelet asks for (CRI `SecurityProfile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeccompProfile {
    /// No filter.
    Unconfined,
    /// berth's default profile, Docker's default rendered for the CRI's default capabilities
    /// (see `default.rs` for what it allows and what it simplifies).
    RuntimeDefault,
    /// An OCI `linux.seccomp` JSON file on the node (absolute path).
    Localhost(PathBuf),
}

/// A compiled BPF program for the host architecture, ready for [`install`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompFilter {
    program: Vec<Instruction>,
    flags: libc::c_ulong,
}

impl SeccompFilter {
    /// Number of BPF instructions (the kernel accepts up to 4096).
    pub fn instruction_count(&self) -> usize {
        self.program.len()
    }
}

/// Why a profile could not be compiled or a filter installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {path}: {source}", path = path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("seccomp profile {path}: a Localhost profile path must be absolute", path = path.display())]
    RelativePath { path: PathBuf },
    #[error("seccomp profile {origin}: not a valid OCI seccomp profile: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("seccomp profile {origin}: {field}: unknown action `{action}`")]
    UnknownAction {
        origin: String,
        field: String,
        action: String,
    },
    #[error("seccomp profile {origin}: {field}: unknown operator `{op}`")]
    UnknownOperator {
        origin: String,
        field: String,
        op: String,
    },
    #[error("seccomp profile {origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("seccomp profile {origin}: architectures {listed:?} do not include this host's {host}")]
    ArchitectureExcluded {
        origin: String,
        host: &'static str,
        listed: Vec<String>,
    },
    #[error("seccomp filters are not supported on {0}")]
    UnsupportedArchitecture(&'static str),
    #[error(
        "seccomp profile {origin}: the filter needs {instructions} BPF instructions, more than the kernel's 4096"
    )]
    TooLarge { origin: String, instructions: usize },
    #[error(
        "install seccomp filter: permission denied (the process needs no_new_privs or CAP_SYS_ADMIN)"
    )]
    NotPermitted,
    #[error("install seccomp filter: thread {tid} of the process could not be synchronized")]
    ThreadSync { tid: i64 },
    #[error("install seccomp filter: {0}")]
    Install(#[source] io::Error),
}

/// Compiles the profile for the host architecture; `None` for Unconfined.
pub fn compile(profile: &SeccompProfile) -> Result<Option<SeccompFilter>, SeccompError> {
    match profile {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => {
            build(&default::runtime_default(), "RuntimeDefault", false).map(Some)
        }
        SeccompProfile::Localhost(path) => compile_localhost(path),
    }
}

/// Compiles an OCI runtime-spec `linux.seccomp` profile for the host architecture; `None` if
/// it filters nothing (default action SCMP_ACT_ALLOW and no rule with another action).
///
/// Rules apply in order, the first match deciding; syscall names the host architecture does
/// not have are skipped, as libseccomp does. SCMP_ACT_TRACE is compiled as such: with no
/// tracer attached (berth attaches none) the kernel fails the syscall with ENOSYS.
pub fn compile_oci_json(json: &[u8]) -> Result<Option<SeccompFilter>, SeccompError> {
    compile_json(json, "(inline JSON)")
}

fn compile_localhost(path: &Path) -> Result<Option<SeccompFilter>, SeccompError> {
    if !path.is_absolute() {
        return Err(SeccompError::RelativePath {
            path: path.to_owned(),
        });
    }
    let json = std::fs::read(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    compile_json(&json, &path.display().to_string())
}

fn compile_json(json: &[u8], origin: &str) -> Result<Option<SeccompFilter>, SeccompError> {
    let policy = profile::parse_oci(json, origin, host_arch()?)?;
    let filters_nothing = policy.default_action == profile::Action::Allow
        && policy
            .rules
            .iter()
            .all(|rule| rule.action == profile::Action::Allow);
    if filters_nothing {
        return Ok(None);
    }
    build(&policy, origin, true).map(Some)
}

fn host_arch() -> Result<Arch, SeccompError> {
    Arch::host().ok_or(SeccompError::UnsupportedArchitecture(
        std::env::consts::ARCH,
    ))
}

fn build(
    policy: &profile::Policy,
    origin: &str,
    log_unknown: bool,
) -> Result<SeccompFilter, SeccompError> {
    let arch = host_arch()?;
    let (program, unknown) = compile::compile(policy, arch, origin)?;
    if log_unknown && !unknown.is_empty() {
        tracing::debug!(
            profile = origin,
            arch = arch.scmp_name(),
            syscalls = ?unknown,
            "seccomp rules for syscalls this architecture lacks were skipped"
        );
    }
    Ok(SeccompFilter {
        program,
        flags: policy.flags,
    })
}

/// Installs the filter on the calling thread, and on the process's other threads too
/// (SECCOMP_FILTER_FLAG_TSYNC) where the kernel allows it. It stays for the thread's
/// lifetime, across `execve`, and is inherited by children.
///
/// The kernel requires the caller to have set `no_new_privs` or to hold CAP_SYS_ADMIN: a
/// container process without `no_new_privs` must install before dropping capabilities, and
/// every syscall it makes afterwards (capset, setuid, execve...) must pass the filter.
/// Allocation-free, so it is safe between `fork` and `execve`.
pub fn install(filter: &SeccompFilter) -> Result<(), SeccompError> {
    match seccomp_set_mode_filter(filter, filter.flags | libc::SECCOMP_FILTER_FLAG_TSYNC) {
        // Kernels without TSYNC (before 3.17) refuse the flag.
        Err(SeccompError::Install(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
            seccomp_set_mode_filter(filter, filter.flags)
        }
        result => result,
    }
}

fn seccomp_set_mode_filter(
    filter: &SeccompFilter,
    flags: libc::c_ulong,
) -> Result<(), SeccompError> {
    let program = libc::sock_fprog {
        // `compile` keeps programs within BPF_MAXINSNS.
        len: filter.program.len() as u16,
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `Instruction` has `sock_filter`'s layout; the kernel copies the program during
    // the call and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &program as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        tid if tid > 0 => Err(SeccompError::ThreadSync { tid }),
        _ => {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EACCES) => Err(SeccompError::NotPermitted),
                _ => Err(SeccompError::Install(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_has_sock_filter_layout() {
        assert_eq!(
            std::mem::size_of::<Instruction>(),
            std::mem::size_of::<libc::sock_filter>()
        );
        assert_eq!(
            std::mem::align_of::<Instruction>(),
            std::mem::align_of::<libc::sock_filter>()
        );
    }

    #[test]
    fn filters_can_move_to_the_forked_child() {
        fn clone_and_send<T: Clone + Send + Sync>() {}
        clone_and_send::<SeccompFilter>();
    }

    #[test]
    fn allow_everything_compiles_to_no_filter() {
        let json = br#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(compile_oci_json(json).unwrap(), None);
        let json = br#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_LOG"}]}"#;
        assert!(compile_oci_json(json).unwrap().is_some());
    }

    #[test]
    fn localhost_errors_name_the_path() {
        let relative = compile(&SeccompProfile::Localhost("profiles/x.json".into()));
        assert_eq!(
            relative.unwrap_err().to_string(),
            "seccomp profile profiles/x.json: a Localhost profile path must be absolute"
        );
        let missing = compile(&SeccompProfile::Localhost("/nonexistent/berth.json".into()));
        let message = missing.unwrap_err().to_string();
        assert!(
            message.starts_with("seccomp profile /nonexistent/berth.json: No such file"),
            "{message}"
        );
    }
}
