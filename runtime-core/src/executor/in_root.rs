//! Paths inside a container's rootfs without following a symlink out of it: every container
//! path is resolved with `openat2(RESOLVE_IN_ROOT)` relative to the rootfs, and missing
//! directories are created one component at a time the same way.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, mkdirat};

use super::error::{Context, Failure};

/// An absent mount(2) argument.
pub(super) const NONE: Option<&str> = None;

/// What to create for a missing last path component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Leaf {
    Dir,
    File,
}

/// `/proc/self/fd/N` for `fd`: a path the kernel resolves to exactly what `fd` refers to.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens the container path `path` as an `O_PATH` fd, resolved with `root` as `/`.
pub(super) fn open_in_root(root: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = path.trim_start_matches('/');
    openat2(root, if relative.is_empty() { "." } else { relative }, how)
}

/// Most symlinks followed while creating one path (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Opens the container path `path` inside `root`, creating missing directories on the way
/// and, if it is missing too, the last component as `leaf`. A dangling symlink on the way is
/// followed inside the rootfs and its target created, as runc does.
pub(super) fn create_in_root(root: &OwnedFd, path: &str, leaf: Leaf) -> Result<OwnedFd, Failure> {
    let mut walk = Walk {
        root,
        pending: clean(path).into_iter().map(String::from).collect(),
        walked: String::new(),
        dir: open_in_root(root, "/").context(|| "open the rootfs")?,
        links: 0,
    };
    while let Some(name) = walk.pending.pop_front() {
        let candidate = format!("{}/{name}", walk.walked);
        if let Some(fd) = open_existing(root, &candidate)? {
            walk.advance(fd, candidate);
            continue;
        }
        let kind = if walk.pending.is_empty() {
            leaf
        } else {
            Leaf::Dir
        };
        match create_entry(&walk.dir, &name, kind) {
            Ok(()) => {
                let fd = open_in_root(root, &candidate)
                    .context(|| format!("open {candidate} in the rootfs"))?;
                walk.advance(fd, candidate);
            }
            Err(Errno::EEXIST) => walk.follow_dangling(&name, &candidate)?,
            Err(errno) => {
                let op = format!("create {candidate} in the rootfs");
                return Err(Failure::new(op, errno));
            }
        }
    }
    Ok(walk.dir)
}

/// State of [`create_in_root`]: components still to walk, the path walked so far (as given,
/// resolved by the kernel each time) and an fd on it.
struct Walk<'a> {
    root: &'a OwnedFd,
    pending: VecDeque<String>,
    walked: String,
    dir: OwnedFd,
    links: usize,
}

impl Walk<'_> {
    fn advance(&mut self, dir: OwnedFd, walked: String) {
        self.dir = dir;
        self.walked = walked;
    }

    /// `name` exists in the current directory but does not resolve: a dangling symlink, whose
    /// target is walked (and created) instead.
    fn follow_dangling(&mut self, name: &str, candidate: &str) -> Result<(), Failure> {
        self.links += 1;
        let target = dangling_target(&self.dir, name, self.links)
            .context(|| format!("create {candidate} in the rootfs"))?;
        if target.starts_with('/') {
            self.walked.clear();
        }
        let parts = target.split('/').filter(|p| !p.is_empty() && *p != ".");
        for part in parts.rev() {
            self.pending.push_front(part.to_string());
        }
        self.dir = open_in_root(self.root, &self.walked)
            .context(|| format!("open {}/ in the rootfs", self.walked))?;
        Ok(())
    }
}

/// The target of `name` in `dir`, an entry that exists but does not resolve: a dangling
/// symlink.
fn dangling_target(dir: &OwnedFd, name: &str, links: usize) -> nix::Result<String> {
    if links > MAX_SYMLINKS {
        return Err(Errno::ELOOP);
    }
    match readlinkat(dir, name) {
        Ok(target) => Ok(target.to_string_lossy().into_owned()),
        // Not a symlink after all: something else raced us.
        Err(Errno::EINVAL) => Err(Errno::EEXIST),
        Err(errno) => Err(errno),
    }
}

/// The components of `path` after lexical cleaning (`.` dropped, `..` applied, never above `/`).
pub(super) fn clean(path: &str) -> Vec<&str> {
    let mut components = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                components.pop();
            }
            name => components.push(name),
        }
    }
    components
}

/// Creates `name` in `parent` without following a symlink there.
fn create_entry(parent: &OwnedFd, name: &str, leaf: Leaf) -> nix::Result<()> {
    match leaf {
        Leaf::Dir => mkdirat(parent, name, Mode::from_bits_truncate(0o755)),
        Leaf::File => openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    }
}

pub(super) fn open_existing(root: &OwnedFd, path: &str) -> Result<Option<OwnedFd>, Failure> {
    match open_in_root(root, path) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(errno) => Err(Failure::new(
            format_args!("open {path} in the rootfs"),
            errno,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_never_climbs_above_root() {
        assert_eq!(clean("/a/./b//../../../c/"), vec!["c"]);
        assert!(clean("/").is_empty());
    }
}
