//! Seccomp policies: the typed model the compiler reads, and the OCI runtime-spec
//! `linux.seccomp` JSON format that Localhost profiles use.

use serde::Deserialize;

use super::SeccompError;
use super::arch::Arch;

/// A validated seccomp policy: rules are tried in order, the first whose syscall and
/// conditions match decides; syscalls no rule matches get `default_action`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub default_action: Action,
    pub rules: Vec<Rule>,
    /// Extra `SECCOMP_FILTER_FLAG_*` bits for the `seccomp(2)` call.
    pub flags: libc::c_ulong,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    /// All must hold (at most one per argument index).
    pub conditions: Vec<Condition>,
}

/// What the kernel does with a matching syscall (`SECCOMP_RET_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Allow,
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    /// Notifies a ptrace tracer with this data; without a tracer the syscall fails with ENOSYS.
    Trace(u16),
    Log,
}

impl Action {
    /// The filter's return value.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Trace(data) => libc::SECCOMP_RET_TRACE | u32::from(data),
            Action::Log => libc::SECCOMP_RET_LOG,
        }
    }
}

/// A test on one 64-bit syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    pub index: u8,
    pub cmp: Cmp,
}

/// Unsigned 64-bit comparisons of the argument with a value, as libseccomp's `SCMP_CMP_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

/// Syscalls take at most six arguments.
const MAX_ARGS: u32 = 6;
/// The kernel clamps `SECCOMP_RET_ERRNO` data to `MAX_ERRNO`.
const MAX_ERRNO: u32 = 4095;

/// `linux.seccomp` of the OCI runtime spec. Docker-format extras: `archMap` is read for the
/// architecture check; `includes`/`excludes` are refused (see [`parse_rules`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciSeccomp {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<OciArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    syscalls: Option<Vec<OciSyscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciSyscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Pre-1.0 runtime-spec profiles name one syscall per rule.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<OciArg>>,
    #[serde(default)]
    includes: Option<serde_json::Value>,
    #[serde(default)]
    excludes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Parses and validates an OCI seccomp profile for `host`. `origin` names the profile in
/// errors (its path, or a description).
pub(crate) fn parse_oci(json: &[u8], origin: &str, host: Arch) -> Result<Policy, SeccompError> {
    let spec: OciSeccomp = serde_json::from_slice(json).map_err(|source| SeccompError::Json {
        origin: origin.to_owned(),
        source,
    })?;
    check_architectures(&spec, origin, host)?;
    let default_action = parse_action(
        &spec.default_action,
        spec.default_errno_ret,
        origin,
        "defaultAction",
    )?;
    let mut rules = Vec::new();
    for (i, syscall) in spec.syscalls.iter().flatten().enumerate() {
        rules.extend(parse_rules(i, syscall, origin)?);
    }
    Ok(Policy {
        default_action,
        rules,
        flags: parse_flags(spec.flags.as_deref().unwrap_or_default(), origin)?,
    })
}

/// An empty list means the host architecture only; otherwise the host must be listed
/// (directly or as an `archMap` entry). Other listed architectures (i386, x32, arm) are not
/// compiled: their syscalls kill the process.
fn check_architectures(spec: &OciSeccomp, origin: &str, host: Arch) -> Result<(), SeccompError> {
    let mut listed: Vec<String> = spec.architectures.iter().flatten().cloned().collect();
    for entry in spec.arch_map.iter().flatten() {
        listed.push(entry.architecture.clone());
        listed.extend(entry.sub_architectures.iter().flatten().cloned());
    }
    if listed.is_empty() || listed.iter().any(|a| a == host.scmp_name()) {
        return Ok(());
    }
    Err(SeccompError::ArchitectureExcluded {
        origin: origin.to_owned(),
        host: host.scmp_name(),
        listed,
    })
}

fn parse_flags(flags: &[String], origin: &str) -> Result<libc::c_ulong, SeccompError> {
    let mut bits = 0;
    for flag in flags {
        bits |= match flag.as_str() {
            // `install` always asks for TSYNC.
            "SECCOMP_FILTER_FLAG_TSYNC" => 0,
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            other => {
                return Err(SeccompError::Invalid {
                    origin: origin.to_owned(),
                    field: "flags".to_owned(),
                    reason: format!("unsupported flag `{other}`"),
                });
            }
        };
    }
    Ok(bits)
}

fn parse_action(
    name: &str,
    errno_ret: Option<u32>,
    origin: &str,
    field: &str,
) -> Result<Action, SeccompError> {
    let invalid = |reason: String| SeccompError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        reason,
    };
    let data = || match errno_ret {
        None => Ok(libc::EPERM as u16),
        Some(errno) if errno <= MAX_ERRNO => Ok(errno as u16),
        Some(errno) => Err(invalid(format!(
            "errno {errno} is out of range (0-{MAX_ERRNO})"
        ))),
    };
    let action = match name {
        "SCMP_ACT_ERRNO" => return data().map(Action::Errno),
        "SCMP_ACT_TRACE" => return data().map(Action::Trace),
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                "SCMP_ACT_NOTIFY (seccomp user notification) is not supported".to_owned(),
            ));
        }
        _ => {
            return Err(SeccompError::UnknownAction {
                origin: origin.to_owned(),
                field: field.to_owned(),
                action: name.to_owned(),
            });
        }
    };
    match errno_ret {
        None => Ok(action),
        Some(_) => Err(invalid(format!(
            "errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}"
        ))),
    }
}

/// One OCI `syscalls` entry as policy rules. Like runc, an entry with several conditions on
/// the same argument becomes one rule per condition (any of them matches).
///
/// Docker-format `includes`/`excludes` (rules that depend on capabilities, kernel version or
/// architecture) are not part of the OCI format; ignoring them would apply every conditional
/// rule unconditionally, so they are refused.
fn parse_rules(i: usize, entry: &OciSyscall, origin: &str) -> Result<Vec<Rule>, SeccompError> {
    let mut names: Vec<String> = entry.names.iter().flatten().cloned().collect();
    names.extend(entry.name.iter().cloned());
    let field = format!("syscalls[{i}] ({})", names.join(", "));
    let invalid = |what: &str, reason: String| SeccompError::Invalid {
        origin: origin.to_owned(),
        field: format!("{field}: {what}"),
        reason,
    };
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(invalid("names", "a rule needs syscall names".to_owned()));
    }
    for (key, value) in [("includes", &entry.includes), ("excludes", &entry.excludes)] {
        if value.as_ref().is_some_and(is_meaningful) {
            return Err(invalid(
                key,
                "Docker-format conditional rules are not supported; write the rules that apply"
                    .to_owned(),
            ));
        }
    }
    let action = parse_action(
        &entry.action,
        entry.errno_ret,
        origin,
        &format!("{field}: action"),
    )?;
    let mut conditions = Vec::new();
    for (j, arg) in entry.args.iter().flatten().enumerate() {
        conditions.push(parse_condition(
            arg,
            origin,
            &format!("{field}: args[{j}]"),
        )?);
    }
    let repeats_an_index = conditions
        .iter()
        .enumerate()
        .any(|(j, c)| conditions[..j].iter().any(|d| d.index == c.index));
    let rule = |conditions| Rule {
        names: names.clone(),
        action,
        conditions,
    };
    if repeats_an_index {
        Ok(conditions.into_iter().map(|c| rule(vec![c])).collect())
    } else {
        Ok(vec![rule(conditions)])
    }
}

/// Whether an `includes`/`excludes` value constrains anything (`{}` and `null` do not).
fn is_meaningful(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Object(map) => map.values().any(is_meaningful),
        serde_json::Value::Array(items) => !items.is_empty(),
        serde_json::Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn parse_condition(arg: &OciArg, origin: &str, field: &str) -> Result<Condition, SeccompError> {
    if arg.index >= MAX_ARGS {
        return Err(SeccompError::Invalid {
            origin: origin.to_owned(),
            field: format!("{field}.index"),
            reason: format!("{} is not an argument index (0-5)", arg.index),
        });
    }
    let cmp = match arg.op.as_str() {
        "SCMP_CMP_EQ" => Cmp::Eq(arg.value),
        "SCMP_CMP_NE" => Cmp::Ne(arg.value),
        "SCMP_CMP_LT" => Cmp::Lt(arg.value),
        "SCMP_CMP_LE" => Cmp::Le(arg.value),
        "SCMP_CMP_GT" => Cmp::Gt(arg.value),
        "SCMP_CMP_GE" => Cmp::Ge(arg.value),
        "SCMP_CMP_MASKED_EQ" => Cmp::MaskedEq {
            mask: arg.value,
            value: arg.value_two,
        },
        other => {
            return Err(SeccompError::UnknownOperator {
                origin: origin.to_owned(),
                field: format!("{field}.op"),
                op: other.to_owned(),
            });
        }
    };
    Ok(Condition {
        index: arg.index as u8,
        cmp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Policy, SeccompError> {
        parse_oci(json.as_bytes(), "test.json", Arch::X86_64)
    }

    fn error(json: &str) -> String {
        parse(json).unwrap_err().to_string()
    }

    #[test]
    fn parses_actions_errno_and_conditions() {
        let policy = parse(
            r#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                    {"names": ["kill"], "action": "SCMP_ACT_ERRNO"},
                    {"name": "ptrace", "action": "SCMP_ACT_TRACE"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}
                ]
            }"#,
        )
        .unwrap();
        assert_eq!(policy.default_action, Action::Errno(38));
        assert_eq!(policy.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        assert_eq!(policy.rules.len(), 6);
        assert_eq!(policy.rules[0].names, ["read", "write"]);
        assert_eq!(policy.rules[1].action, Action::Errno(13));
        assert_eq!(policy.rules[2].action, Action::Errno(libc::EPERM as u16));
        assert_eq!(policy.rules[3].names, ["ptrace"]);
        assert_eq!(policy.rules[3].action, Action::Trace(libc::EPERM as u16));
        assert_eq!(
            policy.rules[4].conditions,
            [Condition {
                index: 0,
                cmp: Cmp::Eq(8)
            }]
        );
        assert_eq!(
            policy.rules[5].conditions[0].cmp,
            Cmp::MaskedEq {
                mask: 0x7E02_0000,
                value: 0
            }
        );
    }

    #[test]
    fn every_action_and_operator_is_known() {
        for (name, action) in [
            ("SCMP_ACT_ALLOW", Action::Allow),
            ("SCMP_ACT_LOG", Action::Log),
            ("SCMP_ACT_TRAP", Action::Trap),
            ("SCMP_ACT_KILL", Action::KillThread),
            ("SCMP_ACT_KILL_THREAD", Action::KillThread),
            ("SCMP_ACT_KILL_PROCESS", Action::KillProcess),
        ] {
            let policy = parse(&format!(r#"{{"defaultAction": "{name}"}}"#)).unwrap();
            assert_eq!(policy.default_action, action, "{name}");
        }
        for (op, cmp) in [
            ("SCMP_CMP_EQ", Cmp::Eq(7)),
            ("SCMP_CMP_NE", Cmp::Ne(7)),
            ("SCMP_CMP_LT", Cmp::Lt(7)),
            ("SCMP_CMP_LE", Cmp::Le(7)),
            ("SCMP_CMP_GT", Cmp::Gt(7)),
            ("SCMP_CMP_GE", Cmp::Ge(7)),
            ("SCMP_CMP_MASKED_EQ", Cmp::MaskedEq { mask: 7, value: 3 }),
        ] {
            let policy = parse(&format!(
                r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{{"names": ["getpid"],
                    "action": "SCMP_ACT_LOG",
                    "args": [{{"index": 5, "value": 7, "valueTwo": 3, "op": "{op}"}}]}}]}}"#
            ))
            .unwrap();
            assert_eq!(policy.rules[0].conditions[0].cmp, cmp, "{op}");
            assert_eq!(policy.rules[0].conditions[0].index, 5);
        }
    }

    #[test]
    fn repeated_argument_index_splits_into_alternative_rules() {
        let policy = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"],
                "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 17, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(policy.rules[1].conditions[0].cmp, Cmp::Eq(17));
    }

    #[test]
    fn nulls_and_empty_docker_conditions_are_accepted() {
        let policy = parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": null,
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": null,
                              "includes": {}, "excludes": {"caps": []}, "comment": "x"}]}"#,
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 1);
    }

    #[test]
    fn invalid_json_names_the_profile() {
        let message = error(r#"{"defaultAction": "SCMP_ACT_ALLOW""#);
        assert!(
            message.starts_with("seccomp profile test.json:"),
            "{message}"
        );
        assert!(message.contains("EOF"), "{message}");
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn unknown_action_names_the_rule() {
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir", "rmdir"], "action": "SCMP_ACT_DENY"}]}"#,
        );
        assert_eq!(
            message,
            "seccomp profile test.json: syscalls[1] (mkdir, rmdir): action: unknown action `SCMP_ACT_DENY`"
        );
        let message = error(r#"{"defaultAction": "ALLOW"}"#);
        assert_eq!(
            message,
            "seccomp profile test.json: defaultAction: unknown action `ALLOW`"
        );
    }

    #[test]
    fn unknown_operator_and_bad_index_name_the_argument() {
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_BETWEEN"}]}]}"#,
        );
        assert_eq!(
            message,
            "seccomp profile test.json: syscalls[0] (personality): args[0].op: unknown operator `SCMP_CMP_BETWEEN`"
        );
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(
            message.contains("args[0].index: 6 is not an argument index"),
            "{message}"
        );
    }

    #[test]
    fn architecture_list_must_include_the_host() {
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}"#,
        );
        assert_eq!(
            message,
            "seccomp profile test.json: architectures [\"SCMP_ARCH_AARCH64\", \"SCMP_ARCH_ARM\"] do not include this host's SCMP_ARCH_X86_64"
        );
        let aarch64 = parse_oci(
            br#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
            "test.json",
            Arch::Aarch64,
        );
        assert!(aarch64.is_ok());
    }

    #[test]
    fn misplaced_or_out_of_range_errno_is_refused() {
        let message = error(r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}"#);
        assert!(
            message.contains("defaultAction: errnoRet is only valid"),
            "{message}"
        );
        let message = error(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}"#);
        assert!(message.contains("errno 5000 is out of range"), "{message}");
    }

    #[test]
    fn docker_conditional_rules_notify_and_unknown_flags_are_refused() {
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mount"],
                "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
        );
        assert!(
            message.contains("syscalls[0] (mount): includes: Docker-format"),
            "{message}"
        );
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(message.contains("SCMP_ACT_NOTIFY"), "{message}");
        let message =
            error(r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}"#);
        assert!(
            message.contains("flags: unsupported flag `SECCOMP_FILTER_FLAG_X`"),
            "{message}"
        );
        let message = error(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}]}"#,
        );
        assert!(message.contains("syscalls[0] (): names"), "{message}");
    }
}
