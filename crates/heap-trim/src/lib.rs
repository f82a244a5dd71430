//! Give the C allocator's free pages back to the operating system.
//!
//! glibc's malloc returns memory to the kernel only from the top of each
//! arena's heap; pages freed in the middle of an arena (what a burst of
//! short-lived connections leaves behind on every worker thread) stay in the
//! process's RSS until `malloc_trim` releases them (`MADV_DONTNEED` on every
//! free page of every arena). This crate is the only place of the workspace
//! that calls it: two `unsafe` FFI calls (`malloc_trim`, and `mallinfo2` to
//! read the free bytes) behind safe functions, so the daemon itself keeps
//! `#![forbid(unsafe_code)]`. A trim never runs on an async worker (it walks
//! every arena under its lock: milliseconds).
//!
//! On targets other than glibc the functions do nothing and say so.
//! [`HeapRelease`] is the thread that trims when callers say a burst ended
//! ([`BurstEnd`] tells them): once their requests stop for [`QUIET`], at most
//! once per [`MIN_INTERVAL`]; and, for the bursts no caller sees, when at
//! least [`FREE_WORTH_RELEASING`] bytes are free and the heap has changed
//! since its last trim (looked at every [`CHECK_INTERVAL`]).

mod burst;
mod release;

pub use burst::BurstEnd;
pub use release::{
    HeapRelease, CHANGE_WORTH_RELEASING, CHECK_INTERVAL, FREE_WORTH_RELEASING, MIN_INTERVAL, QUIET,
};

/// Release every free page of the allocator's arenas to the operating
/// system. Returns whether the allocator supports it (glibc: yes, even when
/// nothing was free).
pub fn release_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer, touches only the
        // allocator's own state under its locks, and is documented as safe
        // to call from any thread at any time.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// What the allocator's arenas hold (glibc's `mallinfo2`, mmapped blocks
/// left out): bytes in use and bytes free (free chunks, whether their pages
/// were given back or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapUsage {
    pub in_use: usize,
    pub free: usize,
}

/// The arenas' [`HeapUsage`]; `None` on other allocators. Walks the arenas'
/// free lists under their locks: call it off async workers.
pub fn heap_usage() -> Option<HeapUsage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no argument and returns a plain struct by
        // value; it reads the allocator's own state under its locks and is
        // safe to call from any thread (glibc 2.33+, Debian 12 has 2.36).
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUsage {
            in_use: info.uordblks,
            free: info.fordblks,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_pages_leave_the_resident_set() {
        // 64 MiB in blocks below the mmap threshold, so they live in the
        // arena and stay resident after `free` until trimmed; the first
        // block is kept so the arena's top is not free (no automatic trim).
        let mut blocks: Vec<Vec<u8>> = (0..64 * 8).map(|_| vec![1u8; 128 * 1024 - 64]).collect();
        let keep = blocks.split_off(blocks.len() - 1);
        let resident_with_blocks = resident_kib();
        drop(blocks);
        let resident_after_free = resident_kib();
        assert!(release_free_pages());
        let resident_after_trim = resident_kib();
        drop(keep);
        assert!(
            resident_after_trim + 32 * 1024 < resident_after_free,
            "trimming released less than 32 MiB: {resident_with_blocks} KiB with the blocks, \
             {resident_after_free} KiB after free, {resident_after_trim} KiB after the trim"
        );
    }

    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}
