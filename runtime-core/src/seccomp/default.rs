//! The RuntimeDefault profile.
//!
//! Source: Docker's default profile, `seccomp/default.json` in github.com/moby/profiles
//! (Apache-2.0; formerly `profiles/seccomp/default.json` in moby/moby), which containerd's
//! RuntimeDefault mirrors. Docker renders that profile per container from its capabilities;
//! berth compiles one profile, Docker's rendering for a container with the CRI's default
//! capability set (which has CAP_SYS_CHROOT and not CAP_SYS_ADMIN):
//!
//! - default action ERRNO(EPERM); the unconditional allowlist below;
//! - `socket` unless the family is AF_VSOCK; `personality` only for the five personas Docker
//!   allows; `clone` only without namespace flags, and `clone3` fails with ENOSYS so that
//!   glibc falls back to `clone` (whose flags a filter can see);
//! - the groups Docker gates on kernel >= 4.8 (`ptrace`, `process_vm_*`) and on architecture
//!   (x86's `arch_prctl`, `modify_ldt`) and CAP_SYS_CHROOT's `chroot` are allowed.
//!
//! Simplifications, all towards denying:
//! - the groups Docker adds for extra capabilities (CAP_SYS_ADMIN's `mount`, `unshare`,
//!   `setns`, ...; CAP_SYS_PTRACE, CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_MODULE, CAP_BPF, ...)
//!   are left out: a container granted those capabilities needs `Unconfined` or a Localhost
//!   profile to use them. Privileged containers are Unconfined by kubelet's convention;
//! - the kernel keyring syscalls (`add_key`, `keyctl`, `request_key`) stay denied, as in
//!   Docker's profile until moby/profiles allowed them in 2025;
//! - `io_uring_*` stay denied, as in both since 2023;
//! - only the native ABI is compiled: i386 and x32 syscalls kill the process.
//!
//! The allowlist keeps Docker's names for every architecture (32-bit-only names such as
//! `chown32` are skipped when compiling for a 64-bit host), so it can be diffed with upstream.

use super::profile::{Action, Cmp, Condition, Policy, Rule};

/// Syscalls allowed with any arguments.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
/// and 0xffffffff (query the current persona).
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

const AF_VSOCK: u64 = 40;

/// The RuntimeDefault policy.
pub(crate) fn runtime_default() -> Policy {
    let allow_if = |name: &str, index: u8, cmp: Cmp| Rule {
        names: vec![name.to_owned()],
        action: Action::Allow,
        conditions: vec![Condition { index, cmp }],
    };
    let mut rules = vec![Rule {
        names: ALLOWED.iter().map(|&name| name.to_owned()).collect(),
        action: Action::Allow,
        conditions: Vec::new(),
    }];
    rules.push(allow_if("socket", 0, Cmp::Ne(AF_VSOCK)));
    rules.extend(
        PERSONAS
            .iter()
            .map(|&persona| allow_if("personality", 0, Cmp::Eq(persona))),
    );
    let no_namespaces = Cmp::MaskedEq {
        mask: CLONE_NAMESPACE_FLAGS,
        value: 0,
    };
    rules.push(allow_if("clone", 0, no_namespaces));
    rules.push(Rule {
        names: vec!["clone3".to_owned()],
        action: Action::Errno(libc::ENOSYS as u16),
        conditions: Vec::new(),
    });
    Policy {
        default_action: Action::Errno(libc::EPERM as u16),
        rules,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::arch::Arch;

    #[test]
    fn allowlist_has_no_duplicates_and_leaves_out_dangerous_syscalls() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "kexec_load",
            "init_module",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "open_by_handle_at",
            "pivot_root",
            "swapon",
            "settimeofday",
            "personality",
            "socket",
            "userfaultfd",
        ] {
            assert!(!ALLOWED.contains(&denied), "{denied} must not be allowed");
        }
    }

    #[test]
    fn most_allowed_names_exist_on_the_host() {
        let host = Arch::host().unwrap();
        let known = ALLOWED
            .iter()
            .filter(|name| host.syscall_number(name).is_some())
            .count();
        assert!(known > 280, "only {known} allowlisted syscalls resolve");
    }

    #[test]
    fn clone_mask_is_the_namespace_flags() {
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET;
        assert_eq!(CLONE_NAMESPACE_FLAGS, flags as u64);
    }
}
