//! The overlay rootfs on the host side: mounted by the shim before `fork`, so it can always be
//! removed from the host, and reused when a container restarts.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;

use super::Rootfs;
use super::error::{Context, ExecError, Failure};
use super::image_mount::fd_as_path;
use crate::mount_api;
use crate::userns::IdMap;

const MOUNTINFO: &str = "/proc/thread-self/mountinfo";
/// mount(2) copies one page of options, NUL included.
const MAX_OPTIONS: usize = 4095;
/// Upper bound on mounts stacked at one rootfs target that `cleanup_rootfs` peels off.
const MAX_STACKED: usize = 16;

/// Mounts `rootfs` at its target unless an overlay is already mounted there. With `userns`
/// (the container's user namespace) the layers are idmapped with its mappings and the upper
/// layer's root is owned by the namespace's root, so the container sees its image as in a
/// normal container.
pub(super) fn mount(rootfs: &Rootfs, userns: Option<(&IdMap, &OwnedFd)>) -> Result<(), Failure> {
    let Rootfs::Overlay {
        lower,
        upper,
        work,
        target,
    } = rootfs;
    fs::create_dir_all(target)
        .context(|| format!("create rootfs mountpoint {}", target.display()))?;
    if mounted_fstype(target)?.as_deref() == Some("overlay") {
        tracing::debug!(target = %target.display(), "reusing mounted overlay rootfs");
        return Ok(());
    }
    let lowers = lower.iter().map(|d| ("lowerdir", d));
    for (what, dir) in lowers.chain([("upperdir", upper), ("workdir", work)]) {
        fs::metadata(dir).context(|| format!("overlay {what} {}", dir.display()))?;
    }
    let Some((map, ns)) = userns else {
        let data = checked_options(target, lower, upper, work)?;
        return mount_overlay(target, &data);
    };
    chown_upper_root(rootfs, map)?;
    let known = LayerMode::known();
    if known != Some(LayerMode::Attached) {
        let trees = idmapped_lowers(lower, ns)?;
        let paths: Vec<PathBuf> = trees.iter().map(fd_as_path).collect();
        let data = checked_options(target, &paths, upper, work)?;
        let detached = mount_overlay(target, &data);
        match after_detached(known, detached.as_ref().err().and_then(|f| f.errno)) {
            Next::Done => {
                LayerMode::remember(LayerMode::Detached);
                return detached;
            }
            Next::Fail => return detached,
            Next::TryAttached => tracing::info!(
                "overlayfs refuses detached idmapped layers (it takes them from Linux 6.15): \
                 attaching them in a private mount namespace instead"
            ),
        }
    }
    let data = checked_options(target, lower, upper, work)?;
    match mount_attached(target, lower, ns, &data) {
        Ok(()) => {
            LayerMode::remember(LayerMode::Attached);
            Ok(())
        }
        Err(f) if f.errno == Some(Errno::EINVAL) => Err(Failure::plain(
            format!(
                "{}: this kernel's overlayfs takes no idmapped layers, neither detached (Linux \
                 6.15+) nor attached (Linux 5.19+, on a filesystem that supports idmapped \
                 mounts: ext4, xfs, btrfs; tmpfs from Linux 6.3)",
                f.message
            ),
            f.errno,
        )),
        Err(f) => Err(f),
    }
}

/// How the running kernel's overlayfs takes idmapped layers, learnt from the first mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerMode {
    /// As detached mounts (`open_tree` fds named by `/proc/self/fd/N`): Linux 6.15+.
    /// Before, overlayfs clones each layer with `clone_private_mount`, which refuses a mount
    /// outside the caller's mount namespace with EINVAL.
    Detached,
    /// Only attached in the mounting task's mount namespace (containerd 2.x attaches them on
    /// every kernel): Linux 5.19 to 6.14.
    Attached,
}

/// What the running kernel was found to support: 0 not known yet, else `LayerMode as u8 + 1`.
static LAYER_MODE: AtomicU8 = AtomicU8::new(0);

impl LayerMode {
    fn known() -> Option<LayerMode> {
        match LAYER_MODE.load(Ordering::Relaxed) {
            1 => Some(LayerMode::Detached),
            2 => Some(LayerMode::Attached),
            _ => None,
        }
    }

    fn remember(mode: LayerMode) {
        let value = match mode {
            LayerMode::Detached => 1,
            LayerMode::Attached => 2,
        };
        LAYER_MODE.store(value, Ordering::Relaxed);
    }
}

/// What follows an overlay mount with detached idmapped layers.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// It worked.
    Done,
    /// It failed in a way attached layers can fix: EINVAL before the kernel was known to
    /// take detached layers.
    TryAttached,
    /// It failed for another reason: report it.
    Fail,
}

fn after_detached(known: Option<LayerMode>, errno: Option<Errno>) -> Next {
    match (errno, known) {
        (None, _) => Next::Done,
        (Some(Errno::EINVAL), None) => Next::TryAttached,
        _ => Next::Fail,
    }
}

/// Mounts the overlay of `lower` idmapped through `ns` at `target` for kernels whose overlayfs
/// takes only attached idmapped layers: [`overlay_in_own_namespace`] makes it, and its
/// detached copy is attached at `target` in the shim's namespace.
fn mount_attached(
    target: &Path,
    lower: &[PathBuf],
    ns: &OwnedFd,
    data: &str,
) -> Result<(), Failure> {
    let overlay = overlay_in_own_namespace(target, lower, ns, MsFlags::empty(), data)?;
    let at = open_dir(target)?;
    mount_api::attach(&overlay, &at).context(|| format!("mount overlay on {}", target.display()))
}

/// A detached read-only, nosuid, nodev overlay of an image's `layers` (top first, at least
/// two) idmapped through `ns`, for an image volume of a container in a user namespace on a
/// kernel whose overlayfs takes only attached idmapped layers (see [`LayerMode`]); `None` where
/// it takes detached ones, which the container's own mount namespace then mounts.
pub(super) fn idmapped_image_overlay(
    layers: &[PathBuf],
    ns: &OwnedFd,
    destination: &str,
) -> Result<Option<OwnedFd>, Failure> {
    if layers.len() < 2 || LayerMode::known() != Some(LayerMode::Attached) {
        return Ok(None);
    }
    let lowers: Vec<_> = layers.iter().map(|d| d.to_string_lossy()).collect();
    let data = format!("lowerdir={}", lowers.join(":"));
    if data.len() > MAX_OPTIONS {
        return Err(Failure::plain(
            format!(
                "mount image volume on {destination}: options for {} layers take {} bytes, \
                 mount(2) takes {MAX_OPTIONS}",
                layers.len(),
                data.len()
            ),
            Some(Errno::E2BIG),
        ));
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // Mounted over the top layer's directory, only in that namespace of its own.
    overlay_in_own_namespace(&layers[0], layers, ns, flags, &data)
        .map(Some)
        .map_err(|f| {
            Failure::plain(
                format!("image volume {destination}: {}", f.message),
                f.errno,
            )
        })
}

/// An overlay (`flags`, `data`) of `lower` idmapped through `ns`, made on `mountpoint` in a
/// mount namespace of its own where nothing propagates, and handed back detached. There each
/// layer's idmapped copy is attached over the layer's own directory (so `data` names the layers
/// by their usual paths), as overlayfs before Linux 6.15 needs (containerd 2.x attaches them on
/// every kernel, in a temporary directory of the host). The calling thread enters that
/// namespace (`unshare`) and returns to its own (`setns`) before this returns; the layers'
/// idmapped mounts vanish with it (the overlay keeps private clones of them): the host never
/// sees them and a crash leaves none behind. Not a thread of its own: a pod shim's
/// `pid_for_children` is its pod's PID namespace, where the kernel refuses new threads.
fn overlay_in_own_namespace(
    mountpoint: &Path,
    lower: &[PathBuf],
    ns: &OwnedFd,
    flags: MsFlags,
    data: &str,
) -> Result<OwnedFd, Failure> {
    const OWN_MNT_NS: &str = "/proc/thread-self/ns/mnt";
    let own = nix::fcntl::open(
        OWN_MNT_NS,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open {OWN_MNT_NS}"))?;
    unshare(CloneFlags::CLONE_NEWNS)
        .context(|| "unshare a mount namespace for the idmapped layers")?;
    let made = make_overlay_here(mountpoint, lower, ns, flags, data);
    if let Err(errno) = setns(&own, CloneFlags::CLONE_NEWNS) {
        // Cannot happen with the privileges that just unshared; were it to, every later mount
        // of this process would be invisible to the host: better die (the pod is then seen
        // as ShimDied and cleaned up) than go on.
        tracing::error!(%errno, "cannot return to the shim's mount namespace: aborting");
        std::process::abort();
    }
    made
}

/// The part of [`overlay_in_own_namespace`] inside its mount namespace.
fn make_overlay_here(
    mountpoint: &Path,
    lower: &[PathBuf],
    ns: &OwnedFd,
    flags: MsFlags,
    data: &str,
) -> Result<OwnedFd, Failure> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context(|| "make the idmapped layers' mount namespace private")?;
    for dir in lower {
        let tree = idmapped_layer(dir, ns)?;
        // Opened in this namespace: the mount is attached here, not in the host's.
        let at = open_dir(dir)?;
        mount_api::attach(&tree, &at)
            .context(|| format!("attach the idmapped layer {}", dir.display()))?;
    }
    nix::mount::mount(
        Some("overlay"),
        mountpoint,
        Some("overlay"),
        flags,
        Some(data),
    )
    .context(|| format!("mount overlay on {}", mountpoint.display()))?;
    mount_api::clone_tree(mountpoint, false).context(|| {
        format!(
            "take the overlay on {} out of its namespace",
            mountpoint.display()
        )
    })
}

fn open_dir(dir: &Path) -> Result<OwnedFd, Failure> {
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open {}", dir.display()))
}

/// The overlay options for these layers, or an error when mount(2) cannot take them.
fn checked_options(
    target: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, Failure> {
    let data = overlay_options(lower, upper, work);
    if data.len() > MAX_OPTIONS {
        return Err(Failure::plain(
            format!(
                "mount overlay on {}: options for {} layers take {} bytes, mount(2) takes {MAX_OPTIONS}",
                target.display(),
                lower.len(),
                data.len()
            ),
            Some(Errno::E2BIG),
        ));
    }
    Ok(data)
}

fn mount_overlay(target: &Path, data: &str) -> Result<(), Failure> {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data),
    )
    .context(|| format!("mount overlay on {}", target.display()))
}

/// Detached idmapped copies of the lower layers (the overlay keeps its own references once
/// mounted).
fn idmapped_lowers(lower: &[PathBuf], ns: &OwnedFd) -> Result<Vec<OwnedFd>, Failure> {
    lower.iter().map(|dir| idmapped_layer(dir, ns)).collect()
}

fn idmapped_layer(dir: &Path, ns: &OwnedFd) -> Result<OwnedFd, Failure> {
    mount_api::idmapped_tree(dir, false, ns).context(|| {
        format!(
            "idmap layer {} (idmapped overlayfs layers need Linux 5.19+ and a root_dir \
             filesystem that supports idmapped mounts: ext4, xfs, btrfs; tmpfs only from \
             Linux 6.3)",
            dir.display()
        )
    })
}

/// Gives `upper` (the root of the container's writable layer) to the user namespace's root.
fn chown_upper_root(rootfs: &Rootfs, map: &IdMap) -> Result<(), Failure> {
    let Rootfs::Overlay { upper, .. } = rootfs;
    let (Some(uid), Some(gid)) = (map.host_uid(0), map.host_gid(0)) else {
        return Ok(());
    };
    nix::unistd::chown(
        upper,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .context(|| format!("give {} to the user namespace's root", upper.display()))
}

fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lowers: Vec<_> = lower.iter().map(|d| d.to_string_lossy()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    )
}

/// Unmounts the rootfs at `target` — everything stacked there, with whatever is mounted below
/// it — and removes the then empty mountpoint directory. Idempotent: a missing or unmounted
/// target is fine.
pub fn cleanup_rootfs(target: &Path) -> Result<(), ExecError> {
    for _ in 0..MAX_STACKED {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) => break,
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => {
                let op = format!("unmount rootfs {}", target.display());
                return Err(Failure::new(op, errno).host());
            }
        }
    }
    match fs::remove_dir(target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
    .context(|| format!("remove rootfs mountpoint {}", target.display()))
    .map_err(Failure::host)
}

/// The filesystem type of the topmost mount on `path` in the calling thread's mount
/// namespace, or `None` when `path` is not a mountpoint.
pub(super) fn mounted_fstype(path: &Path) -> Result<Option<String>, Failure> {
    let path = fs::canonicalize(path).context(|| format!("resolve {}", path.display()))?;
    let mountinfo = fs::read_to_string(MOUNTINFO).context(|| format!("read {MOUNTINFO}"))?;
    Ok(mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .rfind(|(mount_point, _)| Path::new(mount_point) == path)
        .map(|(_, fstype)| fstype.to_string()))
}

/// `(mount point, filesystem type)` of one mountinfo line.
fn parse_mountinfo_line(line: &str) -> Option<(String, &str)> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let fstype = right.split(' ').next()?;
    Some((unescape(mount_point), fstype))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(byte) = octal_byte(bytes.get(i + 1..i + 4))
        {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: Option<&[u8]>) -> Option<u8> {
    digits?.iter().try_fold(0u8, |acc, d| {
        let digit = d.checked_sub(b'0').filter(|v| *v < 8)?;
        acc.checked_mul(8)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_and_type() {
        let line =
            "36 35 0:33 / /run/berth/rootfs/a\\040b rw,relatime shared:1 - overlay overlay rw";
        let (mount_point, fstype) = parse_mountinfo_line(line).expect("parsed");
        assert_eq!(mount_point, "/run/berth/rootfs/a b");
        assert_eq!(fstype, "overlay");
    }

    #[test]
    fn overlay_options_list_lower_layers_top_first() {
        let lower = [PathBuf::from("/l/top"), PathBuf::from("/l/base")];
        assert_eq!(
            overlay_options(&lower, Path::new("/u"), Path::new("/w")),
            "lowerdir=/l/top:/l/base,upperdir=/u,workdir=/w"
        );
    }

    #[test]
    fn detached_layers_fall_back_to_attached_only_on_einval_while_unknown() {
        assert_eq!(after_detached(None, None), Next::Done);
        assert_eq!(after_detached(None, Some(Errno::EINVAL)), Next::TryAttached);
        assert_eq!(after_detached(None, Some(Errno::EPERM)), Next::Fail);
        // Once detached layers are known to work, EINVAL has another cause: reported as is.
        let known = Some(LayerMode::Detached);
        assert_eq!(after_detached(known, Some(Errno::EINVAL)), Next::Fail);
        assert_eq!(after_detached(known, None), Next::Done);
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b\\x"), "a\\b\\x");
    }
}
