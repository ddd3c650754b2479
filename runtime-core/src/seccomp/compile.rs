//! Policy → classic BPF program for `seccomp(2)`.
//!
//! Layout of the program (A is BPF's accumulator):
//!
//! ```text
//!     A = arch;  if A != native: return KILL_PROCESS
//!     A = nr;    [x86_64: if A >= 0x40000000 && A != -1: return KILL_PROCESS  (x32 ABI)]
//!     for each segment [lo, hi] in ascending order:
//!         if A > hi: continue with the next segment
//!         if A < lo: return default             (a gap between segments)
//!         body                                   (always ends in a return)
//!     return default
//! ```
//!
//! A segment is either a run of consecutive syscall numbers that all have the same
//! unconditional action (body: `return action`; RuntimeDefault's ~330 allowed syscalls make
//! a few dozen such runs), or one syscall with conditional rules (body: each rule's argument
//! tests, jumping to the next rule on failure, then `return action`; finally `return
//! default`). Rules of one syscall keep the profile's order, so the first matching rule wins,
//! whatever mix of actions the profile uses. A syscall's rules after an unconditional one can
//! never match and are dropped.
//!
//! BPF conditional jumps reach at most 255 instructions forward. Jumps inside a rule stay far
//! below that (at most six argument tests of six instructions); the segment header's skip
//! over a long body uses an unconditional `ja`, which has 32 bits.

use std::collections::BTreeMap;

use super::SeccompError;
use super::arch::Arch;
use super::profile::{Action, Cmp, Condition, Policy};

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;
/// x32 syscalls are x86_64 syscalls with this bit set (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// The resolved rules of one syscall, in profile order.
type SyscallRules = Vec<(Vec<Condition>, Action)>;

/// Compiles `policy` for `arch`. Syscall names `arch` does not have are skipped (as libseccomp
/// does) and returned, for logging.
pub(crate) fn compile(
    policy: &Policy,
    arch: Arch,
    origin: &str,
) -> Result<(Vec<Instruction>, Vec<String>), SeccompError> {
    let (by_number, unknown) = resolve(policy, arch);
    let mut program = prologue(arch);
    for segment in segments(&by_number) {
        program.extend(segment_code(&segment, policy.default_action));
    }
    program.push(ret(policy.default_action));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge {
            origin: origin.to_owned(),
            instructions: program.len(),
        });
    }
    Ok((program, unknown))
}

fn resolve(policy: &Policy, arch: Arch) -> (BTreeMap<u32, SyscallRules>, Vec<String>) {
    let mut by_number: BTreeMap<u32, SyscallRules> = BTreeMap::new();
    let mut unknown = Vec::new();
    for rule in &policy.rules {
        for name in &rule.names {
            let Some(nr) = arch.syscall_number(name) else {
                unknown.push(name.clone());
                continue;
            };
            let rules = by_number.entry(nr).or_default();
            let decided = rules.last().is_some_and(|(conds, _)| conds.is_empty());
            if !decided {
                rules.push((rule.conditions.clone(), rule.action));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    (by_number, unknown)
}

struct Segment<'a> {
    lo: u32,
    hi: u32,
    rules: &'a [(Vec<Condition>, Action)],
}

/// Merges consecutive syscalls that have one and the same unconditional action.
fn segments(by_number: &BTreeMap<u32, SyscallRules>) -> Vec<Segment<'_>> {
    let mut segments: Vec<Segment> = Vec::new();
    for (&nr, rules) in by_number {
        if let Some(last) = segments.last_mut() {
            let unconditional = |rules: &[(Vec<Condition>, Action)]| match rules {
                [(conds, action)] if conds.is_empty() => Some(*action),
                _ => None,
            };
            let mergeable = last.hi + 1 == nr
                && unconditional(last.rules).is_some()
                && unconditional(last.rules) == unconditional(rules);
            if mergeable {
                last.hi = nr;
                continue;
            }
        }
        segments.push(Segment {
            lo: nr,
            hi: nr,
            rules,
        });
    }
    segments
}

fn prologue(arch: Arch) -> Vec<Instruction> {
    let kill = ret(Action::KillProcess);
    let mut code = vec![
        load(ARCH_OFFSET),
        jump(JEQ_K, arch.audit_arch(), 1, 0),
        kill,
        load(NR_OFFSET),
    ];
    if arch.has_x32_abi() {
        code.extend([
            jump(JGE_K, X32_SYSCALL_BIT, 0, 2),
            jump(JEQ_K, u32::MAX, 1, 0),
            kill,
        ]);
    }
    code
}

/// Header (range test) and body of one segment; A holds the syscall number on entry.
fn segment_code(segment: &Segment, default: Action) -> Vec<Instruction> {
    let body = segment_body(segment.rules, default);
    let below = if segment.lo == segment.hi {
        jump(JEQ_K, segment.lo, 1, 0)
    } else {
        jump(JGE_K, segment.lo, 1, 0)
    };
    let mut code = Vec::with_capacity(body.len() + 4);
    // Skips the two instructions below and the body.
    let skip = body.len() + 2;
    match u8::try_from(skip) {
        Ok(skip) => code.push(jump(JGT_K, segment.hi, skip, 0)),
        Err(_) => code.extend([
            jump(JGT_K, segment.hi, 0, 1),
            Instruction {
                code: JA,
                jt: 0,
                jf: 0,
                k: skip as u32,
            },
        ]),
    }
    code.extend([below, ret(default)]);
    code.extend(body);
    code
}

fn segment_body(rules: &[(Vec<Condition>, Action)], default: Action) -> Vec<Instruction> {
    let mut body = Vec::new();
    for (conditions, action) in rules {
        body.extend(rule_code(conditions, *action));
    }
    let falls_through = rules.last().is_none_or(|(conds, _)| !conds.is_empty());
    if falls_through {
        body.push(ret(default));
    }
    body
}

/// The argument tests of one rule, then its return; a failed test jumps past the return.
fn rule_code(conditions: &[Condition], action: Action) -> Vec<Instruction> {
    let mut asm = Assembler::default();
    let next_rule = asm.label();
    for condition in conditions {
        condition_code(&mut asm, *condition, next_rule);
    }
    asm.emit(ret(action));
    asm.bind(next_rule);
    asm.finish()
}

/// Tests the 64-bit argument (high word, then low word); jumps to `fail` unless it holds.
fn condition_code(asm: &mut Assembler, condition: Condition, fail: Label) {
    let low = ARGS_OFFSET + 8 * u32::from(condition.index);
    let high = low + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let ok = asm.label();
    let next = Target::Next;
    let (fail, ok_t) = (Target::Label(fail), Target::Label(ok));
    match condition.cmp {
        Cmp::Eq(v) => {
            let (hi, lo) = split(v);
            asm.emit(load(high));
            asm.branch(JEQ_K, hi, next, fail);
            asm.emit(load(low));
            asm.branch(JEQ_K, lo, next, fail);
        }
        Cmp::Ne(v) => {
            let (hi, lo) = split(v);
            asm.emit(load(high));
            asm.branch(JEQ_K, hi, next, ok_t);
            asm.emit(load(low));
            asm.branch(JEQ_K, lo, fail, next);
        }
        Cmp::Gt(v) | Cmp::Ge(v) => {
            let (hi, lo) = split(v);
            let low_test = if matches!(condition.cmp, Cmp::Gt(_)) {
                JGT_K
            } else {
                JGE_K
            };
            asm.emit(load(high));
            asm.branch(JGT_K, hi, ok_t, next);
            asm.branch(JEQ_K, hi, next, fail);
            asm.emit(load(low));
            asm.branch(low_test, lo, next, fail);
        }
        Cmp::Lt(v) | Cmp::Le(v) => {
            let (hi, lo) = split(v);
            // arg < v fails when low >= v's low; arg <= v fails when low > v's low.
            let low_fails = if matches!(condition.cmp, Cmp::Lt(_)) {
                JGE_K
            } else {
                JGT_K
            };
            asm.emit(load(high));
            asm.branch(JGT_K, hi, fail, next);
            asm.branch(JEQ_K, hi, next, ok_t);
            asm.emit(load(low));
            asm.branch(low_fails, lo, fail, next);
        }
        Cmp::MaskedEq { mask, value } => {
            let ((mask_hi, mask_lo), (hi, lo)) = (split(mask), split(value));
            asm.emit(load(high));
            asm.emit(and(mask_hi));
            asm.branch(JEQ_K, hi, next, fail);
            asm.emit(load(low));
            asm.emit(and(mask_lo));
            asm.branch(JEQ_K, lo, next, fail);
        }
    }
    asm.bind(ok);
}

fn load(offset: u32) -> Instruction {
    Instruction {
        code: LD_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

fn and(mask: u32) -> Instruction {
    Instruction {
        code: AND_K,
        jt: 0,
        jf: 0,
        k: mask,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction { code, jt, jf, k }
}

fn ret(action: Action) -> Instruction {
    Instruction {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: action.ret(),
    }
}

/// Forward jumps to labels within one rule, resolved when the rule is finished.
#[derive(Default)]
struct Assembler {
    code: Vec<Instruction>,
    /// (instruction index, jt target, jf target) of conditional jumps.
    branches: Vec<(usize, Target, Target)>,
    labels: Vec<Option<usize>>,
}

#[derive(Clone, Copy)]
struct Label(usize);

#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(Label),
}

impl Assembler {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }

    fn emit(&mut self, instruction: Instruction) {
        self.code.push(instruction);
    }

    fn branch(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.branches.push((self.code.len(), jt, jf));
        self.emit(jump(code, k, 0, 0));
    }

    fn finish(mut self) -> Vec<Instruction> {
        for &(at, jt, jf) in &self.branches {
            let offset = |target| match target {
                Target::Next => 0,
                Target::Label(Label(id)) => {
                    let to = self.labels[id].expect("every label is bound");
                    // A rule has at most six tests of six instructions.
                    u8::try_from(to - at - 1).expect("rule jumps stay short")
                }
            };
            self.code[at].jt = offset(jt);
            self.code[at].jf = offset(jf);
        }
        self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::default::runtime_default;
    use crate::seccomp::profile::Rule;

    /// A classic BPF interpreter for the instructions the compiler emits.
    fn run(program: &[Instruction], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                NR_OFFSET => nr,
                ARCH_OFFSET => arch,
                o if o >= ARGS_OFFSET => {
                    let arg = args[((o - ARGS_OFFSET) / 8) as usize];
                    if (o - ARGS_OFFSET).is_multiple_of(8) {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                o => panic!("load of offset {o}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            let branch = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                LD_ABS => a = word(i.k),
                AND_K => a &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += branch(a == i.k),
                JGT_K => pc += branch(a > i.k),
                JGE_K => pc += branch(a >= i.k),
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn policy(default: Action, rules: Vec<Rule>) -> Policy {
        Policy {
            default_action: default,
            rules,
            flags: 0,
        }
    }

    fn rule(names: &[&str], action: Action, conditions: Vec<Condition>) -> Rule {
        Rule {
            names: names.iter().map(|n| n.to_string()).collect(),
            action,
            conditions,
        }
    }

    fn nr(name: &str) -> u32 {
        Arch::X86_64.syscall_number(name).unwrap()
    }

    fn compiled(policy: &Policy) -> Vec<Instruction> {
        compile(policy, Arch::X86_64, "test").unwrap().0
    }

    const X86_64: u32 = 0xC000_003E;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn runtime_default_decides_like_docker() {
        let program = compiled(&runtime_default());
        let call = |name: &str, arg0: u64| run(&program, X86_64, nr(name), [arg0, 0, 0, 0, 0, 0]);
        for allowed in [
            "read",
            "write",
            "openat",
            "getpid",
            "execve",
            "exit_group",
            "mseal",
        ] {
            assert_eq!(call(allowed, 0), ALLOW, "{allowed}");
        }
        for denied in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "reboot",
            "bpf",
            "io_uring_setup",
        ] {
            assert_eq!(call(denied, 0), EPERM, "{denied}");
        }
        assert_eq!(call("clone3", 0), libc::SECCOMP_RET_ERRNO | 38);
        assert_eq!(call("clone", libc::SIGCHLD as u64), ALLOW);
        assert_eq!(
            call("clone", (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64),
            EPERM
        );
        assert_eq!(call("personality", 0xffff_ffff), ALLOW);
        assert_eq!(call("personality", 0x0040000), EPERM);
        assert_eq!(call("socket", libc::AF_INET as u64), ALLOW);
        assert_eq!(call("socket", 40), EPERM);
        // Beyond every known number, and the "no syscall" number -1.
        assert_eq!(run(&program, X86_64, 1000, [0; 6]), EPERM);
        assert_eq!(run(&program, X86_64, u32::MAX, [0; 6]), EPERM);
    }

    #[test]
    fn foreign_architecture_and_x32_are_killed() {
        let program = compiled(&policy(Action::Allow, vec![]));
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!(run(&program, 0x4000_0003, 1, [0; 6]), kill);
        assert_eq!(run(&program, X86_64, X32_SYSCALL_BIT | 1, [0; 6]), kill);
        assert_eq!(run(&program, X86_64, 1, [0; 6]), ALLOW);
    }

    #[test]
    fn runtime_default_merges_runs_into_a_short_program() {
        let program = compiled(&runtime_default());
        assert!(program.len() < 400, "{} instructions", program.len());
    }

    #[test]
    fn first_matching_rule_wins_across_actions() {
        let a0 = |cmp| vec![Condition { index: 0, cmp }];
        let program = compiled(&policy(
            Action::Allow,
            vec![
                rule(&["getpid"], Action::Errno(1), a0(Cmp::Eq(1))),
                rule(&["getpid"], Action::Errno(2), a0(Cmp::Lt(10))),
                rule(&["getpid"], Action::Errno(3), vec![]),
                rule(&["getpid"], Action::Errno(4), vec![]),
            ],
        ));
        let getpid = |arg0| run(&program, X86_64, nr("getpid"), [arg0, 0, 0, 0, 0, 0]) & 0xffff;
        assert_eq!(getpid(1), 1);
        assert_eq!(getpid(5), 2);
        assert_eq!(getpid(50), 3);
    }

    #[test]
    fn comparisons_use_all_64_bits() {
        let big = 0x0000_0001_0000_0005u64;
        let values = [
            0,
            4,
            5,
            6,
            big - 1,
            big,
            big + 1,
            0x0000_0002_0000_0000,
            0x0000_0000_ffff_ffff,
            u64::MAX,
        ];
        /// A comparison and the values it should match.
        type Case = (Cmp, fn(u64) -> bool);
        let cases: [Case; 7] = [
            (Cmp::Eq(big), |v| v == 0x1_0000_0005),
            (Cmp::Ne(big), |v| v != 0x1_0000_0005),
            (Cmp::Lt(big), |v| v < 0x1_0000_0005),
            (Cmp::Le(big), |v| v <= 0x1_0000_0005),
            (Cmp::Gt(big), |v| v > 0x1_0000_0005),
            (Cmp::Ge(big), |v| v >= 0x1_0000_0005),
            (
                Cmp::MaskedEq {
                    mask: 0xff00_0000_0000_000f,
                    value: 0x0000_0000_0000_0005,
                },
                |v| v & 0xff00_0000_0000_000f == 5,
            ),
        ];
        for (cmp, expected) in cases {
            let program = compiled(&policy(
                Action::Allow,
                vec![rule(
                    &["getpid"],
                    Action::Errno(7),
                    vec![Condition { index: 3, cmp }],
                )],
            ));
            for v in values {
                let result = run(&program, X86_64, nr("getpid"), [0, 0, 0, v, 0, 0]);
                let matched = result == libc::SECCOMP_RET_ERRNO | 7;
                assert_eq!(matched, expected(v), "{cmp:?} with {v:#x}");
            }
        }
    }

    #[test]
    fn conditions_of_one_rule_must_all_hold() {
        let program = compiled(&policy(
            Action::Allow,
            vec![rule(
                &["getpid"],
                Action::Errno(9),
                vec![
                    Condition {
                        index: 0,
                        cmp: Cmp::Eq(1),
                    },
                    Condition {
                        index: 5,
                        cmp: Cmp::Ge(100),
                    },
                ],
            )],
        ));
        let getpid = |a0, a5| run(&program, X86_64, nr("getpid"), [a0, 0, 0, 0, 0, a5]);
        assert_eq!(getpid(1, 100), libc::SECCOMP_RET_ERRNO | 9);
        assert_eq!(getpid(1, 99), ALLOW);
        assert_eq!(getpid(2, 100), ALLOW);
    }

    #[test]
    fn long_bodies_use_a_far_jump() {
        let rules = (0..60)
            .map(|i| {
                let cmp = Cmp::Eq(i);
                rule(
                    &["getpid"],
                    Action::Errno(i as u16 + 1),
                    vec![Condition { index: 0, cmp }],
                )
            })
            .collect();
        let program = compiled(&policy(
            Action::Allow,
            [rules, vec![rule(&["write"], Action::Errno(99), vec![])]].concat(),
        ));
        assert!(program.iter().any(|i| i.code == JA));
        let call = |name, a0| run(&program, X86_64, nr(name), [a0, 0, 0, 0, 0, 0]) & 0xffff;
        assert_eq!(call("getpid", 59), 60);
        assert_eq!(call("write", 0), 99);
        assert_eq!(run(&program, X86_64, nr("read"), [0; 6]), ALLOW);
    }

    #[test]
    fn unknown_names_are_skipped_and_reported() {
        let (_, unknown) = compile(
            &policy(
                Action::Allow,
                vec![rule(
                    &["getpid", "chown32", "no_such_call"],
                    Action::Log,
                    vec![],
                )],
            ),
            Arch::X86_64,
            "test",
        )
        .unwrap();
        assert_eq!(unknown, ["chown32", "no_such_call"]);
    }

    #[test]
    fn too_many_rules_is_an_error() {
        let rules = (0..1500)
            .map(|i| {
                let cmp = Cmp::Eq(i);
                rule(
                    &["getpid"],
                    Action::Errno(1),
                    vec![Condition { index: 0, cmp }],
                )
            })
            .collect();
        let err = compile(&policy(Action::Allow, rules), Arch::X86_64, "big.json").unwrap_err();
        assert!(err.to_string().contains("big.json"), "{err}");
    }
}
