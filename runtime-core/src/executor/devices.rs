//! `/dev`: a tmpfs with the standard device nodes (every host device when privileged), the
//! usual symlinks, and new `devpts`, `shm` and `mqueue` instances.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
use nix::unistd::{Gid, Uid, fchownat, symlinkat};

use super::error::{Context, Failure};
use super::in_root::{Leaf, NONE, create_in_root, fd_path, open_in_root};
use super::mounts::mount_new;

/// Device nodes every container gets: name, major, minor (all `crw-rw-rw-` root:root).
const NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Host `/dev` entries a privileged container does not copy: its own instances replace them.
pub(crate) const SKIP: [&str; 9] = [
    "pts",
    "shm",
    "fd",
    "mqueue",
    "ptmx",
    "console",
    ".lxc",
    ".lxd-mounts",
    ".udev",
];
pub(crate) const MAX_DEPTH: usize = 4;

/// Builds the container's `/dev`.
pub(super) fn mount_dev(root: &OwnedFd, privileged: bool) -> Result<(), Failure> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    mount_new(
        root,
        "/dev",
        "tmpfs",
        "tmpfs",
        flags,
        "mode=755,size=65536k",
    )?;
    let dev = open_in_root(root, "/dev").context(|| "open /dev in the rootfs")?;
    for (name, major, minor) in NODES {
        let node = DeviceNode {
            kind: SFlag::S_IFCHR,
            mode: 0o666,
            rdev: makedev(major, minor),
            owner: (0, 0),
        };
        node.create(&dev, name, &Path::new("/dev").join(name))?;
    }
    if privileged {
        copy_host_devices(&dev, Path::new("/dev"), "", 0)?;
    }
    for (name, target) in LINKS {
        symlinkat(target, &dev, name).context(|| format!("symlink /dev/{name} -> {target}"))?;
    }
    let no_exec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let pts_data = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    mount_new(root, "/dev/pts", "devpts", "devpts", no_exec, pts_data)?;
    let no_dev = no_exec | MsFlags::MS_NODEV;
    mount_new(
        root,
        "/dev/shm",
        "shm",
        "tmpfs",
        no_dev,
        "mode=1777,size=65536k",
    )?;
    mount_new(root, "/dev/mqueue", "mqueue", "mqueue", no_dev, "")
}

/// A device node to recreate in the container's `/dev`.
struct DeviceNode {
    kind: SFlag,
    mode: u32,
    rdev: libc::dev_t,
    owner: (u32, u32),
}

impl DeviceNode {
    /// Creates the node as `name` in `dir`; where mknod is not allowed (a device cgroup
    /// without `m`), bind-mounts the host's node `host` instead.
    fn create(&self, dir: &OwnedFd, name: &str, host: &Path) -> Result<(), Failure> {
        let what = || format!("create device {}", host.display());
        let mode = Mode::from_bits_truncate(self.mode);
        match mknodat(dir, name, self.kind, mode, self.rdev) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(Errno::EPERM) => return bind_host_node(dir, name, host),
            Err(errno) => return Err(Failure::new(what(), errno)),
        }
        let (uid, gid) = (Uid::from_raw(self.owner.0), Gid::from_raw(self.owner.1));
        fchownat(
            dir,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .context(what)
    }
}

fn bind_host_node(dir: &OwnedFd, name: &str, host: &Path) -> Result<(), Failure> {
    let what = || format!("bind device {}", host.display());
    let flags = OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, name, flags, Mode::from_bits_truncate(0o666)).context(what)?;
    let target = fd_path(&file);
    mount(Some(host), target.as_str(), NONE, MsFlags::MS_BIND, NONE).context(what)
}

/// Recreates every character and block device below the host directory `host_dir` in
/// `/dev{prefix}` (`dev` is the container's `/dev`), for privileged containers.
fn copy_host_devices(
    dev: &OwnedFd,
    host_dir: &Path,
    prefix: &str,
    depth: usize,
) -> Result<(), Failure> {
    let here = create_in_root(dev, prefix, Leaf::Dir)?;
    let entries = fs::read_dir(host_dir).context(|| format!("list {}", host_dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("list {}", host_dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        let host = entry.path();
        let meta = fs::symlink_metadata(&host).context(|| format!("stat {}", host.display()))?;
        let kind = meta.file_type();
        if kind.is_dir() && depth < MAX_DEPTH {
            copy_host_devices(dev, &host, &format!("{prefix}/{name}"), depth + 1)?;
        } else if kind.is_char_device() || kind.is_block_device() {
            let node = DeviceNode {
                kind: if kind.is_char_device() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                },
                mode: meta.mode() & 0o7777,
                rdev: meta.rdev(),
                owner: (meta.uid(), meta.gid()),
            };
            node.create(&here, &name, &host)?;
        }
    }
    Ok(())
}
