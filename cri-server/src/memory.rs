//! Keeping berthd's resident memory small: a pull allocates tens of MiB of buffers across
//! worker threads (decompression, hashing, TLS), and glibc's malloc keeps freed memory in
//! per-thread arenas. berthd caps the arenas, and trims after each pull
//! (`runtime_core::memory::release_free_heap`).

/// Caps malloc arenas and lowers the thresholds at which freed memory goes back to the
/// kernel. Call first thing in `main`, before any thread exists.
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
