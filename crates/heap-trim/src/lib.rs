//! Give the C allocator's free pages back to the operating system.
//!
//! glibc's malloc returns memory to the kernel only from the top of each
//! arena's heap; pages freed in the middle of an arena (what a burst of
//! short-lived connections leaves behind on every worker thread) stay in the
//! process's RSS until `malloc_trim` releases them (`MADV_DONTNEED` on every
//! free page of every arena). This crate is the only place of the workspace
//! that calls it: three `unsafe` FFI calls (`malloc_trim`, `mallinfo2` to
//! read the free bytes, `mallopt` to cap the arenas) behind safe functions,
//! so the daemon itself keeps `#![forbid(unsafe_code)]`. A trim never runs
//! on an async worker (it walks every arena under its lock: milliseconds).
//!
//! [`limit_arenas`] caps how many arenas glibc makes (by default up to eight
//! per core, one per thread that meets a locked arena): a long-running
//! daemon's threads otherwise each fragment an arena of their own.
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

/// The arenas a daemon uses when `MALLOC_ARENA_MAX` does not say: the main
/// one and one for every other thread to share. A 60-minute soak with
/// glibc's default (up to 16 arenas on 2 cores) saw the requestor daemon's
/// thread arenas grow 16 → 25 MiB while its records stayed flat.
pub const DAEMON_ARENAS: usize = 2;

/// Cap the allocator's arenas at `max` (this replaces a cap glibc took
/// from `MALLOC_ARENA_MAX`: callers that honour it leave this alone when it
/// is set). Call it before the process starts its threads. Returns whether
/// the allocator took the cap.
pub fn limit_arenas(max: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let max = libc::c_int::try_from(max).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two plain integers and changes only the
        // allocator's own settings under its lock; M_ARENA_MAX affects
        // arenas made afterwards.
        #[allow(unsafe_code)]
        let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, max) };
        done == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = max;
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

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_arena_cap() {
        assert!(limit_arenas(DAEMON_ARENAS));
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
