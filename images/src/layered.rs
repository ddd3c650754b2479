//! Reading a file of an image as the container will see it, from its unpacked layers (overlayfs
//! lower-dir format, top layer first) without mounting them: berthd reads the image's
//! `/etc/passwd` and `/etc/group` to resolve a user name.
//!
//! The layers come from an untrusted image and berthd runs as root on the host, so a path is
//! walked component by component through the stack as overlayfs would: the topmost layer
//! holding a name wins, a whiteout (a 0/0 character device) hides it, an opaque directory hides
//! what the layers below hold in it, and a symlink is resolved inside the image (an absolute
//! target starts again at the image's root, `..` stops at it). Nothing on the host outside the
//! layer directories is ever looked at: an image whose `/etc` is a symlink to `/etc` gets its
//! own (possibly missing) `/etc/passwd`, never the host's.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one lookup before giving up (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Reads `path` (absolute or relative to the image root) through `layers` (top layer first):
/// `Ok(None)` if the image has no regular file there, an error if it is larger than `max`.
pub fn read_file(layers: &[PathBuf], path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(host) = resolve(layers, Path::new(path))? else {
        return Ok(None);
    };
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&host)?;
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut data = Vec::new();
    file.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} is larger than {max} bytes"),
        ));
    }
    Ok(Some(data))
}

/// The host path of the layer entry `path` names in the union, following symlinks inside the
/// image; `None` if nothing (or a non-regular file) is there.
pub fn resolve(layers: &[PathBuf], path: &Path) -> io::Result<Option<PathBuf>> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut remaining: Vec<OsString> = components(path);
    remaining.reverse();
    let mut links = 0;
    while let Some(name) = remaining.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(name);
        let Some((layer, meta)) = top_entry(layers, &resolved)? else {
            return Ok(None);
        };
        let host = join(layer, &resolved);
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Ok(None);
            }
            let target = std::fs::read_link(&host)?;
            resolved.pop();
            if target.is_absolute() {
                resolved.clear();
            }
            let mut more = components(&target);
            more.reverse();
            remaining.extend(more);
        } else if meta.is_dir() {
            continue;
        } else if !remaining.is_empty() || !meta.is_file() {
            return Ok(None);
        } else {
            return Ok(Some(host));
        }
    }
    Ok(None)
}

/// `Normal` and `..` components; `/` and `.` are dropped.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn join(layer: &Path, names: &[OsString]) -> PathBuf {
    let mut p = layer.to_path_buf();
    p.extend(names);
    p
}

/// Where a lookup of one name stopped in one layer.
enum InLayer {
    Found(Metadata),
    /// Not in this layer; look in the next one.
    Absent,
    /// Not in this layer, and the layers below are hidden (whiteout, opaque or non-directory
    /// parent).
    Hidden,
}

/// The topmost layer holding `names` (whose parents are all directories in the union) and the
/// entry's metadata, not following a final symlink.
fn top_entry<'a>(
    layers: &'a [PathBuf],
    names: &[OsString],
) -> io::Result<Option<(&'a Path, Metadata)>> {
    for layer in layers {
        match in_layer(layer, names)? {
            InLayer::Found(meta) => return Ok(Some((layer, meta))),
            InLayer::Absent => continue,
            InLayer::Hidden => return Ok(None),
        }
    }
    Ok(None)
}

fn in_layer(layer: &Path, names: &[OsString]) -> io::Result<InLayer> {
    let mut dir = layer.to_path_buf();
    let mut opaque = false;
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(if opaque {
                    InLayer::Hidden
                } else {
                    InLayer::Absent
                });
            }
            Err(e) => return Err(e),
        };
        if is_whiteout(&meta) {
            return Ok(InLayer::Hidden);
        }
        if i + 1 == names.len() {
            return Ok(InLayer::Found(meta));
        }
        if !meta.is_dir() {
            // A file or symlink above a directory the union walked through: this layer (and
            // the ones below) hold nothing under it.
            return Ok(InLayer::Hidden);
        }
        opaque = is_opaque(&path);
        dir = path;
    }
    Ok(InLayer::Absent)
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let (Ok(path), Ok(name)) = (
        std::ffi::CString::new(dir.as_os_str().as_bytes()),
        std::ffi::CString::new(OPAQUE_XATTR),
    ) else {
        return false;
    };
    let mut value = [0u8; 1];
    // SAFETY: both strings are NUL-terminated and `value` is a writable buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layer(root: &Path, name: &str) -> PathBuf {
        let p = root.join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    fn read(layers: &[PathBuf], path: &str) -> Option<String> {
        read_file(layers, path, 1 << 20)
            .expect("read")
            .map(|b| String::from_utf8(b).expect("utf8"))
    }

    #[test]
    fn host_symlinks_in_an_image_stay_inside_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = layer(t.path(), "top");
        symlink("/etc", top.join("etc")).expect("symlink");
        assert_eq!(read(std::slice::from_ref(&top), "/etc/passwd"), None);
        let base = layer(t.path(), "base");
        std::fs::create_dir_all(base.join("etc")).expect("mkdir");
        std::fs::write(base.join("etc/passwd"), "image").expect("write");
        // The top layer's symlink hides the lower `etc` directory and points at itself.
        assert_eq!(read(&[top, base.clone()], "/etc/passwd"), None);
        let link = layer(t.path(), "link");
        symlink("../../../../etc/passwd", link.join("passwd")).expect("symlink");
        assert_eq!(read(&[link, base], "passwd"), Some("image".into()));
    }

    #[test]
    fn symlinks_resolve_across_layers_and_whiteouts_hide() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = layer(t.path(), "top");
        let mid = layer(t.path(), "mid");
        let base = layer(t.path(), "base");
        symlink("usr/etc", top.join("etc")).expect("symlink");
        std::fs::create_dir_all(base.join("usr/etc")).expect("mkdir");
        std::fs::write(base.join("usr/etc/passwd"), "base").expect("write");
        std::fs::write(base.join("usr/etc/group"), "base").expect("write");
        std::fs::create_dir_all(mid.join("usr/etc")).expect("mkdir");
        std::fs::write(mid.join("usr/etc/passwd"), "mid").expect("write");
        nix::sys::stat::mknod(
            &mid.join("usr/etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .expect("whiteout");
        let layers = [top, mid, base];
        assert_eq!(read(&layers, "/etc/passwd"), Some("mid".into()));
        assert_eq!(read(&layers, "/etc/group"), None);
    }

    #[test]
    fn symlink_loops_end() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = layer(t.path(), "top");
        symlink("b", top.join("a")).expect("symlink");
        symlink("a", top.join("b")).expect("symlink");
        assert_eq!(read(&[top], "a/passwd"), None);
    }
}
