//! The architectures berth builds filters for: their audit identifiers and syscall tables.

use super::syscall_table;

/// A CPU architecture as seccomp sees it (`seccomp_data.arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on, if berth can filter it.
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The name libseccomp and OCI profiles use (`architectures` entries).
    pub fn scmp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    /// `AUDIT_ARCH_*`: the ELF machine with the 64-bit and little-endian flags.
    pub(crate) fn audit_arch(self) -> u32 {
        const AUDIT_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;
        match self {
            Arch::X86_64 => AUDIT_64BIT_LE | 62,
            Arch::Aarch64 => AUDIT_64BIT_LE | 183,
        }
    }

    /// x86_64 kernels also accept x32 syscalls (numbers with bit 30 set) under the same audit
    /// arch; filters must tell them apart.
    pub(crate) fn has_x32_abi(self) -> bool {
        self == Arch::X86_64
    }

    /// The syscall's number on this architecture, or `None` if it has no such syscall.
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        let table = match self {
            Arch::X86_64 => syscall_table::X86_64,
            Arch::Aarch64 => syscall_table::AARCH64,
        };
        table
            .binary_search_by(|(entry, _)| (*entry).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::syscall_table::{AARCH64, X86_64};

    #[test]
    fn tables_are_sorted_and_numbers_unique() {
        for table in [X86_64, AARCH64] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
            let mut numbers: Vec<u32> = table.iter().map(|(_, nr)| *nr).collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), table.len());
        }
    }

    #[test]
    fn numbers_match_the_kernel_abi() {
        assert_eq!(Arch::X86_64.syscall_number("read"), Some(0));
        assert_eq!(Arch::X86_64.syscall_number("mkdir"), Some(83));
        assert_eq!(Arch::X86_64.syscall_number("clone3"), Some(435));
        assert_eq!(Arch::X86_64.syscall_number("listns"), Some(470));
        assert_eq!(Arch::Aarch64.syscall_number("io_setup"), Some(0));
        assert_eq!(Arch::Aarch64.syscall_number("mkdirat"), Some(34));
        assert_eq!(Arch::Aarch64.syscall_number("newfstatat"), Some(79));
        assert_eq!(Arch::Aarch64.syscall_number("clone3"), Some(435));
        // aarch64 has only the *at forms and no i386 leftovers.
        assert_eq!(Arch::Aarch64.syscall_number("mkdir"), None);
        assert_eq!(Arch::Aarch64.syscall_number("open"), None);
        assert_eq!(Arch::X86_64.syscall_number("chown32"), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn host_table_agrees_with_libc() {
        let arch = Arch::host().unwrap();
        for (name, nr) in [
            ("openat", libc::SYS_openat),
            ("personality", libc::SYS_personality),
            ("unshare", libc::SYS_unshare),
            ("keyctl", libc::SYS_keyctl),
            ("mseal", libc::SYS_mseal),
        ] {
            assert_eq!(arch.syscall_number(name), Some(nr as u32), "{name}");
        }
    }
}
