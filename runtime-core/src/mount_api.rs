//! The new mount API (`open_tree`, `move_mount`: Linux 5.2; `mount_setattr`: 5.12) through raw
//! system calls, for what the classic `mount(2)` cannot do: recursive read-only binds and
//! idmapped mounts. Also probes of what the running kernel supports, which `Status` reports.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;

/// `MOUNT_ATTR_RDONLY`: the mount is read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`: set-user-ID bits are ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`: device nodes cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_IDMAP`: ownership is shifted through the user namespace in `userns_fd`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `struct mount_attr` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> nix::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE)`), with its
/// submounts when `recursive`: attach it with [`attach`].
pub fn clone_tree(path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree with a valid NUL-terminated path; a non-negative result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets `attrs` on the mount `fd` refers to (and every mount below it when `recursive`);
/// `userns` is the user namespace of an idmapping (`MOUNT_ATTR_IDMAP`).
pub fn set_attributes(
    fd: &OwnedFd,
    recursive: bool,
    attrs: u64,
    userns: Option<&OwnedFd>,
) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr on an fd with an empty path and a valid, correctly sized struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Attaches the detached tree `tree` (from [`clone_tree`]) on the directory or file `target`
/// refers to (an `O_PATH` fd: `move_mount` refuses `/proc/self/fd/N` paths).
pub fn attach(tree: &OwnedFd, target: &OwnedFd) -> nix::Result<()> {
    // SAFETY: move_mount between two fds with empty paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached copy of `path` (recursive) idmapped through the user namespace `userns`.
pub fn idmapped_tree(path: &Path, recursive: bool, userns: &OwnedFd) -> nix::Result<OwnedFd> {
    let tree = clone_tree(path, recursive)?;
    set_attributes(&tree, recursive, MOUNT_ATTR_IDMAP, Some(userns))?;
    Ok(tree)
}

/// Whether the kernel has `mount_setattr` (Linux 5.12+): recursive read-only mounts.
pub fn mount_setattr_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: an invalid fd and a zero size: the call fails without side effects, with
        // ENOSYS only when the system call does not exist.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                std::ptr::null::<MountAttr>(),
                0usize,
            )
        };
        rc == 0 || Errno::last() != Errno::ENOSYS
    })
}

/// Whether pods can get user namespaces: user namespaces are enabled and the kernel can make
/// idmapped mounts, including of overlayfs layers (Linux 5.19+).
pub fn idmapped_mounts_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let userns = Path::new("/proc/self/ns/user").exists()
            && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0);
        userns && mount_setattr_supported() && kernel_at_least(5, 19)
    })
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| parse_release(r.trim()))
        .is_some_and(|v| v >= (major, minor))
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v769`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn mount_attr_has_the_kernels_version_0_size() {
        assert_eq!(std::mem::size_of::<MountAttr>(), 32);
    }
}
