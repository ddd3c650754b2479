//! Device access rules on cgroup v2. The v2 tree has no `devices.allow` file: the kernel instead
//! runs the `BPF_PROG_TYPE_CGROUP_DEVICE` programs attached to a cgroup (and its ancestors) on
//! every device open and mknod, and denies with `EPERM` when one returns 0. berth compiles the
//! v1-syntax rules into such a program, in the shape of runc's `devicefilter.go`, and attaches it
//! with `BPF_F_ALLOW_MULTI`.
//!
//! Rules are an allow list, as on v1 after `devices.deny a`: no rules deny every device, an `a`
//! rule anywhere allows every device (berth then attaches nothing). Re-applying replaces berth's
//! program: the new one is attached first, then the programs berth attached before (recognised by
//! their name, [`PROG_NAME`]) are detached, so there is no moment without a filter. Programs others
//! attached to the cgroup are left alone; since every attached program must allow an access, they
//! can only restrict further.
//!
//! Needs root (`CAP_SYS_ADMIN`) and a kernel with `CONFIG_CGROUP_BPF` (4.15+). Kernels before 5.11
//! charge BPF programs to `RLIMIT_MEMLOCK`; berth does not raise it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::CgroupError;

/// Access bits of `struct bpf_cgroup_dev_ctx` (`BPF_DEVCG_ACC_*`), also used for [`DeviceRule`].
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 1 << 1;
const ACC_WRITE: u32 = 1 << 2;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Device types of `struct bpf_cgroup_dev_ctx` (`BPF_DEVCG_DEV_*`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 1 << 1;

/// The name berth gives its programs, so a re-apply finds and replaces only its own.
const PROG_NAME: &str = "berth_devices";

/// Which devices a rule covers: `a` (all), `c` (character) or `b` (block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    All,
    Char,
    Block,
}

/// One parsed allow rule such as `c 1:3 rwm`; `None` numbers are the `*` wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    pub access: u32,
}

impl DeviceRule {
    /// Whether the rule matches every access to every device (`a`).
    fn allows_everything(&self) -> bool {
        *self == allow_all()
    }
}

/// Parses rules in the cgroup v1 `devices.allow` syntax: `TYPE MAJOR:MINOR ACCESS` with type
/// `c` or `b`, numbers or `*`, access a non-empty subset of `rwm`; or `a` (optionally
/// `a *:* rwm`) for every device. The error names the rule.
pub(crate) fn parse_rules(rules: &[String]) -> Result<Vec<DeviceRule>, String> {
    rules
        .iter()
        .map(|rule| parse_rule(rule).map_err(|why| format!("device rule {rule:?}: {why}")))
        .collect()
}

fn parse_rule(rule: &str) -> Result<DeviceRule, String> {
    let fields: Vec<&str> = rule.split_whitespace().collect();
    let (kind, numbers, access) = match fields.as_slice() {
        ["a"] => return Ok(allow_all()),
        [kind, numbers, access] => (*kind, *numbers, *access),
        _ => return Err("expected \"TYPE MAJOR:MINOR ACCESS\" or \"a\"".to_string()),
    };
    let (major, minor) = numbers
        .split_once(':')
        .ok_or("expected MAJOR:MINOR, such as 1:3 or 136:*")?;
    let parsed = DeviceRule {
        kind: match kind {
            "a" => DeviceKind::All,
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            _ => return Err(format!("device type {kind:?} is not a, c or b")),
        },
        major: parse_number(major, "major")?,
        minor: parse_number(minor, "minor")?,
        access: parse_access(access)?,
    };
    // v1 treats any `a` rule as "every device", whatever follows it; refuse the forms where
    // the numbers or access suggest otherwise rather than silently widening them.
    if parsed.kind == DeviceKind::All && !parsed.allows_everything() {
        return Err("type a covers every device: write \"a\" or \"a *:* rwm\"".to_string());
    }
    Ok(parsed)
}

fn allow_all() -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: ACC_ALL,
    }
}

fn parse_number(s: &str, what: &str) -> Result<Option<u32>, String> {
    if s == "*" {
        return Ok(None);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} number {s:?} is neither digits nor *"));
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{what} number {s} does not fit in 32 bits"))
}

fn parse_access(s: &str) -> Result<u32, String> {
    s.chars().try_fold(0, |bits, c| match c {
        'r' => Ok(bits | ACC_READ),
        'w' => Ok(bits | ACC_WRITE),
        'm' => Ok(bits | ACC_MKNOD),
        _ => Err(format!("access {s:?} is not a subset of rwm")),
    })
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`: opcode, destination
/// register (low nibble) and source register (high nibble), jump offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Opcodes the device filter uses, from `linux/bpf_common.h` (class | operation | source).
mod op {
    /// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_MEM | BPF_W.
    pub const LDX_MEM_W: u8 = 0x61;
    /// `dst = (u32)(dst & imm)`: BPF_ALU | BPF_AND | BPF_K.
    pub const AND32_K: u8 = 0x54;
    /// `dst = (u32)dst >> imm`: BPF_ALU | BPF_RSH | BPF_K.
    pub const RSH32_K: u8 = 0x74;
    /// `dst = (u32)imm`: BPF_ALU | BPF_MOV | BPF_K.
    pub const MOV32_K: u8 = 0xb4;
    /// `dst = (u32)src`: BPF_ALU | BPF_MOV | BPF_X.
    pub const MOV32_X: u8 = 0xbc;
    /// `if dst != (s64)imm goto +off`: BPF_JMP | BPF_JNE | BPF_K.
    pub const JNE_K: u8 = 0x55;
    /// `if dst != src goto +off`: BPF_JMP | BPF_JNE | BPF_X.
    pub const JNE_X: u8 = 0x5d;
    /// `return r0`: BPF_JMP | BPF_EXIT.
    pub const EXIT: u8 = 0x95;
}

/// Registers: R0 holds the verdict, R1 the context pointer and then scratch values, R2..R5 the
/// device type, requested access, major and minor.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    fn is_jump(&self) -> bool {
        matches!(self.code, op::JNE_K | op::JNE_X)
    }
}

/// Compiles allow rules into a device filter returning 1 (allow) or 0 (deny, the default). Rules
/// are checked in order: device type, then the requested access being a subset of the rule's,
/// then major and minor; each check that fails jumps to the next rule.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    if rules.iter().any(DeviceRule::allows_everything) {
        return verdict(true).to_vec();
    }
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, with
    // access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
    let mut insns = vec![
        BpfInsn::new(op::LDX_MEM_W, R_TYPE, R1, 0, 0),
        BpfInsn::new(op::AND32_K, R_TYPE, 0, 0, 0xffff),
        BpfInsn::new(op::LDX_MEM_W, R_ACCESS, R1, 0, 0),
        BpfInsn::new(op::RSH32_K, R_ACCESS, 0, 0, 16),
        BpfInsn::new(op::LDX_MEM_W, R_MAJOR, R1, 4, 0),
        BpfInsn::new(op::LDX_MEM_W, R_MINOR, R1, 8, 0),
    ];
    for rule in rules {
        insns.extend(rule_block(rule));
    }
    insns.extend(verdict(false));
    insns
}

fn verdict(allow: bool) -> [BpfInsn; 2] {
    [
        BpfInsn::new(op::MOV32_K, R0, 0, 0, i32::from(allow)),
        BpfInsn::new(op::EXIT, 0, 0, 0, 0),
    ]
}

/// The checks of one (non-`a`) rule followed by "allow"; every failed check skips the block.
fn rule_block(rule: &DeviceRule) -> Vec<BpfInsn> {
    let mut block = Vec::new();
    match rule.kind {
        DeviceKind::Block => block.push(BpfInsn::new(op::JNE_K, R_TYPE, 0, 0, DEV_BLOCK)),
        DeviceKind::Char => block.push(BpfInsn::new(op::JNE_K, R_TYPE, 0, 0, DEV_CHAR)),
        DeviceKind::All => {}
    }
    if rule.access != ACC_ALL {
        // if (requested & allowed) != requested: skip. The access bits fit in an imm.
        block.extend([
            BpfInsn::new(op::MOV32_X, R1, R_ACCESS, 0, 0),
            BpfInsn::new(op::AND32_K, R1, 0, 0, rule.access as i32),
            BpfInsn::new(op::JNE_X, R1, R_ACCESS, 0, 0),
        ]);
    }
    for (reg, number) in [(R_MAJOR, rule.major), (R_MINOR, rule.minor)] {
        if let Some(n) = number {
            block.extend(jump_if_not_equal(reg, n));
        }
    }
    block.extend(verdict(true));
    let len = block.len();
    for (i, insn) in block.iter_mut().enumerate() {
        if insn.is_jump() {
            // Offsets count from the next instruction; the target is the next rule's block.
            insn.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
        }
    }
    block
}

/// `if reg != n` (offset filled in by the caller). A jump immediate is sign-extended to 64 bits
/// while the loaded value is zero-extended, so numbers above `i32::MAX` go through a register.
fn jump_if_not_equal(reg: u8, n: u32) -> Vec<BpfInsn> {
    match i32::try_from(n) {
        Ok(imm) => vec![BpfInsn::new(op::JNE_K, reg, 0, 0, imm)],
        Err(_) => vec![
            BpfInsn::new(op::MOV32_K, R1, 0, 0, n as i32),
            BpfInsn::new(op::JNE_X, reg, R1, 0, 0),
        ],
    }
}

/// A failed step of attaching a device filter to the cgroup directory `dir`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", dir.display())]
pub(crate) struct DeviceFilterError {
    /// What was done, phrased to precede the directory ("attach the device filter to").
    op: String,
    dir: PathBuf,
    source: io::Error,
}

impl DeviceFilterError {
    fn new(op: impl Into<String>, dir: &Path, source: io::Error) -> Self {
        DeviceFilterError {
            op: op.into(),
            dir: dir.to_path_buf(),
            source,
        }
    }

    /// The same failure as a [`CgroupError`] of the cgroup `cgroup`.
    pub(crate) fn into_cgroup_error(self, cgroup: &str) -> CgroupError {
        CgroupError::io(cgroup, self.op, self.dir, self.source)
    }
}

/// Enforces `rules` on the cgroup v2 directory `cgroup_dir`: attaches a new filter (unless a rule
/// allows everything), then detaches the filters berth attached before.
pub(crate) fn attach(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<(), DeviceFilterError> {
    let fail = |op: &str| {
        let op = op.to_string();
        move |e| DeviceFilterError::new(op, cgroup_dir, e)
    };
    let dir = open_dir(cgroup_dir).map_err(fail("open"))?;
    let old = berth_programs(&dir, cgroup_dir)?;
    if !rules.iter().any(DeviceRule::allows_everything) {
        let insns = program(rules);
        let prog = load(&insns).map_err(|(e, log)| {
            let op = format!("load the device filter (BPF_PROG_LOAD; verifier log: {log:?}) for");
            DeviceFilterError::new(op, cgroup_dir, e)
        })?;
        let op =
            "attach the device filter (BPF_PROG_ATTACH BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to";
        prog_attach(&dir, &prog, BPF_F_ALLOW_MULTI).map_err(fail(op))?;
        // The attachment holds its own reference; our fd is closed when `prog` drops.
    }
    for (id, prog) in &old {
        let op = format!("detach the previous device filter (program {id}, BPF_PROG_DETACH) from");
        prog_detach(&dir, prog).map_err(fail(&op))?;
    }
    debug!(cgroup_dir = %cgroup_dir.display(), rules = rules.len(), replaced = old.len(), "device filter applied");
    Ok(())
}

fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// The device filters attached directly to the cgroup `dir` that berth loaded (by name), with
/// their ids. Programs that vanished or that an LSM policy keeps us from opening are skipped, as
/// runc does: another filter can only restrict further.
fn berth_programs(dir: &File, path: &Path) -> Result<Vec<(u32, OwnedFd)>, DeviceFilterError> {
    let ids = prog_query(dir)
        .map_err(|e| DeviceFilterError::new("list device filters (BPF_PROG_QUERY) of", path, e))?;
    let mut ours = Vec::new();
    for id in ids {
        let op = format!("inspect device filter program {id} (BPF_PROG_GET_FD_BY_ID) attached to");
        let prog = match prog_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if is_gone_or_forbidden(&e) => {
                debug!(cgroup_dir = %path.display(), id, error = %e, "skip device filter berth cannot open");
                continue;
            }
            Err(e) => return Err(DeviceFilterError::new(op, path, e)),
        };
        let name = prog_name(&prog).map_err(|e| DeviceFilterError::new(op, path, e))?;
        if name == PROG_NAME {
            ours.push((id, prog));
        }
    }
    Ok(ours)
}

fn is_gone_or_forbidden(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EPERM | libc::EACCES)
    )
}

// The kernel's bpf(2) interface: commands, constants and the `union bpf_attr` members used here,
// from `linux/bpf.h`. Each attr struct is a prefix of the union; the kernel zero-fills the rest.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
const BPF_OBJ_NAME_LEN: usize = 16;
const LICENSE: &std::ffi::CStr = c"Apache-2.0";
/// Room for the verifier's complaints about a program of a few hundred instructions.
const VERIFIER_LOG_SIZE: usize = 64 * 1024;
/// Tries of BPF_PROG_LOAD when the verifier is interrupted (EAGAIN) or the call is (EINTR).
const LOAD_TRIES: usize = 5;

#[repr(C, align(8))]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C, align(8))]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C, align(8))]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_prog_info`, up to the program's name.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; BPF_OBJ_NAME_LEN],
}

// No padding anywhere: padding bytes are uninitialised, and the kernel rejects attrs whose unused
// fields are not zero.
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<ProgLoadAttr>() == 72);
    assert!(size_of::<ProgAttachAttr>() == 20);
    assert!(size_of::<ProgQueryAttr>() == 32);
    assert!(size_of::<GetFdByIdAttr>() == 12);
    assert!(size_of::<InfoByFdAttr>() == 16);
    assert!(size_of::<ProgInfo>() == 80);
};

/// bpf(2) with `attr`; the result is the non-negative return value (an fd for loads).
///
/// # Safety
/// Every pointer stored in `attr` must point to memory valid for the kernel to read (or write,
/// for output buffers) for the sizes stored beside it, for the duration of the call.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is an exclusively borrowed, initialised `repr(C)` prefix of `union bpf_attr`
    // and its exact size is passed, so the kernel reads and writes only inside it; the pointers
    // it holds are valid per this function's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor bpf(2) returned.
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let raw = i32::try_from(ret).map_err(|_| io::Error::other(format!("bpf returned {ret}")))?;
    // SAFETY: the kernel just returned `raw` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `u32` form of a descriptor for attr fields (descriptors are never negative).
fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd().unsigned_abs()
}

/// Loads `insns` as a device filter named [`PROG_NAME`]. On failure, loads once more with a log
/// buffer and returns the error with the verifier's log.
fn load(insns: &[BpfInsn]) -> Result<OwnedFd, (io::Error, String)> {
    load_named(insns, PROG_NAME)
}

fn load_named(insns: &[BpfInsn], name: &str) -> Result<OwnedFd, (io::Error, String)> {
    match load_once(insns, name, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; VERIFIER_LOG_SIZE];
            match load_once(insns, name, Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(_) => Err((first, log_text(&log))),
            }
        }
    }
}

fn load_once(insns: &[BpfInsn], name: &str, log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| io::Error::other("program too long"))?;
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    let name = name.as_bytes();
    let len = name.len().min(BPF_OBJ_NAME_LEN - 1);
    attr.prog_name[..len].copy_from_slice(&name[..len]);
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    let mut tries = 0;
    loop {
        // SAFETY: `insns`, `LICENSE` (NUL-terminated) and the optional log buffer outlive the
        // call, and `insn_cnt`/`log_size` are their lengths.
        match unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
            Ok(fd) => return owned_fd(fd),
            Err(e) if is_retryable(&e) && tries + 1 < LOAD_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn is_retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

/// The verifier log up to its NUL, trimmed to its last 2000 characters (where the error is).
fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(2000);
    text.chars().skip(skip).collect()
}

/// Attaches `prog` to the cgroup `dir` as a device filter.
fn prog_attach(dir: &File, prog: &OwnedFd, flags: u32) -> io::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(dir.as_fd()),
        attach_bpf_fd: fd_u32(prog.as_fd()),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        ..Default::default()
    };
    // SAFETY: the attr holds descriptors and numbers only, no pointers.
    unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

fn prog_detach(dir: &File, prog: &OwnedFd) -> io::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(dir.as_fd()),
        attach_bpf_fd: fd_u32(prog.as_fd()),
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    // SAFETY: the attr holds descriptors and numbers only, no pointers.
    unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// Ids of the device filters attached directly to the cgroup `dir` (not inherited ones).
fn prog_query(dir: &File) -> io::Result<Vec<u32>> {
    // 64 is the kernel's limit of programs per cgroup and attach type; ENOSPC says how many
    // there are should that ever grow.
    let mut ids = vec![0u32; 64];
    for _ in 0..5 {
        let mut attr = ProgQueryAttr {
            target_fd: fd_u32(dir.as_fd()),
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        // SAFETY: `prog_ids` points to `ids`, which has room for `prog_cnt` u32s and outlives
        // the call.
        match unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                ids.resize(attr.prog_cnt as usize, 0);
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "the set of attached programs kept growing while it was listed",
    ))
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: the attr holds numbers only, no pointers.
    unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.and_then(owned_fd)
}

/// The name a program was loaded with.
fn prog_name(prog: &OwnedFd) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: fd_u32(prog.as_fd()),
        info_len: u32::try_from(std::mem::size_of::<ProgInfo>()).unwrap_or(u32::MAX),
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `info` points to a zeroed `ProgInfo` of `info_len` bytes that outlives the call;
    // its own pointer fields are null with zero lengths, so the kernel fills in nothing more.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let end = info
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.name.len());
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

    use super::*;

    fn rules(rules: &[&str]) -> Vec<DeviceRule> {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        parse_rules(&rules).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parse_accepts_v1_allow_syntax() {
        let parsed = rules(&["c 1:3 rwm", "b *:* m", "c 136:* rw", " c\t5:1  r "]);
        let rule = |kind, major, minor, access| DeviceRule {
            kind,
            major,
            minor,
            access,
        };
        assert_eq!(
            parsed,
            [
                rule(DeviceKind::Char, Some(1), Some(3), ACC_ALL),
                rule(DeviceKind::Block, None, None, ACC_MKNOD),
                rule(DeviceKind::Char, Some(136), None, ACC_READ | ACC_WRITE),
                rule(DeviceKind::Char, Some(5), Some(1), ACC_READ),
            ]
        );
        assert_eq!(rules(&["a"]), [allow_all()]);
        assert_eq!(rules(&["a *:* rwm"]), [allow_all()]);
        assert_eq!(
            rules(&["c 4294967295:0 r"])[0].major,
            Some(u32::MAX),
            "v1 takes any u32"
        );
    }

    #[test]
    fn parse_rejects_malformed_rules_naming_them() {
        for bad in [
            "",
            "c",
            "c 1:3",
            "x 1:3 r",
            "c 1-3 r",
            "c 1:3 rx",
            "c 1:3 RW",
            "c a:3 r",
            "c -1:3 r",
            "c 1: r",
            "c 4294967296:0 r",
            "c 1:3 rwm extra",
            "a 1:3 r",
            "a *:* r",
        ] {
            let input = vec!["c 1:3 rwm".to_string(), bad.to_string()];
            let err = parse_rules(&input).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    /// Stands for the context pointer in R1; loads through anything else are refused.
    const CTX: u64 = 0xc7c7_0000_0000_0000;

    fn reg(regs: &[Option<u64>; 11], r: usize, pc: usize) -> u64 {
        regs[r].unwrap_or_else(|| panic!("insn {pc} reads uninitialised r{r}"))
    }

    /// Runs a device filter the way the kernel would for one access: `true` if it allows it.
    /// Knows only the opcodes [`program`] emits, and checks what the verifier would: no reads
    /// of unset registers, loads only from the context, no arithmetic on it, forward jumps that
    /// stay inside the program, a 0/1 verdict.
    fn run(prog: &[BpfInsn], access: u32, dev_type: i32, major: u32, minor: u32) -> bool {
        let ctx = [(access << 16) | dev_type.unsigned_abs(), major, minor];
        let mut regs = [None; 11];
        regs[1] = Some(CTX);
        let mut pc = 0;
        loop {
            let insn = prog
                .get(pc)
                .unwrap_or_else(|| panic!("insn {pc}: ran off the end of the program"));
            let (dst, src) = (usize::from(insn.regs & 0x0f), usize::from(insn.regs >> 4));
            let scalar = |r: usize| {
                let v = reg(&regs, r, pc);
                assert_ne!(v, CTX, "insn {pc}: arithmetic on the context pointer");
                v
            };
            let mut next = pc + 1;
            let jump = || {
                let off = usize::try_from(insn.off).expect("only forward jumps");
                pc + 1 + off
            };
            match insn.code {
                op::LDX_MEM_W => {
                    assert_eq!(reg(&regs, src, pc), CTX, "insn {pc}: load from non-context");
                    let field = usize::try_from(insn.off / 4).expect("offset");
                    assert!(insn.off % 4 == 0 && field < 3, "insn {pc}: bad ctx offset");
                    regs[dst] = Some(u64::from(ctx[field]));
                }
                op::AND32_K => regs[dst] = Some(u64::from(scalar(dst) as u32 & insn.imm as u32)),
                op::RSH32_K => regs[dst] = Some(u64::from((scalar(dst) as u32) >> insn.imm)),
                op::MOV32_K => regs[dst] = Some(u64::from(insn.imm as u32)),
                op::MOV32_X => regs[dst] = Some(u64::from(scalar(src) as u32)),
                // The kernel sign-extends a 64-bit jump's immediate.
                op::JNE_K if scalar(dst) != insn.imm as i64 as u64 => next = jump(),
                op::JNE_X if scalar(dst) != scalar(src) => next = jump(),
                op::JNE_K | op::JNE_X => {}
                op::EXIT => {
                    return match reg(&regs, 0, pc) {
                        0 => false,
                        1 => true,
                        v => panic!("insn {pc}: verdict {v} is not 0 or 1"),
                    };
                }
                code => panic!("insn {pc}: unexpected opcode {code:#04x}"),
            }
            pc = next;
        }
    }

    const R: u32 = ACC_READ;
    const W: u32 = ACC_WRITE;
    const M: u32 = ACC_MKNOD;
    const C: i32 = DEV_CHAR;
    const B: i32 = DEV_BLOCK;

    #[test]
    fn filter_allows_exactly_the_listed_device() {
        let prog = program(&rules(&["c 1:3 rwm"]));
        assert!(run(&prog, R, C, 1, 3), "read /dev/null");
        assert!(run(&prog, R | W, C, 1, 3), "open /dev/null read-write");
        assert!(run(&prog, M, C, 1, 3), "mknod /dev/null");
        assert!(!run(&prog, R, C, 1, 1), "read /dev/mem");
        assert!(!run(&prog, R, C, 3, 1), "major and minor swapped");
        assert!(
            !run(&prog, R, B, 1, 3),
            "block device with the same numbers"
        );
    }

    #[test]
    fn filter_wildcards_match_any_number() {
        let prog = program(&rules(&["c 136:* rwm"]));
        assert!(run(&prog, R | W, C, 136, 0));
        assert!(run(&prog, R | W, C, 136, 1_048_575));
        assert!(!run(&prog, R, C, 137, 0));
        let any_char = program(&rules(&["c *:* r"]));
        assert!(run(&any_char, R, C, 0, 0));
        assert!(run(&any_char, R, C, 4095, 1_048_575));
        assert!(!run(&any_char, R, B, 8, 0), "only character devices");
    }

    #[test]
    fn filter_checks_the_requested_access_is_a_subset() {
        let mknod_only = program(&rules(&["c *:* m", "b *:* m"]));
        assert!(run(&mknod_only, M, C, 1, 5));
        assert!(run(&mknod_only, M, B, 8, 0));
        assert!(!run(&mknod_only, R, C, 1, 5), "mknod does not grant read");
        assert!(!run(&mknod_only, W, B, 8, 0), "mknod does not grant write");

        let read_only = program(&rules(&["c 1:5 r"]));
        assert!(run(&read_only, R, C, 1, 5));
        assert!(!run(&read_only, W, C, 1, 5));
        assert!(
            !run(&read_only, R | W, C, 1, 5),
            "read-write is more than read"
        );
    }

    #[test]
    fn filter_tries_rules_in_order_and_separates_block_from_char() {
        let prog = program(&rules(&["c 1:3 rwm", "b 8:* rw", "c 1:5 r", "c *:* m"]));
        assert!(run(&prog, W, C, 1, 3), "first rule");
        assert!(run(&prog, R | W, B, 8, 16), "second rule");
        assert!(!run(&prog, M, B, 8, 16), "block mknod is not granted");
        assert!(!run(&prog, R, C, 8, 16), "char 8:16 is not a block device");
        assert!(run(&prog, R, C, 1, 5), "third rule");
        assert!(!run(&prog, W, C, 1, 5), "third rule is read-only");
        assert!(run(&prog, M, C, 10, 200), "fourth rule");
    }

    #[test]
    fn filter_compares_numbers_above_i32_max_exactly() {
        let prog = program(&rules(&["c 3000000000:4294967295 r"]));
        assert!(run(&prog, R, C, 3_000_000_000, u32::MAX));
        assert!(!run(&prog, R, C, 3_000_000_000, 0));
        assert!(!run(&prog, R, C, 2_999_999_999, u32::MAX));
    }

    #[test]
    fn no_rules_deny_everything_and_a_allows_everything() {
        let deny = program(&[]);
        let allow = program(&rules(&["c 1:3 r", "a"]));
        assert_eq!(allow, verdict(true), "a needs no checks");
        for (access, dev_type, major, minor) in [(R, C, 1, 3), (M, B, 8, 0), (W, C, 5, 1)] {
            assert!(!run(&deny, access, dev_type, major, minor));
            assert!(run(&allow, access, dev_type, major, minor));
        }
    }

    #[test]
    fn attach_to_a_plain_directory_names_the_operation_and_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = attach(dir.path(), &rules(&["c 1:3 rwm"])).expect_err("not a cgroup");
        let msg = err.into_cgroup_error("pod1").to_string();
        assert!(msg.starts_with("cgroup pod1: "), "{msg}");
        assert!(msg.contains("BPF_PROG_QUERY"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    /// The host's cgroup2 mount, or `None` (saying why) when the kernel cannot run the test.
    /// Outside CI a non-root user skips too; in CI (`CI=true`, root) that is a failure.
    fn kernel_ready(test: &str) -> Option<PathBuf> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: CI must run as root"
            );
            eprintln!("skipped {test}: loading BPF programs needs root");
            return None;
        }
        let cgroup2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| statfs(p).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC));
        let Some(root) = cgroup2 else {
            eprintln!("skipped {test}: no cgroup2 mount");
            return None;
        };
        if let Err((e, log)) = load(&verdict(true)) {
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
                eprintln!("skipped {test}: kernel lacks BPF cgroup device programs: {e}");
                return None;
            }
            panic!("{test}: load a trivial device filter: {e}; verifier log: {log}");
        }
        Some(root)
    }

    /// An empty cgroup private to one test, removed on drop.
    struct ScratchCgroup(PathBuf);

    impl ScratchCgroup {
        fn new(root: &Path) -> ScratchCgroup {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = root.join(format!("berth-test-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            ScratchCgroup(dir)
        }
    }

    impl Drop for ScratchCgroup {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir(&self.0) {
                eprintln!("remove test cgroup {}: {e}", self.0.display());
            }
        }
    }

    fn attached_names(dir: &Path) -> Vec<String> {
        let dir = open_dir(dir).expect("open cgroup");
        let mut names: Vec<String> = prog_query(&dir)
            .expect("query")
            .into_iter()
            .map(|id| prog_name(&prog_fd_by_id(id).expect("fd by id")).expect("name"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reapplying_replaces_only_berths_filter_and_a_removes_it() {
        let test = "reapplying_replaces_only_berths_filter_and_a_removes_it";
        let Some(root) = kernel_ready(test) else {
            return;
        };
        let cgroup = ScratchCgroup::new(&root);
        let other = load_named(&verdict(true), "other_filter").expect("load other filter");
        let dir = open_dir(&cgroup.0).expect("open cgroup");
        prog_attach(&dir, &other, BPF_F_ALLOW_MULTI).expect("attach other filter");

        attach(&cgroup.0, &rules(&["c 1:3 rwm"])).expect("first apply");
        attach(&cgroup.0, &rules(&["c 1:3 rwm", "c 1:5 r"])).expect("second apply");
        assert_eq!(attached_names(&cgroup.0), [PROG_NAME, "other_filter"]);

        attach(&cgroup.0, &rules(&["a"])).expect("allow everything");
        assert_eq!(attached_names(&cgroup.0), ["other_filter"]);
    }

    #[test]
    fn load_failure_returns_the_verifier_log() {
        let Some(_) = kernel_ready("load_failure_returns_the_verifier_log") else {
            return;
        };
        // Returns without setting R0.
        let (err, log) = load(&[BpfInsn::new(op::EXIT, 0, 0, 0, 0)]).expect_err("invalid");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        assert!(log.contains("R0"), "verifier log: {log}");
    }
}
