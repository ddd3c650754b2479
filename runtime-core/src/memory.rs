//! Gives memory a process no longer uses back to the kernel: free heap pages (berthd after a
//! pull, berth-shim after each request) and, for berth-shim, the stack below its waiting loop.
//!
//! A shim spends its life waiting in `poll`. Handling a request (starting a container builds
//! its plan, mounts and spec on the stack and heap) leaves the stack pages those calls touched
//! and freed heap pages resident, and they would stay in every shim's RSS and PSS until it
//! exits. After each request and signal the shim discards the stack pages below its waiting
//! frame (anonymous pages below the stack pointer hold nothing live: the shim runs no signal
//! handlers, it takes signals through a signalfd) and asks malloc to return free heap pages.

use std::ffi::c_void;

/// Pages kept below the caller's frame: the red zone and room for the calls that follow.
const KEEP_BELOW: usize = 2;

/// Returns the unused stack below the caller's frame and free heap pages to the kernel.
#[inline(never)]
pub fn release_idle_memory() {
    release_stack_below_here();
    release_free_heap();
}

/// Returns the heap pages malloc holds free to the kernel.
pub fn release_free_heap() {
    // SAFETY: malloc_trim is thread-safe and only releases pages malloc holds free; no pointer
    // is invalidated.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[inline(never)]
fn release_stack_below_here() {
    let Some(stack) = stack_mapping() else { return };
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let Some((low, len)) = unused_below(here, stack, page_size()) else {
        return;
    };
    // SAFETY: [low, low + len) lies in the main thread's stack mapping, the one this frame is
    // on, at least KEEP_BELOW pages below the current frame: no live data is there (no signal
    // handler runs on this stack). MADV_DONTNEED only drops the pages; the next touch maps
    // zeroed ones.
    unsafe {
        libc::madvise(low as *mut c_void, len, libc::MADV_DONTNEED);
    }
}

/// The part of `stack` (the `[low, high)` of its mapping) that lies `KEEP_BELOW` pages or more
/// below `here`, as (start, length); none when `here` is on another stack (a thread's).
fn unused_below(here: usize, (low, high): (usize, usize), page: usize) -> Option<(usize, usize)> {
    if here < low || here >= high {
        return None;
    }
    let end = (here & !(page - 1)).checked_sub(KEEP_BELOW * page)?;
    (end > low).then(|| (low, end - low))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

/// The main thread's stack mapping, `[low, high)` (its low end moves down as it grows).
fn stack_mapping() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    stack_mapping_in(&maps)
}

fn stack_mapping_in(maps: &str) -> Option<(usize, usize)> {
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split_whitespace().next()?;
    let (low, high) = range.split_once('-')?;
    Some((
        usize::from_str_radix(low, 16).ok()?,
        usize::from_str_radix(high, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stack_mapping() {
        let maps = "55d0c0000000-55d0c0021000 r--p 00000000 00:1f 4242 /usr/bin/x\n\
                    7ffd4b8e1000-7ffd4b902000 rw-p 00000000 00:00 0                          [stack]\n\
                    7ffd4b9f0000-7ffd4b9f4000 r--p 00000000 00:00 0                          [vvar]\n";
        assert_eq!(
            stack_mapping_in(maps),
            Some((0x7ffd_4b8e_1000, 0x7ffd_4b90_2000))
        );
        assert_eq!(
            stack_mapping_in("55d0c0000000-55d0c0021000 r--p 0 00:1f 1 /x\n"),
            None
        );
    }

    #[test]
    fn releases_only_pages_well_below_the_frame_on_the_same_stack() {
        let stack = (0x10_0000, 0x20_0000);
        // From the mapping's low end to two pages below the page of `here`.
        assert_eq!(
            unused_below(0x1f_0123, stack, 0x1000),
            Some((0x10_0000, 0x1e_e000 - 0x10_0000))
        );
        // Too close to the low end: nothing.
        assert_eq!(unused_below(0x10_2fff, stack, 0x1000), None);
        // On another stack (a thread's, below or above the main one): nothing.
        assert_eq!(unused_below(0x0f_0000, stack, 0x1000), None);
        assert_eq!(unused_below(0x20_0000, stack, 0x1000), None);
    }

    #[test]
    fn release_from_a_thread_leaves_its_stack_alone() {
        let keep = std::hint::black_box([7u8; 256]);
        release_idle_memory();
        assert_eq!(keep, [7u8; 256]);
    }
}
