//! Device rules on the host's real cgroup2 mount (root required; CI runs as root): a forked child
//! joins a scratch cgroup `berth-test-<pid>-<n>-<nanos>` carrying berth's eBPF device filter and
//! reports which device opens and mknods the kernel let through.
//!
//! On a hybrid host the child also stays in this process's v1 `devices` cgroup, which allows
//! everything, so only the filter under test can refuse it. The cgroups this test process lives
//! in are never touched.

mod common;

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use runtime_core::cgroups::{Cgroup, CgroupError, CgroupResources, Cgroups};

/// The cgroup2 mount (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid
/// ones), or `None` (saying why) when this test cannot run here. In CI (`CI=true`) a missing
/// root is a failure rather than a skip.
fn cgroup2_root(test: &str) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI must run as root"
        );
        eprintln!("skipped {test}: attaching BPF programs to cgroups needs root");
        return None;
    }
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| statfs(p).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC));
    if root.is_none() {
        eprintln!("skipped {test}: the kernel has no cgroup2 mount");
    }
    root
}

/// A cgroup of its own under the cgroup2 root, holding the test's cgroups; dropping it kills
/// what is left in it and removes it.
struct ScratchRoot {
    root: Cgroups,
    name: String,
    dir: PathBuf,
}

impl ScratchRoot {
    fn new(cgroup2: &Path) -> ScratchRoot {
        let name = common::unique_cgroup_name();
        let dir = cgroup2.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        ScratchRoot {
            root: Cgroups::with_v2_root(cgroup2),
            name,
            dir,
        }
    }

    /// The v2 backend rooted at this scratch cgroup: it offers no controllers, so creating
    /// cgroups beneath it enables nothing anywhere.
    fn cgroups(&self) -> Cgroups {
        Cgroups::with_v2_root(&self.dir)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let cleanup = self.root.open(&self.name).and_then(|cg| match cg {
            Some(cg) => cg.kill_all().and_then(|()| cg.delete()),
            None => Ok(()),
        });
        if let Err(e) = cleanup {
            eprintln!("cleanup of test cgroup {}: {e}", self.dir.display());
        }
    }
}

fn devices(rules: &[&str]) -> CgroupResources {
    CgroupResources {
        device_rules: Some(rules.iter().map(|r| r.to_string()).collect()),
        ..Default::default()
    }
}

/// What a child in the cgroup got from each step, as an errno (0 = success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    /// Writing `0` to the cgroup's `cgroup.procs`.
    join: i32,
    /// Opening `/dev/null` (char 1:3) read-write.
    null_rw: i32,
    /// mknod of a char 1:5 (`/dev/zero`) node.
    mknod_zero: i32,
    /// Opening that node read-only.
    read_zero: i32,
    /// mknod of a block 7:0 (loop0) node.
    mknod_loop: i32,
}

/// Paths the child uses, as C strings made before the fork (the child must not allocate).
struct ProbePaths {
    procs: CString,
    zero: CString,
    loop0: CString,
}

impl ProbePaths {
    fn new(cgroup: &dyn Cgroup, scratch: &Path, nodes: &Path, tag: &str) -> ProbePaths {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
        let procs = scratch.join(cgroup.path()).join("cgroup.procs");
        ProbePaths {
            procs: c(&procs),
            zero: c(&nodes.join(format!("zero-{tag}"))),
            loop0: c(&nodes.join(format!("loop0-{tag}"))),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// errno of a call returning -1 on failure, 0 if it succeeded.
fn status(rc: libc::c_int) -> i32 {
    if rc < 0 { errno() } else { 0 }
}

/// Opens and closes `path`, returning the errno of the open.
fn try_open(path: &CStr, flags: libc::c_int) -> i32 {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: `fd` was just opened here and is closed once.
    unsafe { libc::close(fd) };
    0
}

/// The forked child: joins the cgroup, tries each device access and writes the errnos to `out`.
/// Only async-signal-safe calls, no allocation (the parent has other threads).
fn probe_child(paths: &ProbePaths, out: libc::c_int) -> ! {
    let join = {
        // SAFETY: `procs` is a NUL-terminated string owned by the parent's copy of memory.
        let fd = unsafe { libc::open(paths.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            errno()
        } else {
            // SAFETY: writes one byte from a static buffer to the fd just opened, then closes it.
            let written = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
            let rc = if written == 1 { 0 } else { errno() };
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { libc::close(fd) };
            rc
        }
    };
    let null_rw = try_open(c"/dev/null", libc::O_RDWR);
    // SAFETY: mknod with a NUL-terminated path; creates a node in the test's own tempdir.
    let mknod_zero = status(unsafe {
        libc::mknod(
            paths.zero.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(1, 5),
        )
    });
    let read_zero = try_open(&paths.zero, libc::O_RDONLY);
    // SAFETY: as above, for a block node.
    let mknod_loop = status(unsafe {
        libc::mknod(
            paths.loop0.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(7, 0),
        )
    });
    let report = [join, null_rw, mknod_zero, read_zero, mknod_loop];
    // SAFETY: writes the report array to the pipe and exits without running Rust destructors
    // or atexit handlers that belong to the parent.
    unsafe {
        libc::write(out, report.as_ptr().cast(), std::mem::size_of_val(&report));
        libc::_exit(0)
    }
}

/// Forks a child that runs [`probe_child`] and returns its report.
fn probe(paths: &ProbePaths) -> Probe {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2: {}",
        errno()
    );
    let [read_end, write_end] = fds;
    // SAFETY: the child runs only async-signal-safe code (probe_child) and then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        probe_child(paths, write_end);
    }
    // SAFETY: the parent's copy of the write end is closed once, so EOF follows the child's exit.
    unsafe { libc::close(write_end) };
    let mut report = [-1i32; 5];
    let want = std::mem::size_of_val(&report);
    // SAFETY: reads at most `want` bytes into `report`, which is exactly that large.
    let got = if pid > 0 {
        unsafe { libc::read(read_end, report.as_mut_ptr().cast(), want) }
    } else {
        -1
    };
    let read_errno = errno();
    // SAFETY: `read_end` was opened by pipe2 above and is closed once.
    unsafe { libc::close(read_end) };
    assert!(pid > 0, "fork: {read_errno}");
    let mut wait_status = 0;
    // SAFETY: waits for the child forked above, writing its status to a local.
    let waited = unsafe { libc::waitpid(pid, &mut wait_status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", errno());
    assert!(
        libc::WIFEXITED(wait_status) && libc::WEXITSTATUS(wait_status) == 0,
        "probe child status {wait_status:#x}"
    );
    assert_eq!(
        usize::try_from(got).ok(),
        Some(want),
        "read report: {read_errno}"
    );
    let [join, null_rw, mknod_zero, read_zero, mknod_loop] = report;
    Probe {
        join,
        null_rw,
        mknod_zero,
        read_zero,
        mknod_loop,
    }
}

/// Creates the cgroup `ctr` with `rules`, or `None` (saying why) if the kernel cannot load
/// cgroup device programs at all.
fn create_with_rules(test: &str, scratch: &ScratchRoot, rules: &[&str]) -> Option<Box<dyn Cgroup>> {
    match scratch.cgroups().create("ctr", &devices(rules)) {
        Ok(cg) => Some(cg),
        Err(CgroupError::Io { action, source, .. })
            if action.contains("BPF_PROG_LOAD")
                && matches!(source.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
                && !kernel_loads_device_filters() =>
        {
            eprintln!("skipped {test}: kernel lacks BPF cgroup device programs ({source})");
            None
        }
        Err(e) => panic!("{test}: create cgroup with device rules: {e}"),
    }
}

/// Whether the kernel loads the smallest device filter (`r0 = 1; exit`).
fn kernel_loads_device_filters() -> bool {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    // mov32 r0, 1; exit
    let insns: [u64; 2] = [0x0000_0001_0000_00b4, 0x0000_0000_0000_0095];
    let mut attr = ProgLoad {
        prog_type: 15, // BPF_PROG_TYPE_CGROUP_DEVICE
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
    };
    // SAFETY: `attr` (size passed) points at `insns` and a NUL-terminated license, both alive
    // for the call; BPF_PROG_LOAD is command 5.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the program fd was just returned to us and is closed once.
        unsafe { libc::close(fd as libc::c_int) };
    }
    fd >= 0
}

const EPERM: i32 = libc::EPERM;

#[test]
fn device_rules_let_through_only_allowed_devices() {
    let test = "device_rules_let_through_only_allowed_devices";
    let Some(cgroup2) = cgroup2_root(test) else {
        return;
    };
    let scratch = ScratchRoot::new(&cgroup2);
    let Some(cg) = create_with_rules(test, &scratch, &["c 1:3 rwm", "c *:* m"]) else {
        return;
    };
    let nodes = tempfile::tempdir().expect("tempdir for device nodes");
    let paths = ProbePaths::new(cg.as_ref(), &scratch.dir, nodes.path(), "1");

    let got = probe(&paths);
    assert_eq!(
        got,
        Probe {
            join: 0,
            null_rw: 0,
            mknod_zero: 0,
            read_zero: EPERM,
            mknod_loop: EPERM,
        },
        "null is allowed, char mknod is allowed, reading zero and block mknod are not"
    );
    assert!(
        std::fs::File::open(nodes.path().join("zero-1")).is_ok(),
        "outside the cgroup the node opens: the refusal came from the filter"
    );
}

#[test]
fn reapplied_device_rules_replace_the_previous_filter() {
    let test = "reapplied_device_rules_replace_the_previous_filter";
    let Some(cgroup2) = cgroup2_root(test) else {
        return;
    };
    let scratch = ScratchRoot::new(&cgroup2);
    let Some(cg) = create_with_rules(test, &scratch, &["c 1:3 rwm", "c *:* m"]) else {
        return;
    };
    let nodes = tempfile::tempdir().expect("tempdir for device nodes");

    cg.apply(&devices(&["c 1:3 rwm", "c 1:5 r", "c *:* m"]))
        .expect("re-apply with zero readable");
    let widened = probe(&ProbePaths::new(
        cg.as_ref(),
        &scratch.dir,
        nodes.path(),
        "1",
    ));
    assert_eq!(
        (widened.join, widened.null_rw, widened.mknod_zero),
        (0, 0, 0)
    );
    assert_eq!(
        widened.read_zero, 0,
        "the first filter, which refused zero, is gone"
    );
    assert_eq!(widened.mknod_loop, EPERM);

    cg.apply(&devices(&["a"])).expect("re-apply allowing all");
    let open = probe(&ProbePaths::new(
        cg.as_ref(),
        &scratch.dir,
        nodes.path(),
        "2",
    ));
    assert_eq!(
        open,
        Probe {
            join: 0,
            null_rw: 0,
            mknod_zero: 0,
            read_zero: 0,
            mknod_loop: 0,
        },
        "\"a\" leaves no filter behind"
    );

    cg.apply(&devices(&[])).expect("re-apply denying all");
    let closed = probe(&ProbePaths::new(
        cg.as_ref(),
        &scratch.dir,
        nodes.path(),
        "3",
    ));
    assert_eq!(
        closed,
        Probe {
            join: 0,
            null_rw: EPERM,
            mknod_zero: EPERM,
            read_zero: libc::ENOENT,
            mknod_loop: EPERM,
        },
        "no rules deny every device"
    );
}

#[test]
fn malformed_device_rule_is_refused_naming_cgroup_and_rule() {
    let test = "malformed_device_rule_is_refused_naming_cgroup_and_rule";
    let Some(cgroup2) = cgroup2_root(test) else {
        return;
    };
    let scratch = ScratchRoot::new(&cgroup2);
    let err = scratch
        .cgroups()
        .create("ctr", &devices(&["c 1:3 rwm", "c 1:3 rwx"]))
        .expect_err("bad access letter");
    assert!(
        matches!(err, CgroupError::InvalidResources { ref cgroup, .. } if cgroup == "ctr"),
        "{err}"
    );
    assert!(err.to_string().contains("\"c 1:3 rwx\""), "{err}");
    assert!(
        !scratch.dir.join("ctr").exists(),
        "the failed create rolled back"
    );
}
