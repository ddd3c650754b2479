//! Small filesystem helpers: atomic writes and unique temp names.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A name for a temp sibling of `name` that no other writer picks: `.tmp-<name>-<random>`.
pub fn temp_name(name: &str) -> String {
    format!(".tmp-{name}-{:016x}", rand::random::<u64>())
}

/// Writes `bytes` to `path` so readers see the old or the new file, never a torn one, even
/// across a crash: write a temp file beside it, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, true)
}

/// Like [`write_atomic`], without the fsyncs: readers (and a process that crashed and came
/// back) see the old or the new file, but a machine crash may lose the write. The caller
/// makes it durable later, if it matters, with [`sync_file_and_dir`].
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false)
}

/// fsyncs a file and its directory (a file already removed is not an error).
pub fn sync_file_and_dir(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(dir) => match sync_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        None => Ok(()),
    }
}

fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(temp_name(&name));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if sync { sync_dir(dir) } else { Ok(()) }
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes every `.tmp-*` entry left in `dir` by an interrupted writer; returns how many.
pub fn remove_temp_entries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        remove_any(&entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes a file or a whole directory tree.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its parents with mode 0700 if missing.
pub fn ensure_dir(dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("db.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn temp_entries_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join(temp_name("a"))).expect("dir");
        fs::write(dir.path().join(temp_name("b")), b"x").expect("file");
        fs::write(dir.path().join("keep"), b"x").expect("file");
        assert_eq!(remove_temp_entries(dir.path()).expect("sweep"), 2);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
