//! The overlay rootfs on the host side: mounted by the shim before `fork`, so it can always be
//! removed from the host, and reused when a container restarts.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, umount2};

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
    if let Some((map, _)) = userns {
        chown_upper_root(rootfs, map)?;
    }
    let idmapped = idmapped_lowers(lower, userns)?;
    let lower = if idmapped.is_empty() {
        lower.clone()
    } else {
        idmapped.iter().map(fd_as_path).collect()
    };
    let data = overlay_options(&lower, upper, work);
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
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .context(|| format!("mount overlay on {}", target.display()))
}

/// Detached idmapped copies of the lower layers when the container has a user namespace (the
/// overlay keeps its own references once mounted).
fn idmapped_lowers(
    lower: &[PathBuf],
    userns: Option<(&IdMap, &OwnedFd)>,
) -> Result<Vec<OwnedFd>, Failure> {
    let Some((_, ns)) = userns else {
        return Ok(Vec::new());
    };
    let trees = lower
        .iter()
        .map(|dir| {
            mount_api::idmapped_tree(dir, false, ns).context(|| {
                format!(
                    "idmap layer {} (idmapped overlayfs layers need Linux 5.19+ and a root_dir \
                     filesystem that supports idmapped mounts: ext4, xfs, btrfs; tmpfs only from \
                     Linux 6.3)",
                    dir.display()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(trees)
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
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b\\x"), "a\\b\\x");
    }
}
