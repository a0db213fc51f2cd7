//! Allocator settings for long tensor workloads.
//!
//! candle allocates a fresh buffer for every op's output, forward and backward. When
//! the allocator hands freed pages back to the OS, each step faults them in again and
//! the kernel zeroes them: a quarter of a CPU training step went to `clear_page` before
//! this. The binaries use mimalloc as the global allocator (see `main.rs`); this tells
//! it to keep freed memory for reuse. The process's peak memory then stays reserved,
//! which is what a training or scoring run wants anyway.

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the version the `mimalloc`
/// crate builds by default); `libmimalloc-sys` does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS (purge delay -1). Only has an effect where
/// mimalloc is the global allocator; call it first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: sets a documented option; mimalloc reads options on every purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
