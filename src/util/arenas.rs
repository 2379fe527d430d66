//! How many malloc arenas the process keeps.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight per core, and
//! memory freed in one stays resident for it. kiln's threads come in waves (downloads,
//! unpacking, the overlay walk's lookers, the image's readers), and what each wave freed
//! stayed behind: a shipped disk profile built with an empty cache peaked at 98–106 MB,
//! past the 100 MB a build may use, with 35–40 MB of it live. Two arenas kept it at
//! 80 MB, with the same build times (the threads allocate large buffers, not many small
//! ones, so they seldom wait for an arena).

/// Keeps at most two arenas, unless the user chose a number (`MALLOC_ARENA_MAX`, or
/// glibc's tunables). Call before any thread starts.
pub fn bound() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set =
            |v: &str, part: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s.contains(part));
        if !set("MALLOC_ARENA_MAX", "") && !set("GLIBC_TUNABLES", "glibc.malloc.arena_max") {
            // SAFETY: mallopt changes a malloc setting; no thread has started yet.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
    }
}
