//! The checkpoint archive, in the layout CRI-O, containerd and Podman write and
//! `checkpointctl` reads: a tar holding
//!
//! ```text
//! checkpoint/        CRIU's images (plus descriptors.json: the dumped stdio, as runc writes it)
//! config.dump        {"id","name","rootfsImage","rootfsImageRef","rootfsImageName","runtime",
//!                     "createdTime","checkpointedTime","restoredTime","restored"}
//! spec.dump          the container's OCI runtime spec (process, root, mounts, annotations)
//! rootfs-diff.tar    the files of the container's writable layer
//! deleted.files      JSON list of the paths the container deleted from its image
//! container.log      the container's CRI log at checkpoint time
//! dump.log           CRIU's log of the dump
//! ```
//!
//! Reading an archive extracts it beneath a directory with the `tar` crate's path checks
//! (no absolute paths, no `..`, no writing through symlinks).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";
pub const CONTAINER_LOG: &str = "container.log";
pub const DUMP_LOG: &str = "dump.log";
/// runc's name for the dumped stdio, kept inside `checkpoint/`.
pub const DESCRIPTORS: &str = "descriptors.json";
/// berth's own file in `checkpoint/`: for fds 0, 1, 2 the key CRIU dumped each under when it
/// is external to the container (`pipe:[inode]`, `file[mnt_id:inode]`), else "".
pub const STDIO_KEYS: &str = "stdio-keys.json";

/// `config.dump`, as checkpointctl's `metadata.ContainerConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDump {
    pub id: String,
    pub name: String,
    #[serde(
        rename = "rootfsImage",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image: String,
    #[serde(
        rename = "rootfsImageRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_ref: String,
    #[serde(
        rename = "rootfsImageName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_name: String,
    #[serde(rename = "runtime", default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    #[serde(rename = "createdTime", default)]
    pub created_time: String,
    #[serde(rename = "checkpointedTime", default)]
    pub checkpointed_time: String,
    #[serde(rename = "restoredTime", default)]
    pub restored_time: String,
    #[serde(default)]
    pub restored: bool,
}

/// The parts of `spec.dump` berth reads back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpecDump {
    #[serde(default)]
    pub process: SpecProcess,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpecProcess {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
}

/// Writes the writable layer `upper` as `rootfs-diff.tar` into `dir` and the paths it deletes
/// from the image (overlayfs whiteouts: 0/0 character devices) as `deleted.files`.
pub fn write_rootfs_diff(upper: &Path, dir: &Path) -> io::Result<()> {
    let mut builder = tar::Builder::new(File::create(dir.join(ROOTFS_DIFF))?);
    builder.follow_symlinks(false);
    let mut deleted = Vec::new();
    add_tree(&mut builder, upper, Path::new(""), &mut deleted)?;
    builder.into_inner()?.sync_all()?;
    fs::write(
        dir.join(DELETED_FILES),
        serde_json::to_vec(&deleted).map_err(io::Error::other)?,
    )
}

fn add_tree(
    b: &mut tar::Builder<File>,
    base: &Path,
    rel: &Path,
    deleted: &mut Vec<String>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(base.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let path = base.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            deleted.push(format!("/{}", rel.display()));
        } else if ft.is_dir() {
            b.append_dir(&rel, &path)?;
            add_tree(b, base, &rel, deleted)?;
        } else {
            b.append_path_with_name(&path, &rel)?;
        }
    }
    Ok(())
}

/// Applies an extracted checkpoint's `rootfs-diff.tar` and `deleted.files` to a new
/// container's (empty) writable layer.
pub fn apply_rootfs_diff(extracted: &Path, upper: &Path) -> io::Result<()> {
    let diff = extracted.join(ROOTFS_DIFF);
    if diff.exists() {
        let mut a = tar::Archive::new(File::open(&diff)?);
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_preserve_mtime(true);
        a.set_overwrite(true);
        a.unpack(upper)?;
    }
    let deleted = extracted.join(DELETED_FILES);
    if deleted.exists() {
        let paths: Vec<String> =
            serde_json::from_slice(&fs::read(&deleted)?).map_err(io::Error::other)?;
        for p in paths {
            let rel = safe_relative(&p).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("deleted.files: bad path {p}"),
                )
            })?;
            let target = upper.join(rel);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let _ = fs::remove_file(&target);
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// `p` without its leading `/`, if it has no `..`, `.` or empty components.
fn safe_relative(p: &str) -> Option<PathBuf> {
    let rel = p.trim_start_matches('/');
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| PathBuf::from(rel))
}

/// Packs `dir` (the archive's contents) into the tar at `location`: written to a temporary
/// name beside it and renamed, so `location` is either complete or absent.
pub fn pack(dir: &Path, location: &Path) -> io::Result<()> {
    let tmp = tmp_name(location);
    let result = (|| {
        let mut b = tar::Builder::new(File::create(&tmp)?);
        b.follow_symlinks(false);
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = PathBuf::from(e.file_name());
            if e.file_type()?.is_dir() {
                b.append_dir_all(&name, e.path())?;
            } else {
                b.append_path_with_name(e.path(), &name)?;
            }
        }
        b.into_inner()?.sync_all()?;
        fs::rename(&tmp, location)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn tmp_name(location: &Path) -> PathBuf {
    let mut name = location.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".berth-tmp-{}", std::process::id()));
    location.with_file_name(name)
}

/// Whether `path` is a checkpoint archive (a tar holding `config.dump` and `checkpoint/`).
pub fn is_archive(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut a = tar::Archive::new(f);
    let Ok(entries) = a.entries() else {
        return false;
    };
    let (mut config, mut images) = (false, false);
    for e in entries.flatten() {
        let Ok(p) = e.path() else { continue };
        let p = p.to_string_lossy().trim_start_matches("./").to_string();
        config |= p == CONFIG_DUMP;
        images |= p == CHECKPOINT_DIR || p.starts_with("checkpoint/");
        if config && images {
            return true;
        }
    }
    false
}

/// The annotations that mark an OCI image as built from a checkpoint archive (its layer holds
/// the archive's files), each naming the checkpointed container: CRI-O's (Kubernetes'
/// documented `buildah config --annotation=…` step) and checkpointctl's, which containerd 2.x
/// and newer CRI-O read.
pub const IMAGE_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri-o.annotations.checkpoint.name",
    "org.criu.checkpoint.container.name",
];

/// The checkpointed container's name if `annotations` (an image manifest's) mark a checkpoint
/// image.
pub fn checkpoint_image_name(annotations: &BTreeMap<String, String>) -> Option<&str> {
    IMAGE_ANNOTATIONS
        .iter()
        .find_map(|k| annotations.get(*k))
        .map(String::as_str)
}

/// Whether `dir` holds an extracted checkpoint (`config.dump` and `checkpoint/`).
pub fn is_extracted(dir: &Path) -> bool {
    dir.join(CONFIG_DUMP).is_file() && dir.join(CHECKPOINT_DIR).is_dir()
}

/// Copies the tree `src` (an unpacked image layer holding a checkpoint) to `dst`, keeping
/// modes, owners and symlinks (never followed). Files are copied, not linked: the restore
/// writes beside them and the image's layer must stay as pulled. Special files have no place
/// in a checkpoint and are refused.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir_all(dst)?;
    copy_entry_meta(&meta, dst)?;
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
            copy_entry_meta(&meta, &to)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a special file in a checkpoint", from.display()),
            ));
        }
    }
    Ok(())
}

fn copy_entry_meta(meta: &fs::Metadata, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// Extracts the archive at `path` beneath `dir`.
pub fn extract(path: &Path, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut a = tar::Archive::new(File::open(path)?);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.unpack(dir)
}

/// Reads `config.dump` and `spec.dump` of an extracted archive.
pub fn read_dumps(dir: &Path) -> io::Result<(ConfigDump, SpecDump)> {
    let read = |name: &str| {
        fs::read(dir.join(name)).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))
    };
    let config = serde_json::from_slice(&read(CONFIG_DUMP)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{CONFIG_DUMP}: {e}")))?;
    let spec = serde_json::from_slice(&read(SPEC_DUMP)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{SPEC_DUMP}: {e}")))?;
    Ok((config, spec))
}

/// RFC 3339 UTC time (`2026-12-07T10:20:09.123456789Z`) of Unix nanoseconds, as Go's
/// `time.Time` marshals it.
pub fn rfc3339(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_like_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_638_809_500_000_000), "2026-12-07T10:20:09.5Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn config_dump_uses_checkpointctl_field_names() {
        let c = ConfigDump {
            id: "abc".into(),
            name: "counter".into(),
            rootfs_image_name: "busybox".into(),
            runtime: "berth".into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&c).expect("json");
        assert_eq!(v["rootfsImageName"], "busybox");
        assert_eq!(v["runtime"], "berth");
        assert!(v.get("checkpointedTime").is_some());
        assert!(v.get("rootfsImageRef").is_none());
    }

    #[test]
    fn rootfs_diff_round_trips_files_links_and_deletions() {
        let upper = tempfile::tempdir().expect("upper");
        std::fs::create_dir_all(upper.path().join("var/data")).expect("mkdir");
        std::fs::write(upper.path().join("var/data/count"), "41").expect("file");
        std::os::unix::fs::symlink("data/count", upper.path().join("var/link")).expect("link");
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            nix::sys::stat::mknod(
                &upper.path().join("gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .expect("whiteout");
        }
        let out = tempfile::tempdir().expect("out");
        write_rootfs_diff(upper.path(), out.path()).expect("diff");
        let deleted: Vec<String> =
            serde_json::from_slice(&std::fs::read(out.path().join(DELETED_FILES)).expect("read"))
                .expect("json");
        assert_eq!(
            deleted,
            if is_root {
                vec!["/gone".to_string()]
            } else {
                vec![]
            }
        );
        let fresh = tempfile::tempdir().expect("fresh");
        if is_root {
            apply_rootfs_diff(out.path(), fresh.path()).expect("apply");
            let gone = std::fs::symlink_metadata(fresh.path().join("gone")).expect("whiteout");
            assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        }
        let mut a = tar::Archive::new(File::open(out.path().join(ROOTFS_DIFF)).expect("tar"));
        let names: Vec<String> = a
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["var", "var/data", "var/data/count", "var/link"]);
    }

    #[test]
    fn a_diff_without_directory_entries_applies() {
        let out = tempfile::tempdir().expect("out");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "var/marker", &b"hi"[..])
            .expect("append");
        std::fs::write(out.path().join(ROOTFS_DIFF), b.into_inner().expect("tar")).expect("w");
        let upper = tempfile::tempdir().expect("upper");
        if let Err(e) = apply_rootfs_diff(out.path(), upper.path()) {
            panic!("{e}: {:?}", std::error::Error::source(&e));
        }
        assert_eq!(
            std::fs::read_to_string(upper.path().join("var/marker")).expect("read"),
            "hi"
        );
    }

    #[test]
    fn deleted_files_cannot_climb_out_of_the_layer() {
        assert!(safe_relative("/../etc/passwd").is_none());
        assert!(safe_relative("/a/../../b").is_none());
        assert!(safe_relative("/").is_none());
        assert_eq!(safe_relative("/a/b"), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn checkpoint_images_are_known_by_either_annotation() {
        let mut a = BTreeMap::new();
        a.insert("org.opencontainers.image.created".to_string(), "x".into());
        assert_eq!(checkpoint_image_name(&a), None);
        a.insert(
            "org.criu.checkpoint.container.name".to_string(),
            "counter".into(),
        );
        assert_eq!(checkpoint_image_name(&a), Some("counter"));
        let mut b = BTreeMap::new();
        b.insert(
            "io.kubernetes.cri-o.annotations.checkpoint.name".to_string(),
            "web".into(),
        );
        assert_eq!(checkpoint_image_name(&b), Some("web"));
    }

    #[test]
    fn copy_tree_keeps_files_modes_and_links_and_refuses_special_files() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().expect("src");
        std::fs::create_dir(src.path().join(CHECKPOINT_DIR)).expect("mkdir");
        std::fs::write(src.path().join(CHECKPOINT_DIR).join("pages-1.img"), "p").expect("img");
        std::fs::write(src.path().join(CONFIG_DUMP), "{}").expect("config");
        std::fs::set_permissions(
            src.path().join(CONFIG_DUMP),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).expect("link");
        let dst = tempfile::tempdir().expect("dst");
        let to = dst.path().join("copy");
        copy_tree(src.path(), &to).expect("copy");
        assert!(is_extracted(&to));
        assert!(!is_extracted(src.path().join(CHECKPOINT_DIR).as_path()));
        let mode = std::fs::metadata(to.join(CONFIG_DUMP))
            .expect("meta")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(to.join("link")).expect("link"),
            Path::new("/etc/passwd"),
            "a symlink is copied as a link, not followed"
        );
        nix::unistd::mkfifo(&src.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let err = copy_tree(src.path(), &dst.path().join("again")).expect_err("fifo");
        assert!(err.to_string().contains("special file"), "{err}");
    }

    #[test]
    fn pack_writes_a_recognisable_archive_atomically() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join(CHECKPOINT_DIR)).expect("mkdir");
        std::fs::write(dir.path().join(CHECKPOINT_DIR).join("pstree.img"), "x").expect("img");
        std::fs::write(dir.path().join(CONFIG_DUMP), "{}").expect("config");
        let out = tempfile::tempdir().expect("out");
        let location = out.path().join("ckpt.tar");
        pack(dir.path(), &location).expect("pack");
        assert!(is_archive(&location));
        let names: Vec<_> = std::fs::read_dir(out.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let plain = out.path().join("plain.tar");
        std::fs::write(&plain, "not a tar").expect("write");
        assert!(!is_archive(&plain));
        assert!(!is_archive(&out.path().join("missing.tar")));
    }
}
