//! AppArmor for containers: checks the profile kubelet asks for (CRI `SecurityProfile`) and
//! asks the kernel to confine the container's process with it from its `execve` on.
//!
//! RuntimeDefault means the profile [`DEFAULT_PROFILE`] when the node has it loaded; berth
//! does not ship or load one itself, so on a node without it RuntimeDefault runs unconfined
//! (logged at debug level by [`validate`]). On a host without AppArmor, Unconfined and
//! RuntimeDefault have nothing to apply and Localhost profiles are refused.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// The AppArmor profile kubelet asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppArmorProfile {
    Unconfined,
    /// [`DEFAULT_PROFILE`] if loaded, else unconfined.
    RuntimeDefault,
    /// A profile loaded on the node, by name.
    Localhost(String),
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

/// Makes the calling thread's next `execve` enter the profile (`exec <name>` to the thread's
/// `attr/apparmor/exec`, or `attr/exec` on kernels before 5.8). A no-op for Unconfined, when
/// AppArmor is disabled, and for RuntimeDefault when [`DEFAULT_PROFILE`] is not loaded.
///
/// Called in the container's process before `execve`, while `/proc` is mounted; allocates
/// only to report an error.
pub fn apply_on_exec(profile: &AppArmorProfile) -> Result<(), String> {
    Host::system().apply_on_exec(profile)
}

/// Where the kernel exposes AppArmor; tests point it at files of their own.
struct Host<'a> {
    enabled: &'a Path,
    profiles: &'a Path,
    /// Tried in order; the first that exists is written.
    exec_attrs: [&'a Path; 2],
}

impl Host<'static> {
    fn system() -> Host<'static> {
        Host {
            enabled: Path::new("/sys/module/apparmor/parameters/enabled"),
            profiles: Path::new("/sys/kernel/security/apparmor/profiles"),
            exec_attrs: [
                Path::new("/proc/thread-self/attr/apparmor/exec"),
                Path::new("/proc/thread-self/attr/exec"),
            ],
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

    fn apply_on_exec(&self, profile: &AppArmorProfile) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        match profile {
            AppArmorProfile::Unconfined => Ok(()),
            AppArmorProfile::RuntimeDefault => match self.write_exec(DEFAULT_PROFILE) {
                // Not loaded: unconfined, as `validate` logged.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                result => result.map_err(|e| exec_error(DEFAULT_PROFILE, e)),
            },
            AppArmorProfile::Localhost(name) => {
                check_name(name)?;
                self.write_exec(name).map_err(|e| exec_error(name, e))
            }
        }
    }

    /// Writes `exec <name>` in a single write, as the kernel requires.
    fn write_exec(&self, name: &str) -> io::Result<()> {
        let mut command = [0u8; 4096];
        let len = "exec ".len() + name.len();
        if len > command.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        command[..5].copy_from_slice(b"exec ");
        command[5..len].copy_from_slice(name.as_bytes());
        let mut attr = self.open_exec_attr()?;
        let written = attr.write(&command[..len])?;
        if written != len {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        Ok(())
    }

    fn open_exec_attr(&self) -> io::Result<File> {
        let [apparmor_attr, legacy_attr] = self.exec_attrs;
        match OpenOptions::new().write(true).open(apparmor_attr) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                OpenOptions::new().write(true).open(legacy_attr)
            }
            result => result,
        }
    }
}

/// Names end up in a one-line kernel command.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['\n', '\0']) {
        return Err(format!("invalid AppArmor profile name {name:?}"));
    }
    Ok(())
}

fn exec_error(name: &str, error: io::Error) -> String {
    format!("set AppArmor profile `{name}` for exec: {error}")
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
            fs::write(dir.path().join("exec"), "").unwrap();
            FakeHost { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn with<T>(&self, f: impl FnOnce(&Host) -> T) -> T {
            let (enabled, profiles) = (self.path("enabled"), self.path("profiles"));
            let (apparmor_attr, exec) = (self.path("apparmor-exec"), self.path("exec"));
            f(&Host {
                enabled: &enabled,
                profiles: &profiles,
                exec_attrs: [&apparmor_attr, &exec],
            })
        }

        fn exec_attr(&self) -> String {
            fs::read_to_string(self.path("exec")).unwrap()
        }
    }

    const LOADED: &str = "berth-default (enforce)\nmy app (complain)\n/usr/bin/x (enforce)\n";

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
                assert_eq!(
                    host.validate(&AppArmorProfile::Localhost("x".into())),
                    Err(
                        "AppArmor is not enabled on this host; profile `x` cannot be applied"
                            .to_owned()
                    )
                );
                let localhost = AppArmorProfile::Localhost("berth-default".into());
                assert_eq!(host.apply_on_exec(&localhost), Ok(()));
            });
            assert_eq!(fake.exec_attr(), "");
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
            }
            let missing = host.validate(&AppArmorProfile::Localhost("other".into()));
            assert_eq!(
                missing,
                Err(
                    "AppArmor profile `other` is not loaded on this host (load it with apparmor_parser)"
                        .to_owned()
                )
            );
            let bad = host.validate(&AppArmorProfile::Localhost("a\nchangehat b".into()));
            assert!(bad.unwrap_err().contains("invalid AppArmor profile name"));
        });
    }

    #[test]
    fn unreadable_profile_list_is_reported_for_localhost_only() {
        let fake = FakeHost::new(Some("Y"), None);
        fake.with(|host| {
            assert_eq!(host.validate(&AppArmorProfile::RuntimeDefault), Ok(()));
            let err = host
                .validate(&AppArmorProfile::Localhost("x".into()))
                .unwrap_err();
            assert!(err.contains("read the loaded profiles"), "{err}");
        });
    }

    #[test]
    fn apply_writes_one_exec_command_to_the_legacy_attr_when_needed() {
        let fake = FakeHost::new(Some("Y"), Some(LOADED));
        fake.with(|host| {
            let profile = AppArmorProfile::Localhost("my app".into());
            assert_eq!(host.apply_on_exec(&profile), Ok(()));
        });
        assert_eq!(fake.exec_attr(), "exec my app");
    }

    #[test]
    fn apply_prefers_the_apparmor_attr_and_skips_unconfined() {
        let fake = FakeHost::new(Some("Y"), Some(LOADED));
        fs::write(fake.path("apparmor-exec"), "").unwrap();
        fake.with(|host| {
            assert_eq!(host.apply_on_exec(&AppArmorProfile::Unconfined), Ok(()));
            assert_eq!(host.apply_on_exec(&AppArmorProfile::RuntimeDefault), Ok(()));
        });
        assert_eq!(
            fs::read_to_string(fake.path("apparmor-exec")).unwrap(),
            "exec berth-default"
        );
        assert_eq!(fake.exec_attr(), "");
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
            assert_eq!(apply_on_exec(&AppArmorProfile::RuntimeDefault), Ok(()));
        }
    }
}
