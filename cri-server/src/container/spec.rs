//! How a container's process is derived from its CRI config and its image, the way kubelet
//! expects: `command` replaces the image entrypoint, `args` replace the image cmd, env merges
//! over the image env, and the user comes from the security context or the image, with names
//! resolved in the container's own `/etc/passwd` and `/etc/group`.

use std::path::PathBuf;

use crate::error::Error;
use images::manifest::ImageConfig;
use proto::cri::{ContainerConfig, LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use crate::store::containers::ProcessSpec;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Merges `config` over `image`; `lower_dirs` are the image's snapshot dirs, top layer first,
/// searched for `/etc/passwd` and `/etc/group`.
pub fn process_spec(
    config: &ContainerConfig,
    image: &ImageConfig,
    lower_dirs: &[PathBuf],
) -> Result<ProcessSpec, Error> {
    let img = image.config.clone().unwrap_or_default();
    let entrypoint = img.entrypoint.unwrap_or_default();
    let cmd = img.cmd.unwrap_or_default();
    let args = match (config.command.is_empty(), config.args.is_empty()) {
        (false, false) => [config.command.clone(), config.args.clone()].concat(),
        (false, true) => config.command.clone(),
        (true, false) => [entrypoint, config.args.clone()].concat(),
        (true, true) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        return Err(Error::invalid(
            "config.command: no command given and the image defines no entrypoint or cmd",
        ));
    }
    let mut env = merge_env(img.env.as_deref().unwrap_or_default(), config)?;
    let cwd = match (config.working_dir.as_str(), img.working_dir.as_deref()) {
        ("", Some(w)) if !w.is_empty() => w.to_string(),
        ("", _) => "/".to_string(),
        (w, _) => w.to_string(),
    };
    if !cwd.starts_with('/') {
        return Err(Error::invalid(format!(
            "config.working_dir `{cwd}` must be absolute"
        )));
    }
    let (uid, gid, additional_gids) =
        resolve_user(config, img.user.as_deref().unwrap_or(""), lower_dirs)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let passwd = read_etc(lower_dirs, "etc/passwd");
        env.push(format!("HOME={}", home_of(&passwd, uid)));
    }
    Ok(ProcessSpec {
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
    })
}

/// The CRI carries env values as bytes; Kubernetes only admits UTF-8 (and a process
/// environment here is text end to end), so other bytes are refused naming the variable.
fn merge_env(image_env: &[String], config: &ContainerConfig) -> Result<Vec<String>, Error> {
    let mut env: Vec<String> = image_env.to_vec();
    for (i, kv) in config.envs.iter().enumerate() {
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            Error::invalid(format!(
                "config.envs[{i}] ({}): value is not valid UTF-8",
                kv.key
            ))
        })?;
        let entry = format!("{}={value}", kv.key);
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(kv.key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    Ok(env)
}

/// (uid, gid, supplementary gids — the primary group first) from `run_as_user`/`run_as_username`/`run_as_group`, else the
/// image's `User` (`uid`, `name`, `uid:gid`, `name:group`).
fn resolve_user(
    config: &ContainerConfig,
    image_user: &str,
    lower_dirs: &[PathBuf],
) -> Result<(u32, u32, Vec<u32>), Error> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let passwd = read_etc(lower_dirs, "etc/passwd");
    let group = read_etc(lower_dirs, "etc/group");
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let (uid, name, passwd_gid) = if let Some(u) = &sc.run_as_user {
        let uid = u32::try_from(u.value)
            .map_err(|_| Error::invalid(format!("run_as_user {} is out of range", u.value)))?;
        let entry = passwd_by_uid(&passwd, uid);
        (uid, entry.as_ref().map(|e| e.0.clone()), entry.map(|e| e.2))
    } else if !sc.run_as_username.is_empty() {
        let (uid, gid) = passwd_by_name(&passwd, &sc.run_as_username).ok_or_else(|| {
            Error::invalid(format!(
                "run_as_username `{}` is not in the image's /etc/passwd",
                sc.run_as_username
            ))
        })?;
        (uid, Some(sc.run_as_username.clone()), Some(gid))
    } else {
        user_from_image(user_part, &passwd)?
    };
    let gid = match (&sc.run_as_group, group_part) {
        (Some(g), _) => u32::try_from(g.value)
            .map_err(|_| Error::invalid(format!("run_as_group {} is out of range", g.value)))?,
        (None, Some(g)) if sc.run_as_user.is_none() && sc.run_as_username.is_empty() => {
            group_id(&group, g)?
        }
        _ => passwd_gid.unwrap_or(0),
    };
    // Like containerd: the primary group first, then (policy Merge) the user's groups from
    // /etc/group; Strict keeps only the groups the request names.
    let mut extra: Vec<u32> = vec![gid];
    if !strict_groups(&sc)? {
        extra.extend(name.map(|n| groups_of(&group, &n, gid)).unwrap_or_default());
    }
    for g in &sc.supplemental_groups {
        let g = u32::try_from(*g)
            .map_err(|_| Error::invalid(format!("supplemental group {g} is out of range")))?;
        if !extra.contains(&g) {
            extra.push(g);
        }
    }
    Ok((uid, gid, extra))
}

/// Whether `supplemental_groups_policy` is Strict (Merge, the default, adds the image's groups).
fn strict_groups(sc: &LinuxContainerSecurityContext) -> Result<bool, Error> {
    match SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
        Ok(SupplementalGroupsPolicy::Merge) => Ok(false),
        Ok(SupplementalGroupsPolicy::Strict) => Ok(true),
        Err(_) => Err(Error::invalid(format!(
            "config.linux.security_context.supplemental_groups_policy: unknown policy {}",
            sc.supplemental_groups_policy
        ))),
    }
}

type UserEntry = (u32, Option<String>, Option<u32>);

fn user_from_image(user: &str, passwd: &str) -> Result<UserEntry, Error> {
    if user.is_empty() {
        return Ok((0, Some("root".into()), Some(0)));
    }
    if let Ok(uid) = user.parse::<u32>() {
        let entry = passwd_by_uid(passwd, uid);
        return Ok((uid, entry.as_ref().map(|e| e.0.clone()), entry.map(|e| e.2)));
    }
    let (uid, gid) = passwd_by_name(passwd, user).ok_or_else(|| {
        Error::invalid(format!(
            "image user `{user}` is not in the image's /etc/passwd"
        ))
    })?;
    Ok((uid, Some(user.to_string()), Some(gid)))
}

fn group_id(group: &str, g: &str) -> Result<u32, Error> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == g)
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .next()
        .ok_or_else(|| {
            Error::invalid(format!(
                "image group `{g}` is not in the image's /etc/group"
            ))
        })
}

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ETC_FILE: u64 = 4 << 20;

/// `rel` as the image's layers (top layer first) hold it, resolved inside the image (symlinks,
/// whiteouts); empty if the image has none or it is unreadable.
fn read_etc(lower_dirs: &[PathBuf], rel: &str) -> String {
    match images::layered::read_file(lower_dirs, rel, MAX_ETC_FILE) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(file = rel, error = %e, "cannot read the image's file");
            String::new()
        }
    }
}

fn passwd_fields(passwd: &str) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// The user's home directory in the image's `/etc/passwd`, `/` without one: the `HOME` runc
/// (and so containerd) gives a container whose environment has none.
fn home_of(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map(|f| f[5].to_string())
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

fn passwd_by_uid(passwd: &str, uid: u32) -> Option<(String, u32, u32)> {
    passwd_fields(passwd).find(|e| e.1 == uid)
}

fn passwd_by_name(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd_fields(passwd)
        .find(|e| e.0 == name)
        .map(|e| (e.1, e.2))
}

/// Groups listing `user` as a member (besides the primary group).
fn groups_of(group: &str, user: &str, primary: u32) -> Vec<u32> {
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || !f[3].split(',').any(|m| m == user) {
                return None;
            }
            f[2].parse::<u32>().ok().filter(|g| *g != primary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use images::manifest::ContainerConfig as ImageDefaults;
    use proto::cri::{Int64Value, KeyValue, LinuxContainerConfig};

    fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageConfig {
        ImageConfig {
            config: Some(ImageDefaults {
                user: Some(user.into()),
                env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
                entrypoint: Some(entrypoint.iter().map(|s| s.to_string()).collect()),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                working_dir: Some("/work".into()),
                stop_signal: None,
            }),
            ..Default::default()
        }
    }

    fn etc() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nberth:x:1000:1000::/home/berth:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nberth:x:1000:\nextra:x:2000:berth\n",
        )
        .expect("group");
        let lower = vec![dir.path().to_path_buf()];
        (dir, lower)
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_like_kubelet() {
        let img = image(&["/entry"], &["default"], "");
        let mut c = ContainerConfig::default();
        assert_eq!(
            process_spec(&c, &img, &[]).expect("spec").args,
            vec!["/entry", "default"]
        );
        c.args = vec!["x".into()];
        assert_eq!(
            process_spec(&c, &img, &[]).expect("spec").args,
            vec!["/entry", "x"]
        );
        c.command = vec!["/bin/sh".into()];
        assert_eq!(
            process_spec(&c, &img, &[]).expect("spec").args,
            vec!["/bin/sh", "x"]
        );
        c.args.clear();
        assert_eq!(
            process_spec(&c, &img, &[]).expect("spec").args,
            vec!["/bin/sh"]
        );
        let empty = image(&[], &[], "");
        assert!(process_spec(&ContainerConfig::default(), &empty, &[]).is_err());
    }

    #[test]
    fn env_merges_over_the_image_and_workdir_defaults() {
        let img = image(&["/e"], &[], "");
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "A".into(),
                    value: "cri".into(),
                },
                KeyValue {
                    key: "B".into(),
                    value: "2".into(),
                },
            ],
            ..Default::default()
        };
        let s = process_spec(&c, &img, &[]).expect("spec");
        // No /etc/passwd in the image: HOME is `/`, as runc sets it.
        assert_eq!(s.env, vec!["PATH=/bin", "A=cri", "B=2", "HOME=/"]);
        assert_eq!(s.cwd, "/work");
    }

    #[test]
    fn users_resolve_from_the_image_files() {
        let (_d, lower) = etc();
        let s = process_spec(
            &ContainerConfig::default(),
            &image(&["/e"], &[], "berth"),
            &lower,
        )
        .expect("name");
        assert_eq!(
            (s.uid, s.gid, s.additional_gids.clone()),
            (1000, 1000, vec![1000, 2000])
        );
        let s = process_spec(
            &ContainerConfig::default(),
            &image(&["/e"], &[], "1000:2000"),
            &lower,
        )
        .expect("ids");
        assert_eq!((s.uid, s.gid), (1000, 2000));
        let err = process_spec(
            &ContainerConfig::default(),
            &image(&["/e"], &[], "nobody-here"),
            &lower,
        )
        .expect_err("unknown");
        assert!(err.message().contains("nobody-here"));
        let c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: Some(Int64Value { value: 1000 }),
                    run_as_group: Some(Int64Value { value: 3000 }),
                    supplemental_groups: vec![4000],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = process_spec(&c, &image(&["/e"], &[], ""), &lower).expect("run_as_user");
        assert_eq!(
            (s.uid, s.gid, s.additional_gids),
            (1000, 3000, vec![3000, 2000, 4000])
        );
    }

    #[test]
    fn strict_supplemental_groups_policy_drops_the_image_groups() {
        let (_d, lower) = etc();
        let mut c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: Some(Int64Value { value: 1000 }),
                    supplemental_groups: vec![4000],
                    supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = process_spec(&c, &image(&["/e"], &[], ""), &lower).expect("strict");
        assert_eq!((s.gid, s.additional_gids), (1000, vec![1000, 4000]));
        let sc = c
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .expect("security context");
        sc.supplemental_groups_policy = 7;
        let err = process_spec(&c, &image(&["/e"], &[], ""), &lower).expect_err("unknown");
        assert!(
            err.message().contains("supplemental_groups_policy"),
            "{err}"
        );
    }

    #[test]
    fn home_comes_from_the_image_passwd_unless_the_env_sets_it() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\nnohome:x:7:7:::\n";
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 33), "/var/www");
        assert_eq!(home_of(passwd, 7), "/");
        assert_eq!(home_of(passwd, 1234), "/");
    }

    #[test]
    fn env_values_must_be_utf8_and_the_error_names_the_variable() {
        let mut c = ContainerConfig {
            command: vec!["sh".into()],
            ..Default::default()
        };
        c.envs = vec![
            KeyValue {
                key: "OK".into(),
                value: "fine".into(),
            },
            KeyValue {
                key: "BAD".into(),
                value: vec![0xff, 0xfe],
            },
        ];
        let err = process_spec(&c, &image(&[], &[], ""), &[]).expect_err("not UTF-8");
        assert_eq!(err.kind(), crate::error::Kind::Invalid);
        assert!(
            err.message().contains("config.envs[1] (BAD)"),
            "{}",
            err.message()
        );
    }
}
