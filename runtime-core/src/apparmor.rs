//! AppArmor for containers: checks the profile kubelet asks for (CRI `SecurityProfile`) and
//! asks the kernel to confine the container's process with it from its `execve` on.
//!
//! RuntimeDefault means the profile [`DEFAULT_PROFILE`] when the node has it loaded; berth
//! does not ship or load one itself, so on a node without it RuntimeDefault runs unconfined
//! (logged at debug level by [`validate`]). On a host without AppArmor, Unconfined and
//! RuntimeDefault have nothing to apply and Localhost profiles are refused.
//!
//! Everything is decided before the container's process is forked, from the host's view
//! ([`prepare`]): whether AppArmor is on, which profile, and a handle on the host's procfs.
//! The child writes the `exec` attribute through that handle as its first step, before it
//! joins a namespace or mounts anything, so nothing the container brings (an emptyDir over
//! `/sys/module/apparmor`, an image symlink into `/proc`, a mount over `/proc`) can turn
//! confinement off silently (CVE-2019-16884 / CVE-2025-52881 class). Any failure fails the
//! start.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

/// The AppArmor profile kubelet asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppArmorProfile {
    Unconfined,
    /// [`DEFAULT_PROFILE`] if loaded, else unconfined.
    RuntimeDefault,
    /// A profile loaded on the node, by name.
    Localhost(String),
}

impl AppArmorProfile {
    /// The profile a shim start request names (`apparmor`: 1 RuntimeDefault, 2 Localhost),
    /// if any.
    pub(crate) fn of_start(req: &proto::shim::StartContainer) -> Option<AppArmorProfile> {
        match req.apparmor {
            1 => Some(AppArmorProfile::RuntimeDefault),
            2 => Some(AppArmorProfile::Localhost(req.apparmor_profile.clone())),
            _ => None,
        }
    }
}

/// The profile RuntimeDefault maps to.
pub const DEFAULT_PROFILE: &str = "berth-default";

/// Whether the kernel has AppArmor enabled.
pub fn enabled() -> bool {
    Host::system().enabled()
}

/// Checks that the profile can be applied on this host (at container creation, so that a
/// bad profile fails the CRI call rather than the container's start).
pub fn validate(profile: &AppArmorProfile) -> Result<(), String> {
    Host::system().validate(profile)
}

/// Decides, in the host's mount namespace and before the fork, what the container's process
/// must write: `None` when there is nothing to apply (Unconfined; RuntimeDefault with AppArmor
/// off or [`DEFAULT_PROFILE`] not loaded). A Localhost profile that cannot be applied is an
/// error, as is a `/proc` that is not procfs.
pub fn prepare(profile: &AppArmorProfile) -> Result<Option<ExecLabel>, String> {
    Host::system().prepare(profile)
}

/// A profile to enter on the next `execve`, with the host's procfs to set it through.
#[derive(Debug)]
pub struct ExecLabel {
    /// The profile's name.
    name: String,
    /// `/proc` of the host, opened (and checked to be procfs) before the fork.
    proc: OwnedFd,
}

impl ExecLabel {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the calling thread's next `execve` enter the profile: `exec <name>` in a single
    /// write to the thread's `attr/apparmor/exec` (or `attr/exec` on kernels before 5.8),
    /// opened under the procfs handle and checked to be on procfs.
    ///
    /// Called first thing in the forked child; allocates only to report an error.
    pub fn apply(&self) -> Result<(), String> {
        let fail = |e: nix::Error| format!("set AppArmor profile `{}` for exec: {e}", self.name);
        let attr = self.open_exec_attr().map_err(fail)?;
        if !is_procfs(&attr) {
            return Err(format!(
                "set AppArmor profile `{}` for exec: the attr file is not on procfs",
                self.name
            ));
        }
        let mut command = [0u8; 4096];
        let len = "exec ".len() + self.name.len();
        if len > command.len() {
            return Err(fail(nix::Error::ENAMETOOLONG));
        }
        command[..5].copy_from_slice(b"exec ");
        command[5..len].copy_from_slice(self.name.as_bytes());
        match nix::unistd::write(&attr, &command[..len]) {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(fail(nix::Error::EIO)),
            Err(e) => Err(fail(e)),
        }
    }

    fn open_exec_attr(&self) -> nix::Result<OwnedFd> {
        let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let open_attr = |path: &str| openat(self.proc.as_fd(), path, flags, Mode::empty());
        match open_attr("thread-self/attr/apparmor/exec") {
            Err(nix::Error::ENOENT) => open_attr("thread-self/attr/exec"),
            result => result,
        }
    }
}

fn is_procfs(fd: &impl AsFd) -> bool {
    fstatfs(fd).is_ok_and(|fs| fs.filesystem_type() == PROC_SUPER_MAGIC)
}

/// Where the kernel exposes AppArmor; tests point it at files of their own.
struct Host<'a> {
    enabled: &'a Path,
    profiles: &'a Path,
    /// The procfs the child sets its profile through.
    proc: &'a Path,
}

impl Host<'static> {
    fn system() -> Host<'static> {
        Host {
            enabled: Path::new("/sys/module/apparmor/parameters/enabled"),
            profiles: Path::new("/sys/kernel/security/apparmor/profiles"),
            proc: Path::new("/proc"),
        }
    }
}

impl Host<'_> {
    fn enabled(&self) -> bool {
        let mut buf = [0u8; 8];
        let Ok(mut file) = File::open(self.enabled) else {
            return false;
        };
        let n = file.read(&mut buf).unwrap_or(0);
        buf[..n].trim_ascii() == b"Y"
    }

    fn validate(&self, profile: &AppArmorProfile) -> Result<(), String> {
        let enabled = self.enabled();
        match profile {
            AppArmorProfile::Unconfined => Ok(()),
            AppArmorProfile::RuntimeDefault => {
                if enabled && !self.is_loaded(DEFAULT_PROFILE).unwrap_or(false) {
                    tracing::debug!(
                        profile = DEFAULT_PROFILE,
                        "AppArmor profile not loaded; RuntimeDefault containers run unconfined"
                    );
                }
                Ok(())
            }
            AppArmorProfile::Localhost(name) => {
                check_name(name)?;
                if !enabled {
                    return Err(format!(
                        "AppArmor is not enabled on this host; profile `{name}` cannot be applied"
                    ));
                }
                match self.is_loaded(name) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "AppArmor profile `{name}` is not loaded on this host (load it with apparmor_parser)"
                    )),
                    Err(e) => Err(format!(
                        "AppArmor profile `{name}`: read the loaded profiles from {}: {e}",
                        self.profiles.display()
                    )),
                }
            }
        }
    }

    /// Whether `name` is in the kernel's list of loaded profiles (`name (mode)` lines).
    fn is_loaded(&self, name: &str) -> io::Result<bool> {
        let list = fs::read_to_string(self.profiles)?;
        Ok(list
            .lines()
            .filter_map(|line| line.rsplit_once(" ("))
            .any(|(loaded, _)| loaded == name))
    }

    /// The profile to apply, decided from this host's view (see [`prepare`]).
    fn prepare(&self, profile: &AppArmorProfile) -> Result<Option<ExecLabel>, String> {
        let name = match profile {
            AppArmorProfile::Unconfined => return Ok(None),
            AppArmorProfile::RuntimeDefault => {
                if !self.enabled() {
                    return Ok(None);
                }
                match self.is_loaded(DEFAULT_PROFILE) {
                    // Not loaded: unconfined, as `validate` logged.
                    Ok(false) => return Ok(None),
                    Ok(true) => DEFAULT_PROFILE.to_string(),
                    Err(e) => {
                        return Err(format!(
                            "AppArmor is enabled but the loaded profiles cannot be read from {}: {e}",
                            self.profiles.display()
                        ));
                    }
                }
            }
            AppArmorProfile::Localhost(name) => {
                self.validate(profile)?;
                name.clone()
            }
        };
        let proc = open(
            self.proc,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {} for AppArmor: {e}", self.proc.display()))?;
        if !is_procfs(&proc) {
            return Err(format!(
                "{} is not procfs: cannot set the AppArmor profile `{name}`",
                self.proc.display()
            ));
        }
        Ok(Some(ExecLabel { name, proc }))
    }
}

/// Names end up in a one-line kernel command.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['\n', '\0']) {
        return Err(format!("invalid AppArmor profile name {name:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct FakeHost {
        dir: tempfile::TempDir,
    }

    impl FakeHost {
        /// `enabled` is the parameter file's content (None: no AppArmor module);
        /// `profiles` the loaded-profile list (None: securityfs not mounted).
        fn new(enabled: Option<&str>, profiles: Option<&str>) -> FakeHost {
            let dir = tempfile::tempdir().unwrap();
            if let Some(enabled) = enabled {
                fs::write(dir.path().join("enabled"), enabled).unwrap();
            }
            if let Some(profiles) = profiles {
                fs::write(dir.path().join("profiles"), profiles).unwrap();
            }
            FakeHost { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// With the real `/proc` as the procfs.
        fn with<T>(&self, f: impl FnOnce(&Host) -> T) -> T {
            self.with_proc(Path::new("/proc"), f)
        }

        fn with_proc<T>(&self, proc: &Path, f: impl FnOnce(&Host) -> T) -> T {
            let (enabled, profiles) = (self.path("enabled"), self.path("profiles"));
            f(&Host {
                enabled: &enabled,
                profiles: &profiles,
                proc,
            })
        }
    }

    const LOADED: &str = "berth-default (enforce)\nmy app (complain)\n/usr/bin/x (enforce)\n";

    fn prepared(host: &Host, profile: &AppArmorProfile) -> Result<Option<String>, String> {
        host.prepare(profile)
            .map(|label| label.map(|l| l.name().to_string()))
    }

    #[test]
    fn disabled_host_accepts_unconfined_and_default_but_not_localhost() {
        for fake in [
            FakeHost::new(None, None),
            FakeHost::new(Some("N\n"), Some(LOADED)),
        ] {
            fake.with(|host| {
                assert!(!host.enabled());
                assert_eq!(host.validate(&AppArmorProfile::Unconfined), Ok(()));
                assert_eq!(host.validate(&AppArmorProfile::RuntimeDefault), Ok(()));
                let refused = "AppArmor is not enabled on this host; profile `x` cannot be applied"
                    .to_owned();
                let localhost = AppArmorProfile::Localhost("x".into());
                assert_eq!(host.validate(&localhost), Err(refused.clone()));
                // Fails closed at start too (the host may have changed since creation).
                assert_eq!(prepared(host, &localhost), Err(refused));
                assert_eq!(prepared(host, &AppArmorProfile::RuntimeDefault), Ok(None));
                assert_eq!(prepared(host, &AppArmorProfile::Unconfined), Ok(None));
            });
        }
    }

    #[test]
    fn enabled_host_requires_localhost_profiles_to_be_loaded() {
        let fake = FakeHost::new(Some("Y\n"), Some(LOADED));
        fake.with(|host| {
            assert!(host.enabled());
            for loaded in ["berth-default", "my app", "/usr/bin/x"] {
                let profile = AppArmorProfile::Localhost(loaded.into());
                assert_eq!(host.validate(&profile), Ok(()), "{loaded}");
                assert_eq!(prepared(host, &profile), Ok(Some(loaded.to_string())));
            }
            let missing = AppArmorProfile::Localhost("other".into());
            let refused =
                "AppArmor profile `other` is not loaded on this host (load it with apparmor_parser)"
                    .to_owned();
            assert_eq!(host.validate(&missing), Err(refused.clone()));
            assert_eq!(prepared(host, &missing), Err(refused));
            let bad = host.validate(&AppArmorProfile::Localhost("a\nchangehat b".into()));
            assert!(bad.unwrap_err().contains("invalid AppArmor profile name"));
            assert_eq!(
                prepared(host, &AppArmorProfile::RuntimeDefault),
                Ok(Some(DEFAULT_PROFILE.to_string()))
            );
        });
    }

    #[test]
    fn unreadable_profile_list_fails_closed_at_start() {
        let fake = FakeHost::new(Some("Y"), None);
        fake.with(|host| {
            assert_eq!(host.validate(&AppArmorProfile::RuntimeDefault), Ok(()));
            let err = host
                .validate(&AppArmorProfile::Localhost("x".into()))
                .unwrap_err();
            assert!(err.contains("read the loaded profiles"), "{err}");
            let err = prepared(host, &AppArmorProfile::RuntimeDefault).unwrap_err();
            assert!(err.contains("cannot be read"), "{err}");
        });
    }

    #[test]
    fn default_profile_not_loaded_runs_unconfined() {
        let fake = FakeHost::new(Some("Y"), Some("other (enforce)\n"));
        fake.with(|host| {
            assert_eq!(prepared(host, &AppArmorProfile::RuntimeDefault), Ok(None));
        });
    }

    #[test]
    fn a_proc_that_is_not_procfs_is_refused() {
        let fake = FakeHost::new(Some("Y"), Some(LOADED));
        let not_proc = tempfile::tempdir().unwrap();
        fs::create_dir_all(not_proc.path().join("thread-self/attr/apparmor")).unwrap();
        fs::write(not_proc.path().join("thread-self/attr/apparmor/exec"), "").unwrap();
        fake.with_proc(not_proc.path(), |host| {
            let err = prepared(host, &AppArmorProfile::Localhost("my app".into())).unwrap_err();
            assert!(err.contains("is not procfs"), "{err}");
        });
        assert_eq!(
            fs::read_to_string(not_proc.path().join("thread-self/attr/apparmor/exec")).unwrap(),
            ""
        );
    }

    #[test]
    fn this_host_validates_consistently_with_enabled() {
        let localhost = validate(&AppArmorProfile::Localhost("berth-test-missing".into()));
        assert_eq!(validate(&AppArmorProfile::Unconfined), Ok(()));
        assert_eq!(validate(&AppArmorProfile::RuntimeDefault), Ok(()));
        let message = localhost.unwrap_err();
        if enabled() {
            assert!(message.contains("not loaded"), "{message}");
        } else {
            assert_eq!(
                message,
                "AppArmor is not enabled on this host; profile `berth-test-missing` cannot be applied"
            );
            assert!(prepare(&AppArmorProfile::RuntimeDefault).unwrap().is_none());
        }
    }
}
