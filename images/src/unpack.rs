//! Unpacks one image layer (an uncompressed tar) into a directory in overlayfs lower-dir
//! format, as containerd's overlay snapshotter lays it out: whiteouts become 0/0 character
//! devices and opaque directories carry `trusted.overlay.opaque=y`.
//!
//! Layers come from registries and berthd runs as root, so nothing may land outside the
//! destination. Every parent directory is opened component by component from the
//! destination's fd with `O_NOFOLLOW | O_DIRECTORY`, entries are created with `*at` calls
//! relative to that fd, symlinks are never followed, and `..` or absolute paths are refused.
//!
//! The tar stream is walked by [`stream`] rather than `tar::Archive`, which reads PAX and GNU
//! long-name headers of any size into memory, accepts a stream that stops without its end
//! blocks, and splits PAX records on newlines (breaking binary xattr values such as file
//! capabilities). `tar::Header` still decodes each header's fields.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use images::decompress::{decoder, Compression};
//! let blob = std::fs::File::open("layer.tar.gz")?;
//! let tar = decoder(Compression::Gzip, blob)?;
//! let stats = images::unpack::unpack_layer(tar, std::path::Path::new("/snapshots/new"))?;
//! println!("{} entries, {} bytes", stats.entries, stats.bytes);
//! # Ok(()) }
//! ```

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use self::stream::{Entry, Kind, Mtime, TarReader};

/// Largest PAX extended header or GNU long name/link accepted; real ones are a few hundred bytes.
/// Also the most extension data accepted before one member, all its extension headers together.
pub const MAX_EXTENSION_HEADER: u64 = 1 << 20;
/// Most distinct PAX records (keys) accepted for one member: a path, a link, times, ids and
/// xattrs need a few dozen.
pub const MAX_PAX_RECORDS: usize = 1024;
/// Longest entry path or link target accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Read buffer over the tar stream; file contents are written straight from it.
const READ_BUFFER: usize = 256 * 1024;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// What one [`unpack_layer`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (extension headers not counted, whiteouts counted).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers converted to their overlayfs form.
    pub whiteouts: u64,
    /// Length of the uncompressed stream, trailing padding included.
    pub stream_bytes: u64,
}

/// Why a layer could not be unpacked. Messages name the entry and the reason.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the stream failed; decompression errors surface here too.
    #[error("read layer stream at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The stream stopped before the archive's end blocks.
    #[error("truncated archive: {0}")]
    Truncated(String),
    /// Not a valid tar stream: bad checksum, oversized header, unparsable field.
    #[error("malformed archive at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    /// The entry is refused: it would escape the destination or is not allowed in a layer.
    #[error("entry `{path}` rejected: {reason}")]
    Rejected { path: PathBuf, reason: String },
    /// Writing the entry into the destination failed.
    #[error("entry `{path}`: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the uncompressed layer tar `tar_stream` into `dest`, an existing empty directory.
///
/// On error `dest` is left half-written for the caller to remove; nothing outside it is ever
/// touched. After the end blocks the rest of `tar_stream` is read to EOF, so a digest computed
/// over the stream by the caller covers every byte.
pub fn unpack_layer<R: Read>(tar_stream: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = nix::fcntl::open(dest, DIR_FLAGS, Mode::empty()).map_err(|e| UnpackError::Io {
        path: dest.to_path_buf(),
        op: "open destination",
        source: e.into(),
    })?;
    let mut reader = TarReader::new(BufReader::with_capacity(READ_BUFFER, tar_stream));
    let mut lower = LowerDir::new(root);
    while let Some(entry) = reader.next_entry()? {
        lower.apply(&entry, &mut reader)?;
        reader.skip_data(&entry.path)?;
    }
    let stream_bytes = reader.drain()?;
    lower.set_dir_mtimes()?;
    Ok(UnpackStats {
        stream_bytes,
        ..lower.stats
    })
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// An entry path relative to the layer root, `.` and empty components dropped.
struct EntryPath {
    /// Components joined by `/`; empty for the root itself.
    joined: Vec<u8>,
    /// Where the last component starts in `joined`.
    name_start: usize,
}

impl EntryPath {
    fn parse(raw: &[u8]) -> Result<EntryPath, &'static str> {
        if raw.first() == Some(&b'/') {
            return Err("absolute path");
        }
        if raw.contains(&0) {
            return Err("path contains a NUL byte");
        }
        let mut joined = Vec::with_capacity(raw.len());
        let mut name_start = 0;
        for component in raw.split(|b| *b == b'/') {
            match component {
                b"" | b"." => continue,
                b".." => return Err("path has a `..` component"),
                _ => {}
            }
            if !joined.is_empty() {
                joined.push(b'/');
            }
            name_start = joined.len();
            joined.extend_from_slice(component);
        }
        Ok(EntryPath { joined, name_start })
    }

    fn parent(&self) -> &[u8] {
        &self.joined[..self.name_start.saturating_sub(1)]
    }

    /// The last component; `None` for the layer root.
    fn name(&self) -> Option<&[u8]> {
        (!self.joined.is_empty()).then(|| self.base())
    }

    /// The last component; empty for the layer root.
    fn base(&self) -> &[u8] {
        &self.joined[self.name_start..]
    }
}

/// Why a directory on an entry's path could not be opened.
enum WalkError {
    Symlink(Vec<u8>),
    NotDirectory(Vec<u8>),
    Missing(Vec<u8>),
    Io(Errno),
}

impl WalkError {
    fn for_entry(self, path: &[u8], what: &str) -> UnpackError {
        let reason = match self {
            WalkError::Symlink(dir) => format!("{what} `{}` is a symlink", shown(&dir).display()),
            WalkError::NotDirectory(dir) => {
                format!("{what} `{}` is not a directory", shown(&dir).display())
            }
            WalkError::Missing(dir) => format!("{what} `{}` does not exist", shown(&dir).display()),
            WalkError::Io(e) => return io_error(path, "open parent directory")(e),
        };
        rejected(path, reason)
    }
}

/// The overlayfs lower directory being built.
struct LowerDir {
    root: Rc<OwnedFd>,
    /// Last directory opened, by joined path: tar lists a directory's entries together, so
    /// most parent lookups hit it without a syscall.
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directory mtimes, applied after their contents are written.
    dir_mtimes: Vec<(Vec<u8>, Mtime)>,
    stats: UnpackStats,
    /// Who new files belong to and which mode bits survive creation, to skip `fchown` and
    /// `fchmod` on regular files that already have the right ones (most of them).
    creator: Creator,
}

/// The owner and umask files get at creation.
#[derive(Clone, Copy)]
struct Creator {
    uid: u32,
    gid: u32,
    umask: u32,
    /// A setgid directory was created: its files inherit its group, so always chown.
    setgid_dirs: bool,
}

impl Creator {
    fn current() -> Creator {
        Creator {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            umask: current_umask(),
            setgid_dirs: false,
        }
    }

    /// Whether a regular file created with `entry.mode & 0o777` already has the entry's
    /// owner and mode.
    fn created_right(&self, entry: &Entry) -> bool {
        let perms = entry.mode & 0o777;
        !self.setgid_dirs
            && entry.uid == self.uid
            && entry.gid == self.gid
            && entry.mode & 0o7000 == 0
            && perms & !self.umask == perms
    }
}

/// The process umask, read without changing it (`umask(2)` would race other threads).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        // Unknown: assume every bit may be masked, so fchmod always runs.
        .unwrap_or(0o777)
}

impl LowerDir {
    fn new(root: OwnedFd) -> LowerDir {
        LowerDir {
            root: Rc::new(root),
            cached: None,
            dir_mtimes: Vec::new(),
            stats: UnpackStats::default(),
            creator: Creator::current(),
        }
    }

    fn apply<R: BufRead>(
        &mut self,
        entry: &Entry,
        reader: &mut TarReader<R>,
    ) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let path = EntryPath::parse(&entry.path).map_err(|r| rejected(&entry.path, r))?;
        let Some(name) = path.name() else {
            return apply_root(entry);
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.apply_whiteout(entry, &path);
        }
        let parent = self
            .dir(path.parent(), true)
            .map_err(|e| e.for_entry(&entry.path, "parent"))?;
        match entry.kind {
            Kind::File => self.write_file(&parent, &path, entry, reader),
            Kind::Dir => self.make_dir(&parent, &path, entry),
            Kind::Symlink => self.make_symlink(&parent, &path, entry),
            Kind::HardLink => self.make_hard_link(&parent, &path, entry),
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                self.make_node(&parent, &path, entry)
            }
        }
    }

    /// Opens the directory at `path` (joined, relative to the root) without following
    /// symlinks, creating missing components with mode 0755 when `create` is set.
    fn dir(&mut self, path: &[u8], create: bool) -> Result<Rc<OwnedFd>, WalkError> {
        if path.is_empty() {
            return Ok(self.root.clone());
        }
        let mut start = (self.root.clone(), 0);
        if let Some((cached, fd)) = &self.cached {
            if cached.as_slice() == path {
                return Ok(fd.clone());
            }
            if path.starts_with(cached) && path[cached.len()] == b'/' {
                start = (fd.clone(), cached.len() + 1);
            }
        }
        let fd = Rc::new(walk(&start.0, path, start.1, create)?);
        self.cached = Some((path.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn write_file<R: BufRead>(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
        reader: &mut TarReader<R>,
    ) -> Result<(), UnpackError> {
        let name = path.base();
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fast = self.creator.created_right(entry);
        let create_mode = if fast {
            Mode::from_bits_truncate(entry.mode & 0o777)
        } else {
            Mode::S_IRUSR | Mode::S_IWUSR
        };
        let fd = self.create(parent, path, entry, "create file", || {
            openat(parent, name, flags, create_mode)
        })?;
        let mut file = File::from(fd);
        self.stats.bytes += reader.copy_data(&mut file, &entry.path)?;
        if !fast {
            set_owner_and_mode(file.as_fd(), entry)?;
        }
        set_xattrs(XattrTarget::Fd(file.as_fd()), entry)?;
        let t = timespec(entry.mtime);
        futimens(&file, &t, &t).map_err(io_error(&entry.path, "set mtime"))
    }

    fn make_dir(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
    ) -> Result<(), UnpackError> {
        let name = path.base();
        match mkdirat(parent, name, Mode::S_IRWXU) {
            Ok(()) => {}
            Err(Errno::EEXIST) if is_dir_at(parent, name) => {} // dir over dir: merge
            Err(Errno::EEXIST) => {
                self.remove_existing(parent, path, entry)?;
                mkdirat(parent, name, Mode::S_IRWXU)
                    .map_err(io_error(&entry.path, "create directory"))?;
            }
            Err(e) => return Err(io_error(&entry.path, "create directory")(e)),
        }
        let fd = openat(parent, name, DIR_FLAGS, Mode::empty())
            .map_err(io_error(&entry.path, "open directory"))?;
        set_owner_and_mode(fd.as_fd(), entry)?;
        if entry.mode & 0o2000 != 0 {
            self.creator.setgid_dirs = true;
        }
        set_xattrs(XattrTarget::Fd(fd.as_fd()), entry)?;
        self.dir_mtimes.push((path.joined.clone(), entry.mtime));
        self.cached = Some((path.joined.clone(), Rc::new(fd)));
        Ok(())
    }

    fn make_symlink(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
    ) -> Result<(), UnpackError> {
        if entry.link.is_empty() {
            return Err(rejected(&entry.path, "symlink has an empty target"));
        }
        let name = path.base();
        self.create(parent, path, entry, "create symlink", || {
            symlinkat(entry.link.as_slice(), parent, name)
        })?;
        set_metadata_at(parent, name, entry, false)
    }

    fn make_hard_link(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
    ) -> Result<(), UnpackError> {
        let target = EntryPath::parse(&entry.link)
            .map_err(|r| rejected(&entry.path, format!("hard link target: {r}")))?;
        let Some(target_name) = target.name() else {
            return Err(rejected(&entry.path, "hard link to the layer root"));
        };
        if target.joined == path.joined {
            return Ok(()); // a file linked to itself: already there
        }
        let target_parent = self
            .dir(target.parent(), false)
            .map_err(|e| e.for_entry(&entry.path, "hard link target's parent"))?;
        match fstatat(&*target_parent, target_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                return Err(rejected(&entry.path, "hard link to a directory"));
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let reason = format!(
                    "hard link target `{}` is not in this layer",
                    shown(&entry.link).display()
                );
                return Err(rejected(&entry.path, reason));
            }
            Err(e) => return Err(io_error(&entry.path, "inspect hard link target")(e)),
        }
        let name = path.base();
        self.create(parent, path, entry, "create hard link", || {
            linkat(&*target_parent, target_name, parent, name, AtFlags::empty())
        })
    }

    fn make_node(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
    ) -> Result<(), UnpackError> {
        let (kind, dev) = match entry.kind {
            Kind::CharDevice => (SFlag::S_IFCHR, makedev(entry.device.0, entry.device.1)),
            Kind::BlockDevice => (SFlag::S_IFBLK, makedev(entry.device.0, entry.device.1)),
            _ => (SFlag::S_IFIFO, 0),
        };
        let name = path.base();
        self.create(parent, path, entry, "create device node", || {
            mknodat(parent, name, kind, Mode::S_IRUSR | Mode::S_IWUSR, dev)
        })?;
        set_metadata_at(parent, name, entry, true)
    }

    /// `.wh.<name>` becomes a 0/0 character device `<name>`; `.wh..wh..opq` marks its
    /// directory opaque; other `.wh..wh.` meta entries are ignored.
    fn apply_whiteout(&mut self, entry: &Entry, path: &EntryPath) -> Result<(), UnpackError> {
        let name = path.base();
        if name.starts_with(WHITEOUT_META_PREFIX) && name != OPAQUE_MARKER {
            tracing::debug!(path = %shown(&entry.path).display(), "ignored whiteout meta entry");
            return Ok(());
        }
        let parent = self
            .dir(path.parent(), true)
            .map_err(|e| e.for_entry(&entry.path, "parent"))?;
        if name == OPAQUE_MARKER {
            set_xattr(XattrTarget::Fd(parent.as_fd()), OPAQUE_XATTR, b"y")
                .map_err(|e| io_error(&entry.path, "mark directory opaque")(Errno::from_raw(e)))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(rejected(&entry.path, "whiteout names no file"));
        }
        // Whiteouts hide lower layers only: an entry of this same layer stays (OCI image spec).
        match mknodat(&*parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(()),
            Err(e) => return Err(io_error(&entry.path, "create whiteout")(e)),
        }
        fchownat(
            &*parent,
            hidden,
            uid(entry),
            gid(entry),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io_error(&entry.path, "chown whiteout"))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Runs `make`; if an earlier entry of this layer is in the way, removes it and retries.
    fn create<T>(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
        op: &'static str,
        make: impl Fn() -> nix::Result<T>,
    ) -> Result<T, UnpackError> {
        match make() {
            Err(Errno::EEXIST) => {
                self.remove_existing(parent, path, entry)?;
                make().map_err(io_error(&entry.path, op))
            }
            result => result.map_err(io_error(&entry.path, op)),
        }
    }

    fn remove_existing(
        &mut self,
        parent: &OwnedFd,
        path: &EntryPath,
        entry: &Entry,
    ) -> Result<(), UnpackError> {
        let name = path.base();
        if !is_dir_at(parent, name) {
            return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(io_error(&entry.path, "remove replaced entry"));
        }
        remove_tree(parent.as_fd(), name)
            .map_err(io_error(&entry.path, "remove replaced directory"))?;
        let under = |p: &[u8]| {
            p.starts_with(&path.joined) && p.get(path.joined.len()).is_none_or(|b| *b == b'/')
        };
        if self.cached.as_ref().is_some_and(|(p, _)| under(p)) {
            self.cached = None;
        }
        self.dir_mtimes.retain(|(p, _)| !under(p));
        Ok(())
    }

    /// Applies directory mtimes last, since creating their entries changed them.
    fn set_dir_mtimes(&mut self) -> Result<(), UnpackError> {
        for (path, mtime) in std::mem::take(&mut self.dir_mtimes) {
            let fd = match self.dir(&path, false) {
                Ok(fd) => fd,
                // Replaced later in the layer by a non-directory: nothing to set.
                Err(WalkError::Missing(_) | WalkError::Symlink(_) | WalkError::NotDirectory(_)) => {
                    continue;
                }
                Err(e) => return Err(e.for_entry(&path, "directory")),
            };
            let t = timespec(mtime);
            futimens(&*fd, &t, &t).map_err(io_error(&path, "set directory mtime"))?;
        }
        Ok(())
    }
}

/// The layer root's own entry (`./`): its metadata is not taken, as in containerd.
fn apply_root(entry: &Entry) -> Result<(), UnpackError> {
    if entry.kind == Kind::Dir {
        Ok(())
    } else {
        Err(rejected(
            &entry.path,
            "non-directory entry for the layer root",
        ))
    }
}

/// Opens `path[from..]` below `start` one component at a time, never following symlinks.
fn walk(start: &OwnedFd, path: &[u8], from: usize, create: bool) -> Result<OwnedFd, WalkError> {
    let mut current: Option<OwnedFd> = None;
    let mut end = from;
    for component in path[from..].split(|b| *b == b'/') {
        end += component.len();
        let at = current.as_ref().unwrap_or(start).as_fd();
        let next = open_dir_at(at, component, create).map_err(|e| match e {
            Errno::ELOOP => WalkError::Symlink(path[..end].to_vec()),
            Errno::ENOTDIR if is_symlink_at(at, component) => {
                WalkError::Symlink(path[..end].to_vec())
            }
            Errno::ENOTDIR => WalkError::NotDirectory(path[..end].to_vec()),
            Errno::ENOENT => WalkError::Missing(path[..end].to_vec()),
            e => WalkError::Io(e),
        })?;
        current = Some(next);
        end += 1;
    }
    current.ok_or(WalkError::Io(Errno::EINVAL))
}

fn open_dir_at(at: BorrowedFd, name: &[u8], create: bool) -> nix::Result<OwnedFd> {
    match openat(at, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::ENOENT) if create => {}
        result => return result,
    }
    match mkdirat(at, name, Mode::S_IRWXU) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = openat(at, name, DIR_FLAGS, Mode::empty())?;
    fchmod(&fd, Mode::from_bits_truncate(0o755))?;
    Ok(fd)
}

/// Removes the directory `name` in `parent` and everything under it, following no symlink.
fn remove_tree(parent: BorrowedFd, name: &[u8]) -> nix::Result<()> {
    let fd = openat(parent, name, DIR_FLAGS, Mode::empty())?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut children = Vec::new();
    for child in dir.iter() {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push((child_name.to_vec(), child.file_type()));
        }
    }
    for (child, kind) in children {
        let is_dir = match kind {
            Some(kind) => kind == nix::dir::Type::Directory,
            None => is_dir_at(dir.as_fd(), &child),
        };
        if is_dir {
            remove_tree(dir.as_fd(), &child)?;
        } else {
            unlinkat(&dir, child.as_slice(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    drop(dir);
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

fn file_type_at(at: impl AsFd, name: &[u8]) -> Option<SFlag> {
    let st = fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

fn is_dir_at(at: impl AsFd, name: &[u8]) -> bool {
    file_type_at(at, name) == Some(SFlag::S_IFDIR)
}

fn is_symlink_at(at: impl AsFd, name: &[u8]) -> bool {
    file_type_at(at, name) == Some(SFlag::S_IFLNK)
}

fn uid(entry: &Entry) -> Option<Uid> {
    Some(Uid::from_raw(entry.uid))
}

fn gid(entry: &Entry) -> Option<Gid> {
    Some(Gid::from_raw(entry.gid))
}

/// chown, then chmod: chown clears setuid/setgid, so the mode goes second.
fn set_owner_and_mode(fd: BorrowedFd, entry: &Entry) -> Result<(), UnpackError> {
    fchown(fd, uid(entry), gid(entry)).map_err(io_error(&entry.path, "chown"))?;
    fchmod(fd, Mode::from_bits_truncate(entry.mode)).map_err(io_error(&entry.path, "chmod"))
}

/// Owner, mode (unless a symlink), xattrs and mtime of a just-created non-regular file.
fn set_metadata_at(
    parent: &OwnedFd,
    name: &[u8],
    entry: &Entry,
    chmod: bool,
) -> Result<(), UnpackError> {
    fchownat(
        parent,
        name,
        uid(entry),
        gid(entry),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_error(&entry.path, "chown"))?;
    if chmod {
        // Linux has no lchmod; `name` is the device or fifo created just before, not a symlink.
        let mode = Mode::from_bits_truncate(entry.mode);
        fchmodat(parent, name, mode, FchmodatFlags::FollowSymlink)
            .map_err(io_error(&entry.path, "chmod"))?;
    }
    set_xattrs(XattrTarget::At(parent.as_fd(), name), entry)?;
    let t = timespec(entry.mtime);
    utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(io_error(&entry.path, "set mtime"))
}

/// Where an xattr goes: an open file, or a name in a directory (symlinks, devices, fifos).
#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

/// Applies the entry's PAX `SCHILY.xattr.*` records. Only `security.*`, `user.*` and POSIX
/// ACLs are taken: `trusted.overlay.*` from a layer could redirect overlayfs lookups.
fn set_xattrs(target: XattrTarget, entry: &Entry) -> Result<(), UnpackError> {
    for (key, value) in &entry.xattrs {
        let allowed = key.starts_with(b"security.")
            || key.starts_with(b"user.")
            || key == b"system.posix_acl_access"
            || key == b"system.posix_acl_default";
        if !allowed {
            tracing::debug!(
                path = %shown(&entry.path).display(),
                xattr = %String::from_utf8_lossy(key),
                "ignored xattr outside security.*, user.* and ACLs"
            );
            continue;
        }
        match set_xattr(target, key, value) {
            Ok(()) => {}
            Err(libc::ENOTSUP) => {
                tracing::warn!(
                    path = %shown(&entry.path).display(),
                    xattr = %String::from_utf8_lossy(key),
                    "filesystem does not support xattr; ignored"
                );
            }
            Err(e) => return Err(io_error(&entry.path, "set xattr")(Errno::from_raw(e))),
        }
    }
    Ok(())
}

/// Sets one xattr without following symlinks; errors are raw errno values.
fn set_xattr(target: XattrTarget, key: &[u8], value: &[u8]) -> Result<(), i32> {
    let key = CString::new(key).map_err(|_| libc::EINVAL)?;
    let rc = match target {
        // SAFETY: `fd` is open for the call; `key` is NUL-terminated; `value` is valid for
        // `value.len()` bytes.
        XattrTarget::Fd(fd) => unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        },
        XattrTarget::At(dir, name) => {
            // No *at xattr call before Linux 6.13: reach `name` through the directory's
            // /proc/self/fd link (an fd opened without following symlinks), not following
            // `name` itself.
            let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            path.extend_from_slice(name);
            let path = CString::new(path).map_err(|_| libc::EINVAL)?;
            // SAFETY: as above, with `path` NUL-terminated.
            unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    key.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last_raw())
    }
}

fn timespec(mtime: Mtime) -> TimeSpec {
    TimeSpec::new(mtime.secs, mtime.nanos)
}

/// An entry path as shown in errors and logs, cut short if huge.
fn shown(path: &[u8]) -> PathBuf {
    const SHOWN: usize = 256;
    if path.len() <= SHOWN {
        return PathBuf::from(OsStr::from_bytes(path));
    }
    let mut short = path[..SHOWN].to_vec();
    short.extend_from_slice("…".as_bytes());
    PathBuf::from(OsStr::from_bytes(&short))
}

fn rejected(path: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Rejected {
        path: shown(path),
        reason: reason.into(),
    }
}

fn io_error<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        path: shown(path),
        op,
        source: e.into(),
    }
}

/// Reading the tar stream: headers, extension headers, data, end blocks.
mod stream {
    use std::borrow::Cow;
    use std::io::{self, BufRead, Write};
    use std::ops::Range;

    use tar::Header;

    use super::{
        MAX_EXTENSION_HEADER, MAX_PATH_LEN, MAX_PAX_RECORDS, UnpackError, rejected, shown,
    };

    const BLOCK: u64 = 512;
    /// Device number fields, at the same offsets in ustar and GNU headers.
    const DEV_MAJOR: Range<usize> = 329..337;
    const DEV_MINOR: Range<usize> = 337..345;

    /// Key/value pairs (PAX records, xattrs) in stream order.
    pub(super) type Records = Vec<(Vec<u8>, Vec<u8>)>;
    const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        File,
        Dir,
        Symlink,
        HardLink,
        CharDevice,
        BlockDevice,
        Fifo,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Mtime {
        pub secs: i64,
        pub nanos: i64,
    }

    /// One archive member, extension headers folded in.
    pub(super) struct Entry {
        pub kind: Kind,
        pub path: Vec<u8>,
        /// Symlink target or hard link source; empty for other kinds.
        pub link: Vec<u8>,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime: Mtime,
        pub device: (u64, u64),
        /// `SCHILY.xattr.*` PAX records, prefix stripped.
        pub xattrs: Records,
    }

    /// PAX and GNU extension headers read before the member they describe.
    #[derive(Default)]
    struct Extensions {
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Records,
        /// Extension data read so far for this member (a stream of consecutive extension
        /// headers must not grow memory without bound).
        bytes: u64,
    }

    impl Extensions {
        fn is_empty(&self) -> bool {
            self.long_name.is_none() && self.long_link.is_none() && self.pax.is_empty()
        }

        /// Counts `size` more bytes of extension data against [`MAX_EXTENSION_HEADER`].
        fn charge(&mut self, size: u64, at: u64) -> Result<(), UnpackError> {
            self.bytes = self.bytes.saturating_add(size);
            if self.bytes > MAX_EXTENSION_HEADER {
                return Err(malformed(
                    at,
                    format!(
                        "extension headers before one entry exceed {MAX_EXTENSION_HEADER} bytes"
                    ),
                ));
            }
            Ok(())
        }

        /// Adds PAX records: a key given again replaces its earlier value, as in GNU tar and
        /// Go's archive/tar.
        fn merge_pax(&mut self, records: Records, at: u64) -> Result<(), UnpackError> {
            for (key, value) in records {
                if let Some(existing) = self.pax.iter_mut().find(|(k, _)| *k == key) {
                    existing.1 = value;
                } else if self.pax.len() >= MAX_PAX_RECORDS {
                    return Err(malformed(
                        at,
                        format!("more than {MAX_PAX_RECORDS} PAX records for one entry"),
                    ));
                } else {
                    self.pax.push((key, value));
                }
            }
            Ok(())
        }

        /// The last non-empty value of a PAX record (an empty value unsets it).
        fn pax(&self, key: &[u8]) -> Option<&[u8]> {
            let value = self.pax.iter().rev().find(|(k, _)| k == key)?;
            (!value.1.is_empty()).then_some(value.1.as_slice())
        }
    }

    pub(super) struct TarReader<R> {
        inner: R,
        /// Bytes consumed so far.
        offset: u64,
        /// Data bytes of the current member not consumed yet.
        remaining: u64,
        /// Padding after the current member's data up to the next block.
        padding: u64,
    }

    impl<R: BufRead> TarReader<R> {
        pub fn new(inner: R) -> TarReader<R> {
            TarReader {
                inner,
                offset: 0,
                remaining: 0,
                padding: 0,
            }
        }

        /// The next member, or `None` after the two zero end blocks.
        pub fn next_entry(&mut self) -> Result<Option<Entry>, UnpackError> {
            self.skip_data(b"previous entry")?;
            let mut ext = Extensions::default();
            loop {
                let at = self.offset;
                let mut header = Header::new_old();
                if !self.read_block(header.as_mut_bytes())? {
                    return Err(UnpackError::Truncated(format!(
                        "stream ends at byte {at} without the end-of-archive blocks"
                    )));
                }
                if header.as_bytes().iter().all(|b| *b == 0) {
                    self.read_second_end_block(at)?;
                    if !ext.is_empty() {
                        return Err(malformed(at, "extension header not followed by an entry"));
                    }
                    return Ok(None);
                }
                verify_checksum(&header, at)?;
                let size = numeric(&header.as_old().size, header.entry_size())
                    .map_err(|e| malformed(at, e.to_string()))?;
                let kind = header.entry_type().as_byte();
                // An oversized single header gets its own error from `read_extension`.
                if matches!(kind, b'x' | b'L' | b'K') && size <= MAX_EXTENSION_HEADER {
                    ext.charge(size, at)?;
                }
                match kind {
                    b'x' => {
                        let data = self.read_extension(size, "PAX header", at)?;
                        ext.merge_pax(parse_pax(&data, at)?, at)?;
                    }
                    b'g' => {
                        self.read_extension(size, "PAX global header", at)?;
                    }
                    b'L' => {
                        ext.long_name =
                            Some(c_string(self.read_extension(size, "GNU long name", at)?))
                    }
                    b'K' => {
                        ext.long_link =
                            Some(c_string(self.read_extension(size, "GNU long link", at)?))
                    }
                    _ => return self.entry(&header, ext, at).map(Some),
                }
            }
        }

        /// Copies the current member's data into `out`; returns the byte count.
        pub fn copy_data(&mut self, out: &mut impl Write, path: &[u8]) -> Result<u64, UnpackError> {
            let total = self.remaining;
            while self.remaining > 0 {
                let remaining = usize::try_from(self.remaining).unwrap_or(usize::MAX);
                let chunk = self.fill(path, total)?;
                let n = chunk.len().min(remaining);
                out.write_all(&chunk[..n])
                    .map_err(|source| UnpackError::Io {
                        path: shown(path),
                        op: "write",
                        source,
                    })?;
                self.consume(n);
            }
            Ok(total)
        }

        /// Skips what is left of the current member, padding included.
        pub fn skip_data(&mut self, path: &[u8]) -> Result<(), UnpackError> {
            self.remaining += std::mem::take(&mut self.padding);
            let total = self.remaining;
            while self.remaining > 0 {
                let n = self.fill(path, total)?.len();
                self.consume(n.min(usize::try_from(self.remaining).unwrap_or(usize::MAX)));
            }
            Ok(())
        }

        /// Reads the stream to EOF after the end blocks; returns the stream's full length.
        pub fn drain(&mut self) -> Result<u64, UnpackError> {
            loop {
                let n = match self.inner.fill_buf() {
                    Ok(buf) => buf.len(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(self.read_error(source)),
                };
                if n == 0 {
                    return Ok(self.offset);
                }
                self.inner.consume(n);
                self.offset += n as u64;
            }
        }

        /// Buffered bytes of the current member; errors at EOF.
        fn fill(&mut self, path: &[u8], total: u64) -> Result<&[u8], UnpackError> {
            loop {
                match self.inner.fill_buf() {
                    Ok([]) => {
                        return Err(UnpackError::Truncated(format!(
                            "entry `{}` ends after {} of {total} bytes",
                            shown(path).display(),
                            total - self.remaining
                        )));
                    }
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(self.read_error(source)),
                }
            }
            // Re-borrow: returning the first borrow from inside the loop does not compile.
            let offset = self.offset;
            self.inner
                .fill_buf()
                .map_err(|source| UnpackError::Read { offset, source })
        }

        fn consume(&mut self, n: usize) {
            self.inner.consume(n);
            self.remaining -= n as u64;
            self.offset += n as u64;
        }

        fn read_error(&self, source: io::Error) -> UnpackError {
            UnpackError::Read {
                offset: self.offset,
                source,
            }
        }

        /// Fills `block`: `false` at a clean EOF, an error if it stops part way.
        fn read_block(&mut self, block: &mut [u8; BLOCK as usize]) -> Result<bool, UnpackError> {
            let mut filled = 0;
            while filled < block.len() {
                match self.inner.read(&mut block[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(self.read_error(source)),
                }
            }
            self.offset += filled as u64;
            match filled {
                0 => Ok(false),
                n if n == block.len() => Ok(true),
                n => Err(UnpackError::Truncated(format!(
                    "stream ends {n} bytes into the header block at byte {}",
                    self.offset - n as u64
                ))),
            }
        }

        fn read_second_end_block(&mut self, first: u64) -> Result<(), UnpackError> {
            let mut block = [0u8; BLOCK as usize];
            if !self.read_block(&mut block)? {
                return Err(UnpackError::Truncated(format!(
                    "stream ends after one end-of-archive block at byte {first}"
                )));
            }
            if block.iter().any(|b| *b != 0) {
                return Err(malformed(first, "zero block followed by a non-zero block"));
            }
            Ok(())
        }

        /// Reads an extension header's data, refusing sizes over [`MAX_EXTENSION_HEADER`].
        fn read_extension(
            &mut self,
            size: u64,
            what: &str,
            at: u64,
        ) -> Result<Vec<u8>, UnpackError> {
            if size > MAX_EXTENSION_HEADER {
                return Err(malformed(
                    at,
                    format!("{what} of {size} bytes exceeds the {MAX_EXTENSION_HEADER}-byte limit"),
                ));
            }
            self.start_data(size);
            let mut data = Vec::with_capacity(size as usize);
            self.copy_data(&mut data, what.as_bytes())?;
            self.skip_data(what.as_bytes())?;
            Ok(data)
        }

        fn start_data(&mut self, size: u64) {
            self.remaining = size;
            self.padding = (BLOCK - size % BLOCK) % BLOCK;
        }

        /// Builds the member from its header and extensions; positions the reader at its data.
        fn entry(
            &mut self,
            header: &Header,
            ext: Extensions,
            at: u64,
        ) -> Result<Entry, UnpackError> {
            let path = pick(ext.pax(b"path"), ext.long_name.as_deref(), || {
                header.path_bytes().into_owned()
            });
            check_len(&path, &path, "path")?;
            let kind = kind(header.entry_type().as_byte(), &path)?;
            if ext.pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
                return Err(rejected(&path, "sparse files are not supported"));
            }
            let link = match kind {
                Kind::Symlink | Kind::HardLink => {
                    pick(ext.pax(b"linkpath"), ext.long_link.as_deref(), || {
                        header
                            .link_name_bytes()
                            .map(Cow::into_owned)
                            .unwrap_or_default()
                    })
                }
                _ => Vec::new(),
            };
            check_len(&path, &link, "link target")?;
            let fields = Fields {
                header,
                ext: &ext,
                at,
                path: &path,
            };
            let old = header.as_old();
            let size = fields.number(Some(b"size"), &old.size, header.entry_size())?;
            let mode = fields.number(None, &old.mode, header.mode().map(u64::from))?;
            let uid = fields.id("uid", &old.uid, header.uid())?;
            let gid = fields.id("gid", &old.gid, header.gid())?;
            let mtime = fields.mtime()?;
            let device = match kind {
                Kind::CharDevice | Kind::BlockDevice => fields.device()?,
                _ => (0, 0),
            };
            // Only regular files carry data; other kinds' size fields are ignored, as Go's
            // archive/tar (and so containerd) does.
            self.start_data(if kind == Kind::File { size } else { 0 });
            Ok(Entry {
                kind,
                mode: (mode & 0o7777) as u32,
                uid,
                gid,
                mtime,
                device,
                xattrs: xattrs(&ext.pax),
                link,
                path,
            })
        }
    }

    /// A name from a PAX record, else from a GNU long-name header, else the header's own.
    fn pick(pax: Option<&[u8]>, gnu: Option<&[u8]>, header: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        pax.or(gnu).map_or_else(header, <[u8]>::to_vec)
    }

    /// One member's numeric fields; a PAX record wins over the header field.
    struct Fields<'a> {
        header: &'a Header,
        ext: &'a Extensions,
        at: u64,
        path: &'a [u8],
    }

    impl Fields<'_> {
        fn number(
            &self,
            pax_key: Option<&[u8]>,
            raw: &[u8],
            parsed: io::Result<u64>,
        ) -> Result<u64, UnpackError> {
            match pax_key.and_then(|k| self.ext.pax(k)) {
                Some(v) => parse_u64(v).ok_or_else(|| self.malformed("unparsable PAX number")),
                None => numeric(raw, parsed).map_err(|e| self.malformed(e)),
            }
        }

        fn id(&self, key: &str, raw: &[u8], parsed: io::Result<u64>) -> Result<u32, UnpackError> {
            let id = self.number(Some(key.as_bytes()), raw, parsed)?;
            u32::try_from(id)
                .ok()
                .filter(|id| *id != u32::MAX)
                .ok_or_else(|| rejected(self.path, format!("{key} {id} out of range")))
        }

        fn mtime(&self) -> Result<Mtime, UnpackError> {
            if let Some(v) = self.ext.pax(b"mtime") {
                return parse_time(v).ok_or_else(|| self.malformed("unparsable PAX mtime"));
            }
            let secs = self.number(None, &self.header.as_old().mtime, self.header.mtime())?;
            Ok(Mtime {
                secs: i64::try_from(secs).unwrap_or(i64::MAX),
                nanos: 0,
            })
        }

        fn device(&self) -> Result<(u64, u64), UnpackError> {
            let h = self.header;
            let number = |raw, parsed: io::Result<Option<u32>>| {
                self.number(None, raw, parsed.map(|n| u64::from(n.unwrap_or(0))))
            };
            Ok((
                number(&h.as_bytes()[DEV_MAJOR], h.device_major())?,
                number(&h.as_bytes()[DEV_MINOR], h.device_minor())?,
            ))
        }

        fn malformed(&self, reason: impl std::fmt::Display) -> UnpackError {
            let path = shown(self.path);
            malformed(self.at, format!("entry `{}`: {reason}", path.display()))
        }
    }

    fn kind(type_flag: u8, path: &[u8]) -> Result<Kind, UnpackError> {
        Ok(match type_flag {
            // Old tars mark directories with a trailing slash on a regular-file entry.
            b'\0' if path.ends_with(b"/") => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                let shown = std::ascii::escape_default(other);
                return Err(rejected(path, format!("unsupported entry type `{shown}`")));
            }
        })
    }

    /// A numeric header field; an all-NUL or blank field reads as zero, as in Go's archive/tar.
    fn numeric<T: Default>(raw: &[u8], parsed: io::Result<T>) -> io::Result<T> {
        if raw.iter().all(|b| *b == 0 || *b == b' ') {
            Ok(T::default())
        } else {
            parsed
        }
    }

    fn check_len(path: &[u8], value: &[u8], what: &str) -> Result<(), UnpackError> {
        if value.len() > MAX_PATH_LEN {
            let reason = format!("{what} of {} bytes exceeds {MAX_PATH_LEN}", value.len());
            return Err(rejected(path, reason));
        }
        Ok(())
    }

    fn xattrs(pax: &[(Vec<u8>, Vec<u8>)]) -> Records {
        pax.iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(XATTR_PREFIX)?;
                Some((name.to_vec(), v.clone()))
            })
            .collect()
    }

    fn verify_checksum(header: &Header, at: u64) -> Result<(), UnpackError> {
        let stored = header
            .cksum()
            .map_err(|_| malformed(at, "unreadable header checksum (not a tar stream?)"))?;
        let (mut unsigned, mut signed) = (0u32, 0i64);
        for (i, b) in header.as_bytes().iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { *b };
            unsigned += u32::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || i64::from(stored) == signed {
            Ok(())
        } else {
            Err(malformed(
                at,
                "header checksum mismatch (not a tar stream?)",
            ))
        }
    }

    /// Parses `"<len> <key>=<value>\n"` records by their length, so values may hold newlines.
    fn parse_pax(data: &[u8], at: u64) -> Result<Records, UnpackError> {
        let bad = || malformed(at, "malformed PAX record");
        let mut records = Vec::new();
        let mut rest = data;
        while !rest.is_empty() && rest.iter().any(|b| *b != 0) {
            let space = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
            let len = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(bad)?;
            if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad());
            }
            let record = &rest[space + 1..len - 1];
            let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
            if records.len() >= MAX_PAX_RECORDS {
                return Err(malformed(
                    at,
                    format!("more than {MAX_PAX_RECORDS} records in one PAX header"),
                ));
            }
            records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
            rest = &rest[len..];
        }
        Ok(records)
    }

    fn parse_u64(v: &[u8]) -> Option<u64> {
        std::str::from_utf8(v).ok()?.parse().ok()
    }

    /// A PAX time: decimal seconds, optionally negative, with an optional fraction.
    fn parse_time(v: &[u8]) -> Option<Mtime> {
        let s = std::str::from_utf8(v).ok()?;
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: i64 = whole.parse().ok()?;
        let digits: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        let nanos: i64 = digits.parse().ok()?;
        Some(match (negative, nanos) {
            (false, _) => Mtime { secs, nanos },
            (true, 0) => Mtime {
                secs: -secs,
                nanos: 0,
            },
            (true, _) => Mtime {
                secs: -secs - 1,
                nanos: 1_000_000_000 - nanos,
            },
        })
    }

    /// GNU long names end at their first NUL.
    fn c_string(mut data: Vec<u8>) -> Vec<u8> {
        if let Some(nul) = data.iter().position(|b| *b == 0) {
            data.truncate(nul);
        }
        data
    }

    fn malformed(offset: u64, reason: impl Into<String>) -> UnpackError {
        UnpackError::Malformed {
            offset,
            reason: reason.into(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pax_records_are_split_by_length_not_newline() {
            let value = b"a\nb=c";
            let record = format!("{} SCHILY.xattr.user.x=", 1 + 1 + 20 + value.len() + 1 + 1);
            let mut data = record.into_bytes();
            data.extend_from_slice(value);
            data.push(b'\n');
            data.extend_from_slice(b"9 path=p\n");
            let records = parse_pax(&data, 0).expect("parse");
            assert_eq!(
                records[0],
                (b"SCHILY.xattr.user.x".to_vec(), value.to_vec())
            );
            assert_eq!(records[1], (b"path".to_vec(), b"p".to_vec()));
        }

        #[test]
        fn pax_record_with_wrong_length_is_malformed() {
            assert!(parse_pax(b"99 path=p\n", 0).is_err());
            assert!(parse_pax(b"path=p\n", 0).is_err());
            assert!(parse_pax(b"8 path=p\n", 0).is_err());
        }

        #[test]
        fn pax_times_keep_fractions_and_sign() {
            let t = |s: &str| parse_time(s.as_bytes());
            assert_eq!(t("12"), Some(Mtime { secs: 12, nanos: 0 }));
            assert_eq!(
                t("12.5"),
                Some(Mtime {
                    secs: 12,
                    nanos: 500_000_000
                })
            );
            assert_eq!(t("1.0000000019"), Some(Mtime { secs: 1, nanos: 1 }));
            assert_eq!(
                t("-1.25"),
                Some(Mtime {
                    secs: -2,
                    nanos: 750_000_000
                })
            );
            assert_eq!(t("x"), None);
            assert_eq!(t("1.x"), None);
        }

        #[test]
        fn long_names_stop_at_nul() {
            assert_eq!(c_string(b"abc\0\0".to_vec()), b"abc");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<(String, String), &'static str> {
        let p = EntryPath::parse(raw.as_bytes())?;
        let name = p.name().map(|n| String::from_utf8_lossy(n).into_owned());
        Ok((
            String::from_utf8_lossy(p.parent()).into_owned(),
            name.unwrap_or_default(),
        ))
    }

    #[test]
    fn entry_paths_drop_dot_and_empty_components() {
        assert_eq!(parsed("./a//b/./c"), Ok(("a/b".into(), "c".into())));
        assert_eq!(parsed("a/"), Ok(("".into(), "a".into())));
        assert_eq!(parsed("./"), Ok(("".into(), "".into())));
    }

    #[test]
    fn entry_paths_refuse_dotdot_absolute_and_nul() {
        assert!(parsed("../x").is_err());
        assert!(parsed("a/../../x").is_err());
        assert!(parsed("a/..").is_err());
        assert!(parsed("/etc/passwd").is_err());
        assert!(EntryPath::parse(b"a\0b").is_err());
    }

    #[test]
    fn dotdot_lookalikes_are_ordinary_names() {
        assert_eq!(parsed("..a/...b"), Ok(("..a".into(), "...b".into())));
    }
}
