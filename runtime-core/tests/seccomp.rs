//! Seccomp filters against the real kernel: each case forks, installs the filter in the
//! child, runs syscalls there and reports each one's errno through a pipe. Profiles that
//! deny what root may do are also run unconfined, to show that the denial is the filter's.
//! Needs root (CI runs as root): installing without no_new_privs needs CAP_SYS_ADMIN.
//!
//! The children only make raw syscalls (no allocation), as after any fork of a threaded
//! process; one lock keeps children of concurrent tests from holding each other's pipes.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use runtime_core::seccomp::{self, SeccompError, SeccompFilter, SeccompProfile};

use common::serial;

fn runnable(test: &str) -> bool {
    common::runnable("seccomp", test)
}

/// A syscall made in the child; returns 0 on success or the errno.
type Probe<'a> = (&'a str, &'a dyn Fn() -> i32);

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Each probe's errno (0: success), by name.
    Exited(Vec<(String, i32)>),
    /// The child died of this signal after the probes listed.
    Killed(i32, Vec<(String, i32)>),
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// 0, or the errno of a failed libc call / raw syscall.
fn check(rc: i64) -> i32 {
    if rc < 0 { errno() } else { 0 }
}

/// Forks; the child installs `filter` (if any), runs the probes in order and exits.
fn run_in_child(filter: Option<&SeccompFilter>, probes: &[Probe]) -> Outcome {
    let _serial = serial();
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let [read_end, write_end] = fds;
    // SAFETY: the child makes only raw syscalls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child(filter, probes, write_end);
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(write_end) };
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing our descriptor.
    unsafe { libc::close(read_end) };
    let results = bytes
        .chunks_exact(4)
        .zip(probes)
        .map(|(errno, (name, _))| {
            let errno = i32::from_ne_bytes(errno.try_into().unwrap());
            (name.to_string(), errno)
        })
        .collect();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        return Outcome::Killed(libc::WTERMSIG(status), results);
    }
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child failed to install the filter"
    );
    Outcome::Exited(results)
}

fn child(filter: Option<&SeccompFilter>, probes: &[Probe], report: i32) -> ! {
    // SIGSYS from the kill and trap actions would dump core.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    if let Some(filter) = filter
        && seccomp::install(filter).is_err()
    {
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(100) };
    }
    for (_, probe) in probes {
        let errno = probe().to_ne_bytes();
        // SAFETY: writing a local buffer to our pipe.
        unsafe { libc::write(report, errno.as_ptr().cast(), errno.len()) };
    }
    // SAFETY: leaving the forked child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

fn exited(outcome: Outcome) -> Vec<(String, i32)> {
    match outcome {
        Outcome::Exited(results) => results,
        killed => panic!("child was killed: {killed:?}"),
    }
}

fn expect(results: Vec<(String, i32)>, expected: &[(&str, i32)]) {
    let expected: Vec<(String, i32)> = expected
        .iter()
        .map(|(name, errno)| (name.to_string(), *errno))
        .collect();
    assert_eq!(results, expected);
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn profile_file(dir: &Path, json: &str) -> SeccompProfile {
    let path = dir.join("profile.json");
    fs::write(&path, json).unwrap();
    SeccompProfile::Localhost(path)
}

fn compiled(profile: &SeccompProfile) -> SeccompFilter {
    seccomp::compile(profile).unwrap().expect("a filter")
}

/// fork() (glibc uses clone) and reap the grandchild.
fn fork_and_reap() -> i32 {
    // SAFETY: the grandchild leaves at once with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return errno();
    }
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    0
}

/// Raw clone with flags and no new stack: the new process continues here, and leaves.
fn raw_clone_and_reap(flags: i64) -> i32 {
    // SAFETY: with a null stack, clone behaves like fork; the child leaves with _exit.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if rc == 0 {
        unsafe { libc::_exit(0) };
    }
    if rc < 0 {
        return errno();
    }
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(rc as i32, std::ptr::null_mut(), 0) };
    0
}

#[test]
fn runtime_default_allows_ordinary_syscalls_and_denies_privileged_ones() {
    if !runnable("runtime_default_allows_ordinary_syscalls_and_denies_privileged_ones") {
        return;
    }
    let filter = compiled(&SeccompProfile::RuntimeDefault);
    let status = c"/proc/self/status";
    let missing_target = c"/nonexistent-berth-seccomp-test";
    let tmpfs = c"tmpfs";
    // SAFETY (all probes): raw syscalls with valid pointers or null.
    let getpid = || check(unsafe { libc::getpid() }.into());
    let openat = || {
        let fd = unsafe { libc::openat(libc::AT_FDCWD, status.as_ptr(), libc::O_RDONLY) };
        let result = check(fd.into());
        let mut buf = [0u8; 64];
        let read = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as i64);
        unsafe { libc::close(fd) };
        result.max(read)
    };
    let write_devnull = || {
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
        let written = check(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) } as i64);
        unsafe { libc::close(fd) };
        written
    };
    let socket = |family| {
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
        let result = check(fd.into());
        unsafe { libc::close(fd) };
        result
    };
    let personality =
        |persona: u64| check(unsafe { libc::syscall(libc::SYS_personality, persona) });
    let probes: &[Probe] = &[
        ("getpid", &getpid),
        ("openat+read", &openat),
        ("write", &write_devnull),
        ("fork", &fork_and_reap),
        ("socket(AF_UNIX)", &|| socket(libc::AF_UNIX)),
        ("socket(AF_VSOCK)", &|| socket(libc::AF_VSOCK)),
        ("personality(query)", &|| personality(0xffff_ffff)),
        ("personality(ADDR_NO_RANDOMIZE)", &|| {
            personality(libc::ADDR_NO_RANDOMIZE as u64)
        }),
        ("clone(CLONE_NEWNET)", &|| {
            raw_clone_and_reap((libc::CLONE_NEWNET | libc::SIGCHLD) as i64)
        }),
        ("clone3", &|| {
            check(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) })
        }),
        ("mount", &|| {
            let rc = unsafe {
                libc::mount(
                    tmpfs.as_ptr(),
                    missing_target.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            check(rc.into())
        }),
        // Bad magic numbers: the kernel refuses them (EINVAL) after the capability check.
        ("reboot", &|| {
            check(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, std::ptr::null::<u8>()) })
        }),
        ("keyctl", &|| {
            // KEYCTL_GET_KEYRING_ID of the thread keyring, without creating it.
            check(unsafe { libc::syscall(libc::SYS_keyctl, 0, -1i64, 0) })
        }),
        // Last: it moves the child into a new user namespace.
        ("unshare(CLONE_NEWUSER|CLONE_NEWNS)", &|| {
            check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) }.into())
        }),
    ];

    let unconfined = exited(run_in_child(None, probes));
    let denied_by_kernel: Vec<_> = unconfined
        .iter()
        .filter(|(name, errno)| *errno == libc::EPERM && name != "socket(AF_VSOCK)")
        .collect();
    assert!(denied_by_kernel.is_empty(), "{unconfined:?}");
    let errno_of = |name: &str| unconfined.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(errno_of("clone3"), libc::EINVAL);
    assert_eq!(errno_of("mount"), libc::ENOENT);
    assert_eq!(errno_of("reboot"), libc::EINVAL);

    let confined = exited(run_in_child(Some(&filter), probes));
    expect(
        confined,
        &[
            ("getpid", 0),
            ("openat+read", 0),
            ("write", 0),
            ("fork", 0),
            ("socket(AF_UNIX)", 0),
            ("socket(AF_VSOCK)", libc::EPERM),
            ("personality(query)", 0),
            ("personality(ADDR_NO_RANDOMIZE)", libc::EPERM),
            ("clone(CLONE_NEWNET)", libc::EPERM),
            ("clone3", libc::ENOSYS),
            ("mount", libc::EPERM),
            ("reboot", libc::EPERM),
            ("keyctl", libc::EPERM),
            ("unshare(CLONE_NEWUSER|CLONE_NEWNS)", libc::EPERM),
        ],
    );
}

#[test]
fn runtime_default_lets_a_shell_run() {
    if !runnable("runtime_default_lets_a_shell_run") {
        return;
    }
    let filter = compiled(&SeccompProfile::RuntimeDefault);
    let sh = c"/bin/sh";
    let script = c"ls / >/dev/null && x=$(echo ok) && test \"$x\" = ok";
    let argv = [
        sh.as_ptr(),
        c"-c".as_ptr(),
        script.as_ptr(),
        std::ptr::null(),
    ];
    let envp = [c"PATH=/usr/bin:/bin".as_ptr(), std::ptr::null()];
    let run_shell = || {
        // SAFETY: execs a shell with null-terminated argv/envp, and waits for it.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127)
            };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    };
    let results = exited(run_in_child(Some(&filter), &[("sh -c", &run_shell)]));
    expect(results, &[("sh -c", 0)]);
}

#[test]
fn localhost_profile_denies_mkdir_with_its_errno_and_allows_the_rest() {
    if !runnable("localhost_profile_denies_mkdir_with_its_errno_and_allows_the_rest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_file(
        dir.path(),
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL"}
            ]
        }"#,
    );
    let filter = compiled(&profile);
    let new_dir = cstring(&dir.path().join("new"));
    let new_file = cstring(&dir.path().join("file"));
    // SAFETY (all probes): libc calls with valid C strings.
    let probes: &[Probe] = &[
        ("mkdir", &|| {
            check(unsafe { libc::mkdir(new_dir.as_ptr(), 0o755) }.into())
        }),
        ("create file", &|| {
            let fd =
                unsafe { libc::open(new_file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
            unsafe { libc::close(fd) };
            check(fd.into())
        }),
        ("rmdir missing", &|| {
            check(unsafe { libc::rmdir(new_dir.as_ptr()) }.into())
        }),
        ("getpid", &|| check(unsafe { libc::getpid() }.into())),
    ];
    expect(
        exited(run_in_child(Some(&filter), probes)),
        &[
            ("mkdir", libc::EACCES),
            ("create file", 0),
            ("rmdir missing", libc::ENOENT),
            ("getpid", 0),
        ],
    );
    assert!(!dir.path().join("new").exists());
    assert!(dir.path().join("file").exists());
}

#[test]
fn argument_conditions_deny_personality_unless_arg0_is_zero() {
    if !runnable("argument_conditions_deny_personality_unless_arg0_is_zero") {
        return;
    }
    let filter = seccomp::compile_oci_json(
        br#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]}]}"#,
    )
    .unwrap()
    .unwrap();
    // SAFETY (all probes): personality takes a plain integer.
    let personality =
        |persona: u64| check(unsafe { libc::syscall(libc::SYS_personality, persona) });
    let probes: &[Probe] = &[
        ("personality(0)", &|| personality(0)),
        ("personality(PER_LINUX32)", &|| personality(8)),
        ("personality(query)", &|| personality(0xffff_ffff)),
        ("personality(1<<32)", &|| personality(1 << 32)),
    ];
    expect(
        exited(run_in_child(Some(&filter), probes)),
        &[
            ("personality(0)", 0),
            ("personality(PER_LINUX32)", libc::EPERM),
            ("personality(query)", libc::EPERM),
            ("personality(1<<32)", libc::EPERM),
        ],
    );
}

#[test]
fn sixty_four_bit_comparisons_see_the_kernel_argument_layout() {
    if !runnable("sixty_four_bit_comparisons_see_the_kernel_argument_layout") {
        return;
    }
    // getpid ignores its arguments, but the filter sees them.
    let filter = seccomp::compile_oci_json(
        br#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
             "args": [{"index": 1, "value": 4294967296, "op": "SCMP_CMP_GT"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 98,
             "args": [{"index": 2, "value": 255, "valueTwo": 66, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 5, "value": 7, "op": "SCMP_CMP_LE"},
                      {"index": 4, "value": 3, "op": "SCMP_CMP_GE"}]}
        ]}"#,
    )
    .unwrap()
    .unwrap();
    // SAFETY (all probes): getpid with extra ignored arguments.
    let getpid = |a1: u64, a2: u64, a4: u64, a5: u64| {
        check(unsafe { libc::syscall(libc::SYS_getpid, 0, a1, a2, 0, a4, a5) })
    };
    let probes: &[Probe] = &[
        ("a1 = 2^32 + 1", &|| getpid(0x1_0000_0001, 0, 0, 9)),
        ("a1 = 2^32", &|| getpid(0x1_0000_0000, 0, 0, 9)),
        ("a1 = 2^32 - 1", &|| getpid(0xffff_ffff, 0, 0, 9)),
        ("a2 & 0xff = 0x42", &|| getpid(0, 0x1142, 0, 9)),
        ("a2 & 0xff = 0x43", &|| getpid(0, 0x43, 0, 9)),
        ("both: first rule wins", &|| getpid(5 << 32, 0x42, 0, 9)),
        ("a5 <= 7 && a4 >= 3", &|| getpid(0, 0, 3, 7)),
        ("a5 <= 7 && a4 < 3", &|| getpid(0, 0, 2, 7)),
        ("a5 high word set", &|| getpid(0, 0, 3, 1 << 32)),
    ];
    expect(
        exited(run_in_child(Some(&filter), probes)),
        &[
            ("a1 = 2^32 + 1", 99),
            ("a1 = 2^32", 0),
            ("a1 = 2^32 - 1", 0),
            ("a2 & 0xff = 0x42", 98),
            ("a2 & 0xff = 0x43", 0),
            ("both: first rule wins", 99),
            ("a5 <= 7 && a4 >= 3", 97),
            ("a5 <= 7 && a4 < 3", 0),
            ("a5 high word set", 0),
        ],
    );
}

fn getppid_under(action: &str) -> Outcome {
    let json = format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{{"names": ["getppid"], "action": "{action}"}}]}}"#
    );
    let filter = seccomp::compile_oci_json(json.as_bytes()).unwrap().unwrap();
    // SAFETY: getppid has no arguments.
    let getppid = || check(unsafe { libc::syscall(libc::SYS_getppid) });
    run_in_child(
        Some(&filter),
        &[
            ("getpid", &|| check(unsafe { libc::getpid() }.into())),
            ("getppid", &getppid),
        ],
    )
}

#[test]
fn every_action_does_what_the_kernel_documents() {
    if !runnable("every_action_does_what_the_kernel_documents") {
        return;
    }
    let ran_first = vec![("getpid".to_string(), 0)];
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
    ] {
        assert_eq!(
            getppid_under(action),
            Outcome::Killed(libc::SIGSYS, ran_first.clone()),
            "{action}"
        );
    }
    for (action, errno) in [
        ("SCMP_ACT_ERRNO", libc::EPERM),
        // No tracer is attached: the kernel fails the syscall with ENOSYS.
        ("SCMP_ACT_TRACE", libc::ENOSYS),
        ("SCMP_ACT_LOG", 0),
    ] {
        expect(
            exited(getppid_under(action)),
            &[("getpid", 0), ("getppid", errno)],
        );
    }
}

#[test]
fn install_needs_cap_sys_admin_or_no_new_privs() {
    if !runnable("install_needs_cap_sys_admin_or_no_new_privs") {
        return;
    }
    let filter = compiled(&SeccompProfile::RuntimeDefault);
    let install = || match seccomp::install(&filter) {
        Ok(()) => 0,
        Err(SeccompError::NotPermitted) => libc::EACCES,
        Err(_) => -1,
    };
    // SAFETY (all probes): plain integer arguments.
    let probes: &[Probe] = &[
        ("drop to nobody", &|| {
            check(unsafe { libc::setresgid(65534, 65534, 65534) }.into()).max(check(
                unsafe { libc::setresuid(65534, 65534, 65534) }.into(),
            ))
        }),
        ("install without no_new_privs", &install),
        ("set no_new_privs", &|| {
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())
        }),
        ("install with no_new_privs", &install),
        ("getpid after install", &|| {
            check(unsafe { libc::getpid() }.into())
        }),
    ];
    expect(
        exited(run_in_child(None, probes)),
        &[
            ("drop to nobody", 0),
            ("install without no_new_privs", libc::EACCES),
            ("set no_new_privs", 0),
            ("install with no_new_privs", 0),
            ("getpid after install", 0),
        ],
    );
}

#[test]
fn unconfined_compiles_to_no_filter() {
    assert_eq!(seccomp::compile(&SeccompProfile::Unconfined).unwrap(), None);
    let allow_all = br#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#;
    assert_eq!(seccomp::compile_oci_json(allow_all).unwrap(), None);
}

#[test]
fn runtime_default_fits_the_kernel_limit_with_room() {
    let filter = compiled(&SeccompProfile::RuntimeDefault);
    assert!(
        filter.instruction_count() < 1000,
        "{}",
        filter.instruction_count()
    );
}

#[test]
fn bad_profiles_fail_with_errors_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    let error = |json: &str| {
        let profile = profile_file(dir.path(), json);
        seccomp::compile(&profile).unwrap_err().to_string()
    };
    let shown = path.display();

    let message = error(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [}"#);
    assert!(
        message.starts_with(&format!(
            "seccomp profile {shown}: not a valid OCI seccomp profile: "
        )),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");

    let message = error(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_EPERM"}]}"#,
    );
    assert_eq!(
        message,
        format!(
            "seccomp profile {shown}: syscalls[1] (mkdir): action: unknown action `SCMP_ACT_EPERM`"
        )
    );

    let message = error(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"],
            "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_IS"}]}]}"#,
    );
    assert_eq!(
        message,
        format!(
            "seccomp profile {shown}: syscalls[0] (personality): args[0].op: unknown operator `SCMP_CMP_IS`"
        )
    );

    let message = error(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390X"]}"#,
    );
    let host = seccomp::Arch::host().unwrap().scmp_name();
    assert_eq!(
        message,
        format!(
            "seccomp profile {shown}: architectures [\"SCMP_ARCH_PPC64LE\", \"SCMP_ARCH_S390X\"] do not include this host's {host}"
        )
    );

    let inline = seccomp::compile_oci_json(b"not json")
        .unwrap_err()
        .to_string();
    assert!(
        inline.starts_with("seccomp profile (inline JSON): not a valid OCI seccomp profile"),
        "{inline}"
    );

    let missing = dir.path().join("missing.json");
    let message = seccomp::compile(&SeccompProfile::Localhost(missing.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!("seccomp profile {}: ", missing.display())),
        "{message}"
    );
}
