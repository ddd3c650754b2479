//! Gives memory a process no longer uses back to the kernel: free heap pages (berthd after a
//! pull, berth-shim when idle) and, for berth-shim, the stack below its waiting loop and, when
//! it stays idle longer, the pages of its program it maps.
//!
//! A shim spends its life waiting in `poll`. Handling a request (starting a container builds
//! its plan, mounts and spec on the stack and heap) leaves the stack pages those calls touched
//! and freed heap pages resident, and they would stay in every shim's RSS and PSS until it
//! exits. When idle the shim discards the stack pages below its waiting frame (anonymous pages
//! below the stack pointer hold nothing live: the shim runs no signal handlers, it takes
//! signals through a signalfd) and asks malloc to return free heap pages.
//!
//! It also unmaps the pages of its program's code and read-only data: after a container start
//! the kernel's fault-around has mapped 1.2 MiB of the shim's text into it in 64 KiB windows,
//! counted in every shim's RSS though it is one copy in the page cache. Only read-only private
//! file mappings without a private (copy-on-write) page are dropped, so nothing but page-cache
//! pages goes, and the next instruction fetch or read maps them again; relocated read-only
//! data (`.data.rel.ro`, written before it was made read-only) has private pages and stays.

use std::ffi::c_void;

/// Pages kept below the caller's frame: the red zone and room for the calls that follow.
const KEEP_BELOW: usize = 2;

/// Returns the unused stack below the caller's frame and free heap pages to the kernel.
#[inline(never)]
pub fn release_idle_memory() {
    release_stack_below_here();
    release_free_heap();
}

/// Returns the mapped pages of read-only file mappings (the program's code and constants) to
/// the kernel. Costlier than [`release_idle_memory`] (it reads `/proc/self/smaps`, and the
/// code that runs next maps its pages again), so for a process that stays idle longer.
#[inline(never)]
pub fn release_mapped_code() {
    // Found first, so that the heap the search used is trimmed; dropped last, so that little
    // code runs (and maps its pages again) after.
    let files = clean_file_ranges();
    release_free_heap();
    drop_file_pages(&files);
}

/// Up to 16 read-only private file mappings with no private page (see the module doc), as
/// (start, length); unused slots are empty.
fn clean_file_ranges() -> [(usize, usize); 16] {
    let mut ranges = [(0usize, 0usize); 16];
    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
        for (slot, range) in ranges.iter_mut().zip(clean_file_mappings(&smaps)) {
            *slot = range;
        }
    }
    ranges
}

/// Drops the page-cache pages `ranges` map; they are mapped again when next used.
fn drop_file_pages(ranges: &[(usize, usize)]) {
    for &(start, len) in ranges.iter().filter(|r| r.1 > 0) {
        // SAFETY: the range is a read-only private file mapping holding no private page, so
        // every mapped page is a page-cache page equal to the file; MADV_DONTNEED unmaps them
        // and the next access (by any thread) maps the same contents again. No code of ours
        // makes such a mapping writable or remaps it meanwhile.
        unsafe {
            libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// The read-only, private, file-backed mappings of `smaps` with no anonymous (copy-on-write)
/// page, as (start, length).
fn clean_file_mappings(smaps: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut candidate: Option<(usize, usize)> = None;
    smaps.lines().filter_map(move |line| {
        if let Some(head) = mapping_head(line) {
            candidate = head;
            return None;
        }
        let anonymous = kib(line.strip_prefix("Anonymous:")?);
        let range = candidate.take()?;
        (anonymous == Some(0)).then_some(range)
    })
}

/// The value of an smaps field such as `      52 kB`, in KiB.
fn kib(value: &str) -> Option<u64> {
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// A maps/smaps address range, `low-high` in hex.
fn address_range(range: &str) -> Option<(usize, usize)> {
    let (low, high) = range.split_once('-')?;
    Some((
        usize::from_str_radix(low, 16).ok()?,
        usize::from_str_radix(high, 16).ok()?,
    ))
}

/// For a mapping's first line in smaps: `Some(Some((start, len)))` if it is read-only,
/// private and backed by a file, `Some(None)` for any other mapping, `None` for other lines.
fn mapping_head(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_whitespace();
    let (range, perms) = (fields.next()?, fields.next()?);
    let (low, high) = address_range(range)?;
    let path = fields.nth(3).unwrap_or("");
    let clean = perms.len() == 4
        && perms.starts_with('r')
        && !perms.contains('w')
        && perms.ends_with('p')
        && path.starts_with('/');
    Some((clean && high > low).then(|| (low, high - low)))
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
    address_range(line.split_whitespace().next()?)
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
    fn drops_only_read_only_private_file_mappings_without_private_pages() {
        let smaps = "\
55d0c0000000-55d0c0040000 r--p 00000000 00:1f 4242 /memfd:berth-shim (deleted)
Size:                256 kB
Anonymous:             0 kB
55d0c0040000-55d0c0180000 r-xp 00040000 00:1f 4242 /memfd:berth-shim (deleted)
Rss:                1208 kB
Anonymous:             0 kB
55d0c0180000-55d0c018d000 r--p 00180000 00:1f 4242 /memfd:berth-shim (deleted)
Anonymous:            52 kB
55d0c018d000-55d0c0190000 rw-p 0018d000 00:1f 4242 /memfd:berth-shim (deleted)
Anonymous:             0 kB
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
Anonymous:            40 kB
7f0000000000-7f0000001000 r--s 00000000 00:05 17 /dev/shared
Anonymous:             0 kB
7ffd4b9f0000-7ffd4b9f4000 r--p 00000000 00:00 0                          [vvar]
Anonymous:             0 kB
7ffd4b9f4000-7ffd4b9f6000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps).collect::<Vec<_>>(),
            [(0x55d0_c000_0000, 0x40000), (0x55d0_c004_0000, 0x140000)]
        );
    }

    /// KiB resident in this process's read-only private file mappings without private pages.
    fn clean_resident_kb() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let clean: Vec<usize> = clean_file_mappings(&smaps).map(|m| m.0).collect();
        let mut counting = false;
        let mut total = 0;
        for line in smaps.lines() {
            if let Some(head) = mapping_head(line) {
                counting = head.is_some_and(|(start, _)| clean.contains(&start));
            } else if let (true, Some(rss)) = (counting, line.strip_prefix("Rss:")) {
                total += kib(rss).unwrap_or(0);
            }
        }
        total
    }

    #[test]
    fn dropping_this_programs_mapped_pages_keeps_it_working() {
        let before = clean_resident_kb();
        let text = std::hint::black_box(format!("{:x}", 0xbe27u32));
        drop_file_pages(&clean_file_ranges());
        assert_eq!(format!("{:x}", 0xbe27u32), text);
        let after = clean_resident_kb();
        assert!(
            after < before,
            "read-only file pages resident: {before} KiB before, {after} KiB after"
        );
    }

    #[test]
    fn release_from_a_thread_leaves_its_stack_alone() {
        let keep = std::hint::black_box([7u8; 256]);
        release_idle_memory();
        assert_eq!(keep, [7u8; 256]);
    }
}
