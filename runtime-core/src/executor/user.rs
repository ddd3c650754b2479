//! Switching to the container's user and groups while keeping the capabilities it is granted.

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use super::User;
use super::error::{Context, Failure};

/// Sets supplementary groups, gid and uid. `PR_SET_KEEPCAPS` keeps the permitted set across
/// the switch away from root; [`caps::apply`](super::caps::apply) then sets the final sets.
pub(super) fn switch(user: &User) -> Result<(), Failure> {
    keep_caps(true)?;
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).context(|| format!("setgroups {:?}", user.additional_gids))?;
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).context(|| format!("setresgid {}", user.gid))?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).context(|| format!("setresuid {}", user.uid))?;
    keep_caps(false)
}

fn keep_caps(keep: bool) -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(keep), 0, 0, 0) };
    if rc != 0 {
        return Err(Failure::last_os(|| format!("set keepcaps {keep}")));
    }
    Ok(())
}
