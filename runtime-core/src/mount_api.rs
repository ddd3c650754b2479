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

/// `open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// An `O_PATH` fd of `path` looked up inside the tree `root` refers to, as if `root` were `/`:
/// absolute symlinks and `..` stay inside it, `/proc` magic links are refused
/// (`openat2(RESOLVE_IN_ROOT)`, Linux 5.6). For paths taken from untrusted images.
pub fn open_in_tree(root: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, NUL-terminated path and correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A detached copy (non-recursive) of the mount at the `O_PATH` fd `at`, which must be in
/// the caller's mount namespace.
pub fn clone_at(at: &OwnedFd) -> nix::Result<OwnedFd> {
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: open_tree on an fd with an empty path; a non-negative result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, at.as_raw_fd(), c"".as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// A read-only, nosuid, nodev overlay of `lowers` (top first, at least two) that is attached
/// nowhere (`fsopen`/`fsmount`, Linux 5.2): a view of an image's merged layers that needs no
/// mount namespace of its own and vanishes with the fd. The layers are named by short
/// `/proc/self/fd/N` paths of handles opened here, one `lowerdir+` each where the kernel has
/// it (6.8), else all in one `lowerdir` (which `fsconfig` caps at 256 bytes: about 14 layers).
fn detached_overlay(lowers: &[&Path]) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let handles = lowers
        .iter()
        .map(|p| {
            nix::fcntl::open(
                *p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        })
        .collect::<nix::Result<Vec<OwnedFd>>>()?;
    let names: Vec<String> = handles
        .iter()
        .map(|h| format!("/proc/self/fd/{}", h.as_raw_fd()))
        .collect();
    let c = |s: &str| CString::new(s).map_err(|_| Errno::EINVAL);
    // SAFETY: fsopen with a NUL-terminated fs name; a non-negative result is a new fd.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let config = |cmd: libc::c_uint, key: *const libc::c_char, value: *const libc::c_char| {
        // SAFETY: fsconfig on our fs context with NUL-terminated strings (or nulls for CREATE).
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, 0) };
        if rc < 0 { Err(Errno::last()) } else { Ok(()) }
    };
    let first = c(&names[0])?;
    match config(FSCONFIG_SET_STRING, c"lowerdir+".as_ptr(), first.as_ptr()) {
        Ok(()) => {
            for name in &names[1..] {
                let name = c(name)?;
                config(FSCONFIG_SET_STRING, c"lowerdir+".as_ptr(), name.as_ptr())?;
            }
        }
        Err(Errno::EINVAL) => {
            let joined = c(&names.join(":"))?;
            config(FSCONFIG_SET_STRING, c"lowerdir".as_ptr(), joined.as_ptr())?;
        }
        Err(e) => return Err(e),
    }
    config(FSCONFIG_CMD_CREATE, std::ptr::null(), std::ptr::null())?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: fsmount of a created fs context; a non-negative result is a new fd.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if mnt < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

/// What `sub_path` is inside the merged view of an image's layers (`lowers`, top first),
/// resolved as the container would see it (whiteouts, opaque dirs and symlinks included, never
/// leaving the image): its `stat`, or the error of the lookup (`ENOENT` when it is absent).
pub fn stat_in_layers(lowers: &[&Path], sub_path: &str) -> nix::Result<nix::sys::stat::FileStat> {
    let root = match lowers {
        [] => return Err(Errno::ENOENT),
        [single] => nix::fcntl::open(
            *single,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?,
        many => detached_overlay(many)?,
    };
    let found = open_in_tree(&root, sub_path)?;
    nix::sys::stat::fstat(&found)
}

/// Whether the fd refers to the root of a mount (`statx` `STATX_ATTR_MOUNT_ROOT`, Linux 5.8).
pub fn is_mount_root(fd: &OwnedFd) -> nix::Result<bool> {
    // SAFETY: statx on an fd with an empty path into a zeroed buffer of the right type.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            0,
            &mut stx,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    let attr = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & attr == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(stx.stx_attributes & attr != 0)
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

    #[test]
    fn sub_paths_resolve_in_merged_layers_and_never_leave_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: overlay mounts need root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let (top, base) = (t.path().join("top"), t.path().join("base"));
        std::fs::create_dir_all(base.join("etc/conf")).expect("base");
        std::fs::create_dir_all(top.join("data")).expect("top");
        std::os::unix::fs::symlink("/etc", top.join("link")).expect("symlink");
        std::os::unix::fs::symlink("../../../../..", top.join("up")).expect("symlink");
        let layers = [top.as_path(), base.as_path()];
        let is_dir = |p: &str| {
            stat_in_layers(&layers, p).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        };
        assert_eq!(is_dir("etc/conf"), Ok(true), "from the lower layer");
        assert_eq!(is_dir("data"), Ok(true), "from the upper layer");
        assert_eq!(
            is_dir("link/conf"),
            Ok(true),
            "an absolute symlink stays in the image"
        );
        assert_eq!(is_dir("nope"), Err(Errno::ENOENT));
        // `..` past the image's root stays at its root: the host's /etc/passwd is not found.
        assert_eq!(is_dir("up/etc/passwd"), Err(Errno::ENOENT));
        assert_eq!(
            is_dir("etc/conf"),
            stat_in_layers(&[base.as_path()], "etc/conf").map(|_| true)
        );
        // Many layers with long paths (past fsconfig's 256-byte string limit when joined).
        let many: Vec<std::path::PathBuf> = (0..20)
            .map(|i| t.path().join(format!("{}-{i:02}", "l".repeat(60))))
            .collect();
        for (i, dir) in many.iter().enumerate() {
            std::fs::create_dir_all(dir.join(format!("only-in-{i}"))).expect("layer");
        }
        let refs: Vec<&Path> = many.iter().map(|p| p.as_path()).collect();
        assert!(
            stat_in_layers(&refs, "only-in-19").is_ok(),
            "the bottom layer is seen"
        );
    }
}
