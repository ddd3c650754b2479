//! Layer unpacking: overlayfs lower-dir semantics, and refusal of layers that try to write
//! outside their snapshot. Tests that create devices, chown or set trusted.* xattrs need root
//! and say so when skipped.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use images::decompress::{Compression, decoder};
use images::unpack::{UnpackError, UnpackStats, unpack_layer};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that needs root, saying why.
macro_rules! require_root {
    ($name:literal) => {
        if !is_root() {
            eprintln!("skipping {}: needs root (euid != 0)", $name);
            return;
        }
    };
}

/// Metadata written into a test header.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

const DEFAULT: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: MTIME,
};

/// Builds test layers; names and link targets are written raw, bypassing the tar crate's own
/// checks, so malicious entries can be expressed.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        meta: Meta,
    ) -> &mut Layer {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.raw(EntryType::Regular, name.as_bytes(), b"", data, DEFAULT)
    }

    fn dir(&mut self, name: &str) -> &mut Layer {
        self.raw(
            EntryType::Directory,
            name.as_bytes(),
            b"",
            b"",
            Meta {
                mode: 0o755,
                ..DEFAULT
            },
        )
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let meta = Meta {
            mode: 0o777,
            ..DEFAULT
        };
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            meta,
        )
    }

    fn hard_link(&mut self, name: &str, target: &str) -> &mut Layer {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            DEFAULT,
        )
    }

    fn device(
        &mut self,
        kind: EntryType,
        name: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Layer {
        let mut h = Header::new_gnu();
        h.set_path(name).expect("path");
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_size(0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.0.append(&h, &[][..]).expect("append");
        self
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        self.0
            .append_pax_extensions(records.iter().copied())
            .expect("pax");
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finish")
    }
}

/// A temp dir holding `dest` (the snapshot) and `outside` (a sibling with a sentinel file
/// that no layer may touch).
struct Sandbox {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).expect("dest");
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("sentinel"), b"original").expect("sentinel");
        Sandbox { tmp, dest, outside }
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
        unpack_layer(tar, &self.dest)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(names(self.tmp.path()), ["dest", "outside"]);
        assert_eq!(names(&self.outside), ["sentinel"]);
        let sentinel = self.outside.join("sentinel");
        assert_eq!(fs::read(&sentinel).expect("sentinel"), b"original");
        let meta = fs::symlink_metadata(&sentinel).expect("sentinel");
        assert_eq!(meta.nlink(), 1, "sentinel was hard-linked");
        assert_eq!(meta.mode() & 0o7777, 0o644, "sentinel mode changed");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn rejected(result: Result<UnpackStats, UnpackError>, reason: &str) -> String {
    match result {
        Err(e @ UnpackError::Rejected { .. }) => {
            let message = e.to_string();
            assert!(message.contains(reason), "`{message}` lacks `{reason}`");
            message
        }
        other => panic!("expected rejection ({reason}), got {other:?}"),
    }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).expect("getxattr")
}

// --- what a layer may do -----------------------------------------------------------------

#[test]
fn regular_file_keeps_content_mode_owner_and_mtime() {
    require_root!("regular_file_keeps_content_mode_owner_and_mtime");
    let sb = Sandbox::new();
    let meta = Meta {
        mode: 0o4750,
        uid: 1000,
        gid: 2000,
        mtime: MTIME,
    };
    let tar = Layer::new()
        .raw(
            EntryType::Directory,
            b"bin/",
            b"",
            b"",
            Meta {
                mode: 0o711,
                mtime: MTIME - 5,
                ..DEFAULT
            },
        )
        .raw(
            EntryType::Regular,
            b"bin/tool",
            b"",
            b"#!/bin/sh\necho hi\n",
            meta,
        )
        .finish();
    let stats = sb.unpack(&tar).expect("unpack");
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, 18);
    assert_eq!(stats.stream_bytes, tar.len() as u64);

    let f = fs::symlink_metadata(sb.path("bin/tool")).expect("stat");
    assert_eq!(
        fs::read(sb.path("bin/tool")).expect("read"),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(f.mode() & 0o7777, 0o4750, "setuid survives chown");
    assert_eq!((f.uid(), f.gid()), (1000, 2000));
    assert_eq!(f.mtime(), MTIME as i64);
    let d = fs::symlink_metadata(sb.path("bin")).expect("stat");
    assert_eq!(d.mode() & 0o7777, 0o711);
    assert_eq!(
        d.mtime(),
        (MTIME - 5) as i64,
        "dir mtime set after its contents"
    );
}

#[test]
fn sticky_and_setgid_directory_modes_are_kept() {
    require_root!("sticky_and_setgid_directory_modes_are_kept");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .raw(
            EntryType::Directory,
            b"tmp",
            b"",
            b"",
            Meta {
                mode: 0o1777,
                ..DEFAULT
            },
        )
        .raw(
            EntryType::Directory,
            b"shared",
            b"",
            b"",
            Meta {
                mode: 0o2775,
                gid: 50,
                ..DEFAULT
            },
        )
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(
        fs::metadata(sb.path("tmp")).expect("stat").mode() & 0o7777,
        0o1777
    );
    let shared = fs::metadata(sb.path("shared")).expect("stat");
    assert_eq!(shared.mode() & 0o7777, 0o2775);
    assert_eq!(shared.gid(), 50);
}

#[test]
fn missing_parent_directories_are_created() {
    require_root!("missing_parent_directories_are_created");
    let sb = Sandbox::new();
    let tar = Layer::new().file("./a/b/c/file", b"x").finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read(sb.path("a/b/c/file")).expect("read"), b"x");
    assert_eq!(
        fs::metadata(sb.path("a/b")).expect("stat").mode() & 0o7777,
        0o755
    );
}

#[test]
fn root_entry_is_ignored() {
    require_root!("root_entry_is_ignored");
    let sb = Sandbox::new();
    let tar = Layer::new().dir("./").file("./etc", b"x").finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(names(&sb.dest), ["etc"]);
}

#[test]
fn symlinks_are_kept_as_is_and_not_followed() {
    require_root!("symlinks_are_kept_as_is_and_not_followed");
    let sb = Sandbox::new();
    let abs = sb.outside.join("sentinel");
    let tar = Layer::new()
        .symlink("abs", abs.to_str().expect("utf8"))
        .symlink("rel", "../outside/sentinel")
        .raw(
            EntryType::Symlink,
            b"owned",
            b"target",
            b"",
            Meta {
                uid: 7,
                gid: 8,
                ..DEFAULT
            },
        )
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read_link(sb.path("abs")).expect("readlink"), abs);
    assert_eq!(
        fs::read_link(sb.path("rel")).expect("readlink"),
        Path::new("../outside/sentinel")
    );
    let owned = fs::symlink_metadata(sb.path("owned")).expect("lstat");
    assert_eq!(
        (owned.uid(), owned.gid()),
        (7, 8),
        "lchown, not chown of the target"
    );
    assert_eq!(owned.mtime(), MTIME as i64);
    sb.assert_outside_untouched();
}

#[test]
fn hard_link_shares_the_inode_of_an_earlier_entry() {
    require_root!("hard_link_shares_the_inode_of_an_earlier_entry");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("usr/bin/python3.12", b"elf")
        .hard_link("usr/bin/python3", "./usr/bin/python3.12")
        .finish();
    sb.unpack(&tar).expect("unpack");
    let a = fs::metadata(sb.path("usr/bin/python3.12")).expect("stat");
    let b = fs::metadata(sb.path("usr/bin/python3")).expect("stat");
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn hard_link_to_symlink_links_the_symlink_itself() {
    require_root!("hard_link_to_symlink_links_the_symlink_itself");
    let sb = Sandbox::new();
    let target = sb.outside.join("sentinel");
    let tar = Layer::new()
        .symlink("s", target.to_str().expect("utf8"))
        .hard_link("h", "s")
        .finish();
    sb.unpack(&tar).expect("unpack");
    let h = fs::symlink_metadata(sb.path("h")).expect("lstat");
    assert!(h.file_type().is_symlink());
    assert_eq!(
        h.ino(),
        fs::symlink_metadata(sb.path("s")).expect("lstat").ino()
    );
    sb.assert_outside_untouched();
}

#[test]
fn fifo_is_created() {
    require_root!("fifo_is_created");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .device(EntryType::Fifo, "run/pipe", 0, 0, 0o620)
        .finish();
    sb.unpack(&tar).expect("unpack");
    let m = fs::symlink_metadata(sb.path("run/pipe")).expect("stat");
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o620);
    assert_eq!(m.mtime(), MTIME as i64);
}

#[test]
fn char_and_block_devices_are_created() {
    require_root!("char_and_block_devices_are_created");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .device(EntryType::Char, "dev/null", 1, 3, 0o666)
        .device(EntryType::Block, "dev/loop9", 7, 9, 0o660)
        .finish();
    sb.unpack(&tar).expect("unpack");
    let null = fs::symlink_metadata(sb.path("dev/null")).expect("stat");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = fs::symlink_metadata(sb.path("dev/loop9")).expect("stat");
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 9));
}

#[test]
fn pax_xattrs_are_applied_including_binary_values() {
    require_root!("pax_xattrs_are_applied_including_binary_values");
    let sb = Sandbox::new();
    let binary: &[u8] = b"\x01\n\x00\xff=";
    let tar = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("SCHILY.xattr.user.bin", binary),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .file("f", b"x")
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("d")
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(
        get_xattr(&sb.path("f"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get_xattr(&sb.path("f"), "user.bin").as_deref(),
        Some(binary)
    );
    assert_eq!(
        get_xattr(&sb.path("f"), "trusted.overlay.redirect"),
        None,
        "overlay xattrs from a layer are dropped"
    );
    assert_eq!(
        get_xattr(&sb.path("d"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
}

#[test]
fn file_capability_survives_chown() {
    require_root!("file_capability_survives_chown");
    let sb = Sandbox::new();
    // vfs_cap_data: REVISION_2 | FLAGS_EFFECTIVE, permitted = CAP_NET_RAW (bit 13), little endian.
    let cap = vec![
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tar = Layer::new()
        .pax(&[("SCHILY.xattr.security.capability", &cap)])
        .raw(
            EntryType::Regular,
            b"ping",
            b"",
            b"elf",
            Meta {
                uid: 0,
                gid: 0,
                mode: 0o755,
                mtime: MTIME,
            },
        )
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(
        get_xattr(&sb.path("ping"), "security.capability"),
        Some(cap)
    );
}

#[test]
fn whiteout_becomes_a_0_0_char_device() {
    require_root!("whiteout_becomes_a_0_0_char_device");
    let sb = Sandbox::new();
    let tar = Layer::new().dir("etc").file("etc/.wh.motd", b"").finish();
    let stats = sb.unpack(&tar).expect("unpack");
    assert_eq!(stats.whiteouts, 1);
    let m = fs::symlink_metadata(sb.path("etc/motd")).expect("stat");
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!sb.path("etc/.wh.motd").exists());
}

#[test]
fn opaque_marker_sets_overlay_opaque_xattr() {
    require_root!("opaque_marker_sets_overlay_opaque_xattr");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("var")
        .file("var/.wh..wh..opq", b"")
        .file("var/keep", b"x")
        .file("new/.wh..wh..opq", b"") // before its directory's own entry
        .dir("new")
        .file("meta/.wh..wh.plnk", b"") // other meta entries are ignored
        .finish();
    let stats = sb.unpack(&tar).expect("unpack");
    assert_eq!(stats.whiteouts, 2);
    assert_eq!(
        get_xattr(&sb.path("var"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        get_xattr(&sb.path("new"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(names(&sb.path("var")), ["keep"]);
    assert!(!sb.path("meta").exists(), "ignored entries create nothing");
}

#[test]
fn whiteout_does_not_hide_an_entry_of_the_same_layer() {
    require_root!("whiteout_does_not_hide_an_entry_of_the_same_layer");
    let sb = Sandbox::new();
    let tar = Layer::new().file("a", b"kept").file(".wh.a", b"").finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read(sb.path("a")).expect("read"), b"kept");
}

#[test]
fn later_entry_replaces_earlier_one() {
    require_root!("later_entry_replaces_earlier_one");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("f", b"first")
        .file("f", b"second")
        .dir("d")
        .file("d/inner/x", b"x")
        .file("d", b"file over dir")
        .file("e", b"dir over file")
        .dir("e")
        .dir("m")
        .file("m/one", b"1")
        .raw(
            EntryType::Directory,
            b"m",
            b"",
            b"",
            Meta {
                mode: 0o700,
                ..DEFAULT
            },
        )
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read(sb.path("f")).expect("read"), b"second");
    assert_eq!(fs::read(sb.path("d")).expect("read"), b"file over dir");
    assert!(fs::metadata(sb.path("e")).expect("stat").is_dir());
    assert_eq!(names(&sb.path("m")), ["one"], "dir over dir merges");
    assert_eq!(
        fs::metadata(sb.path("m")).expect("stat").mode() & 0o7777,
        0o700
    );
}

#[test]
fn file_over_symlink_replaces_the_link_not_its_target() {
    require_root!("file_over_symlink_replaces_the_link_not_its_target");
    let sb = Sandbox::new();
    let target = sb.outside.join("sentinel");
    let tar = Layer::new()
        .symlink("abs", target.to_str().expect("utf8"))
        .file("abs", b"pwned")
        .symlink("rel", "../outside/sentinel")
        .file("rel", b"pwned")
        .symlink("d", "../outside")
        .dir("d")
        .file("d/x", b"inside")
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read(sb.path("abs")).expect("read"), b"pwned");
    assert_eq!(fs::read(sb.path("rel")).expect("read"), b"pwned");
    assert!(fs::symlink_metadata(sb.path("d")).expect("stat").is_dir());
    assert_eq!(fs::read(sb.path("d/x")).expect("read"), b"inside");
    sb.assert_outside_untouched();
}

#[test]
fn gnu_long_names_and_non_utf8_paths_are_kept() {
    require_root!("gnu_long_names_and_non_utf8_paths_are_kept");
    let sb = Sandbox::new();
    let long = format!("{}/file", "d".repeat(200));
    let mut layer = Layer::new();
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    layer
        .0
        .append_data(&mut h, &long, &b"long"[..])
        .expect("long name");
    let tar = layer
        .raw(EntryType::Regular, b"caf\xe9", b"", b"latin1", DEFAULT)
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(fs::read(sb.path(&long)).expect("read"), b"long");
    let latin1 = sb.dest.join(OsStr::from_bytes(b"caf\xe9"));
    assert_eq!(fs::read(latin1).expect("read"), b"latin1");
}

#[test]
fn pax_path_size_and_mtime_override_the_header() {
    require_root!("pax_path_size_and_mtime_override_the_header");
    let sb = Sandbox::new();
    let long = format!("{}/pax", "p".repeat(150));
    let tar = Layer::new()
        .pax(&[
            ("path", long.as_bytes()),
            ("mtime", b"1500000000.25"),
            ("uid", b"3000000"),
        ])
        .file("short", b"data")
        .finish();
    sb.unpack(&tar).expect("unpack");
    let m = fs::metadata(sb.path(&long)).expect("stat");
    assert_eq!(m.mtime(), 1_500_000_000);
    assert_eq!(m.mtime_nsec(), 250_000_000);
    assert_eq!(m.uid(), 3_000_000);
    assert!(!sb.path("short").exists());
}

#[test]
fn stream_is_read_to_eof_after_the_end_blocks() {
    require_root!("stream_is_read_to_eof_after_the_end_blocks");
    let sb = Sandbox::new();
    let mut tar = Layer::new().file("f", b"x").finish();
    tar.resize(10240, 0); // GNU tar pads to its record size
    let mut reader = &tar[..];
    let stats = unpack_layer(&mut reader, &sb.dest).expect("unpack");
    assert!(reader.is_empty(), "{} bytes left unread", reader.len());
    assert_eq!(stats.stream_bytes, 10240);
}

#[test]
fn empty_layer_unpacks_to_nothing() {
    let sb = Sandbox::new();
    let tar = Layer::new().finish();
    assert_eq!(sb.unpack(&tar).expect("unpack").entries, 0);
    assert!(names(&sb.dest).is_empty());
}

// --- what a layer may not do -------------------------------------------------------------

#[test]
fn rejects_entry_with_dotdot_component() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("../escape", b"x").finish();
    rejected(sb.unpack(&tar), "`..`");
    let tar = Layer::new().file("a/../../escape", b"x").finish();
    rejected(sb.unpack(&tar), "`..`");
    assert!(!sb.tmp.path().join("escape").exists());
    sb.assert_outside_untouched();
}

#[test]
fn rejects_absolute_path() {
    let sb = Sandbox::new();
    let abs = sb.tmp.path().join("escape");
    let tar = Layer::new()
        .file(abs.to_str().expect("utf8"), b"x")
        .finish();
    rejected(sb.unpack(&tar), "absolute path");
    assert!(!abs.exists());
    sb.assert_outside_untouched();
}

#[test]
fn rejects_entry_escaping_through_absolute_symlink_parent() {
    require_root!("rejects_entry_escaping_through_absolute_symlink_parent");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("evil", sb.outside.to_str().expect("utf8"))
        .file("evil/sentinel", b"pwned")
        .finish();
    rejected(sb.unpack(&tar), "`evil` is a symlink");
    let tar = Layer::new()
        .symlink("evil", sb.outside.to_str().expect("utf8"))
        .file("evil/new", b"pwned")
        .finish();
    rejected(sb.unpack(&tar), "is a symlink");
    sb.assert_outside_untouched();
}

#[test]
fn rejects_entry_escaping_through_relative_symlink_parent() {
    require_root!("rejects_entry_escaping_through_relative_symlink_parent");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("a")
        .symlink("a/up", "../..")
        .file("a/up/outside/sentinel", b"pwned")
        .finish();
    rejected(sb.unpack(&tar), "`a/up` is a symlink");
    let tar = Layer::new()
        .symlink("up", "..")
        .dir("up/outside/new")
        .finish();
    rejected(sb.unpack(&tar), "`up` is a symlink");
    let tar = Layer::new()
        .symlink("up", "..")
        .file("up/.wh.outside", b"")
        .finish();
    rejected(sb.unpack(&tar), "`up` is a symlink");
    sb.assert_outside_untouched();
}

#[test]
fn rejects_hard_link_to_dotdot_target() {
    require_root!("rejects_hard_link_to_dotdot_target");
    let sb = Sandbox::new();
    let tar = Layer::new().hard_link("h", "../outside/sentinel").finish();
    rejected(
        sb.unpack(&tar),
        "hard link target: path has a `..` component",
    );
    let abs = sb.outside.join("sentinel");
    let tar = Layer::new()
        .hard_link("h", abs.to_str().expect("utf8"))
        .finish();
    rejected(sb.unpack(&tar), "absolute path");
    sb.assert_outside_untouched();
}

#[test]
fn rejects_hard_link_through_symlinked_directory() {
    require_root!("rejects_hard_link_through_symlinked_directory");
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("sd", "../outside")
        .hard_link("h", "sd/sentinel")
        .finish();
    rejected(sb.unpack(&tar), "`sd` is a symlink");
    sb.assert_outside_untouched();
}

#[test]
fn rejects_hard_link_to_directory_or_missing_target() {
    require_root!("rejects_hard_link_to_directory_or_missing_target");
    let sb = Sandbox::new();
    let tar = Layer::new().dir("d").hard_link("h", "d").finish();
    rejected(sb.unpack(&tar), "hard link to a directory");
    let tar = Layer::new().hard_link("h2", "etc/passwd").finish();
    rejected(sb.unpack(&tar), "does not exist");
}

#[test]
fn rejects_oversized_pax_header() {
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(2 << 20);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.resize(tar.len() + (2 << 20), b'x');
    tar.extend(Layer::new().file("f", b"x").finish());
    match sb.unpack(&tar) {
        Err(e @ UnpackError::Malformed { .. }) => {
            assert!(
                e.to_string()
                    .contains("PAX header of 2097152 bytes exceeds"),
                "{e}"
            );
        }
        other => panic!("expected oversized header error, got {other:?}"),
    }
}

#[test]
fn rejects_oversized_gnu_long_name() {
    let sb = Sandbox::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size((1 << 20) + 1);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.resize(512 + (1 << 20) + 512, b'a');
    let err = sb.unpack(&tar).expect_err("oversized long name");
    assert!(
        err.to_string()
            .contains("GNU long name of 1048577 bytes exceeds"),
        "{err}"
    );
}

#[test]
fn rejects_path_longer_than_path_max() {
    let sb = Sandbox::new();
    let long = "a/".repeat(2100) + "f";
    let tar = Layer::new()
        .pax(&[("path", long.as_bytes())])
        .file("f", b"x")
        .finish();
    rejected(sb.unpack(&tar), "path of 4201 bytes exceeds 4096");
}

#[test]
fn rejects_archive_truncated_mid_file() {
    require_root!("rejects_archive_truncated_mid_file");
    let sb = Sandbox::new();
    let tar = Layer::new().file("big", &[7u8; 5000]).finish();
    let cut = &tar[..512 + 1000];
    match sb.unpack(cut) {
        Err(e @ UnpackError::Truncated(_)) => {
            assert!(
                e.to_string()
                    .contains("entry `big` ends after 1000 of 5000 bytes"),
                "{e}"
            );
        }
        other => panic!("expected truncation, got {other:?}"),
    }
}

#[test]
fn rejects_archive_without_end_blocks() {
    require_root!("rejects_archive_without_end_blocks");
    let tar = Layer::new().file("f", b"x").finish();
    for missing in [1024, 512] {
        let sb = Sandbox::new();
        let err = sb
            .unpack(&tar[..tar.len() - missing])
            .expect_err("no end blocks");
        assert!(matches!(err, UnpackError::Truncated(_)), "{err:?}");
        assert!(err.to_string().starts_with("truncated archive"), "{err}");
    }
}

#[test]
fn rejects_garbage_and_empty_input() {
    let sb = Sandbox::new();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = sb.unpack(&garbage).expect_err("garbage");
    assert!(err.to_string().contains("checksum"), "{err}");
    let err = sb.unpack(&[]).expect_err("empty");
    assert!(matches!(err, UnpackError::Truncated(_)), "{err:?}");
    let err = sb.unpack(&garbage[..100]).expect_err("short");
    assert!(matches!(err, UnpackError::Truncated(_)), "{err:?}");
    assert!(names(&sb.dest).is_empty());
}

#[test]
fn rejects_whiteout_naming_dotdot() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("a/.wh...", b"").finish();
    rejected(sb.unpack(&tar), "whiteout names no file");
}

#[test]
fn rejects_unsupported_entry_types() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .raw(EntryType::GNUSparse, b"sparse", b"", b"", DEFAULT)
        .finish();
    rejected(sb.unpack(&tar), "unsupported entry type `S`");
}

// --- compressed layers -------------------------------------------------------------------

fn sample_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc")
        .file("etc/os-release", b"ID=berth\n")
        .file("etc/.wh.old", b"")
        .finish()
}

fn check_sample(sb: &Sandbox) {
    assert_eq!(
        fs::read(sb.path("etc/os-release")).expect("read"),
        b"ID=berth\n"
    );
    let m = fs::symlink_metadata(sb.path("etc")).expect("stat");
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn gzip_layer_round_trips_through_decoder() {
    require_root!("gzip_layer_round_trips_through_decoder");
    let sb = Sandbox::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&sample_layer()).expect("gzip");
    let blob = enc.finish().expect("gzip");
    let c = Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
        .expect("media type");
    let stats = unpack_layer(decoder(c, &blob[..]).expect("decoder"), &sb.dest).expect("unpack");
    assert_eq!(stats.stream_bytes, sample_layer().len() as u64);
    check_sample(&sb);
}

#[test]
fn zstd_layer_round_trips_through_decoder() {
    require_root!("zstd_layer_round_trips_through_decoder");
    let sb = Sandbox::new();
    let blob = zstd::encode_all(&sample_layer()[..], 3).expect("zstd");
    let c = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd")
        .expect("media type");
    let mut blob_reader = &blob[..];
    unpack_layer(decoder(c, &mut blob_reader).expect("decoder"), &sb.dest).expect("unpack");
    check_sample(&sb);
    assert!(blob_reader.is_empty(), "compressed stream read to EOF");
}

#[test]
fn corrupt_gzip_layer_is_a_read_error() {
    let sb = Sandbox::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&sample_layer()).expect("gzip");
    let mut blob = enc.finish().expect("gzip");
    let n = blob.len();
    blob[n / 2] ^= 0xff;
    blob[n / 2 + 1] ^= 0xff;
    let mut tar = Vec::new();
    let result = decoder(Compression::Gzip, &blob[..])
        .expect("decoder")
        .read_to_end(&mut tar);
    if result.is_ok() {
        // Flipped bits that still inflate are caught by the gzip CRC at the end.
        panic!("corrupt gzip decoded cleanly");
    }
    let err = unpack_layer(
        decoder(Compression::Gzip, &blob[..]).expect("decoder"),
        &sb.dest,
    )
    .expect_err("corrupt");
    assert!(
        matches!(
            err,
            UnpackError::Read { .. } | UnpackError::Malformed { .. } | UnpackError::Truncated(_)
        ),
        "{err:?}"
    );
}

/// One PAX header of `len` bytes holding a single `SCHILY.xattr.user.<key>` record.
fn pax_block(key: &str, len: usize) -> Vec<u8> {
    let prefix = format!("SCHILY.xattr.user.{key}=");
    // "<n> <prefix><value>\n" is `len` bytes long; n has 7 digits for the sizes used here.
    let value_len = len - 7 - 1 - prefix.len() - 1;
    let record = format!("{len} {prefix}{}\n", "v".repeat(value_len));
    assert_eq!(record.len(), len);
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(len as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(record.as_bytes());
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn rejects_consecutive_pax_headers_past_the_total_limit() {
    // A PAX bomb: many headers just under the per-header limit, each with a new key, before
    // one entry. Before the limit on their total, every record was kept in memory.
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    for i in 0..64 {
        tar.extend(pax_block(&format!("k{i}"), 1_000_000));
    }
    tar.extend(Layer::new().file("f", b"x").finish());
    match sb.unpack(&tar) {
        Err(e @ UnpackError::Malformed { .. }) => {
            assert!(
                e.to_string()
                    .contains("extension headers before one entry exceed 1048576 bytes"),
                "{e}"
            );
        }
        other => panic!("expected a PAX bomb error, got {other:?}"),
    }
    sb.assert_outside_untouched();
}

#[test]
fn repeated_pax_keys_replace_earlier_values() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .pax(&[("path", b"first")])
        .pax(&[("path", b"second")])
        .file("header-name", b"x")
        .finish();
    sb.unpack(&tar).expect("unpack");
    assert_eq!(names(&sb.dest), ["second"]);
}

#[test]
fn rejects_more_pax_records_than_the_limit() {
    let sb = Sandbox::new();
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("SCHILY.xattr.user.k{i}"))
        .collect();
    let records: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    let tar = Layer::new().pax(&records).file("f", b"x").finish();
    let err = sb.unpack(&tar).expect_err("too many records");
    assert!(err.to_string().contains("more than 1024"), "{err}");
}
