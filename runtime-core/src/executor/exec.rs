//! Finding and exec'ing the container's command, as runc does: a name without `/` is looked
//! up in the container's `PATH`, inside the container.

use std::convert::Infallible;
use std::ffi::{CStr, CString};

use nix::errno::Errno;
use nix::sys::stat::{SFlag, stat};
use nix::unistd::{AccessFlags, access, execve};

use super::error::Failure;
use super::plan::Plan;

/// Replaces the process with the container's command; returns only on failure.
pub(super) fn exec(plan: &Plan) -> Result<Infallible, Failure> {
    let program = resolve(&plan.argv[0], &plan.search_path)?;
    let Err(errno) = execve(&program, &plan.argv, &plan.envp);
    Err(Failure::new(
        format_args!("exec `{}`", program.to_string_lossy()),
        errno,
    ))
}

/// The program to exec for `name`: itself if it contains a `/`, else the first executable
/// file called `name` in `search_path`.
fn resolve(name: &CStr, search_path: &str) -> Result<CString, Failure> {
    if name.to_bytes().contains(&b'/') {
        return Ok(name.to_owned());
    }
    let mut denied = None;
    for dir in search_path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let mut candidate = format!("{dir}/").into_bytes();
        candidate.extend_from_slice(name.to_bytes());
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Errno::EACCES) => denied = denied.or(Some(candidate)),
            Err(_) => {}
        }
    }
    let name = name.to_string_lossy();
    Err(match denied {
        Some(path) => Failure::new(
            format_args!("exec `{}`", path.to_string_lossy()),
            Errno::EACCES,
        ),
        None => Failure::plain(
            format!("exec `{name}`: executable file not found in $PATH"),
            Some(Errno::ENOENT),
        ),
    })
}

/// Ok if `path` is a regular file this process may execute; EACCES if it may not.
fn executable(path: &CStr) -> Result<(), Errno> {
    let st = stat(path)?;
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => {}
        SFlag::S_IFDIR => return Err(Errno::EISDIR),
        _ => return Err(Errno::EACCES),
    }
    access(path, AccessFlags::X_OK)
}
