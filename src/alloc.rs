//! Allocator settings for long tensor workloads.
//!
//! candle allocates a fresh buffer for every op's output, forward and backward. When
//! the allocator hands freed pages back to the OS, each step faults them in again and
//! the kernel zeroes them: a quarter of a CPU training step went to `clear_page` before
//! this. The binaries use mimalloc as the global allocator (see `main.rs`); this tells
//! it to keep freed memory for reuse. The process's peak memory then stays reserved,
//! which is what a training or scoring run wants anyway.

/// `mi_option_purge_delay` in `mi_option_e`: 15 in both mimalloc 2.x and 3.x (3.3.2 is
/// what `libmimalloc-sys` 0.1.49 builds; `v2` is a feature).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The major version in `mi_version()`: `MMP` (2.1.7 is 217) or, from 3.x,
/// `MMmmpp` (3.3.2 is 30302).
fn major(version: i32) -> i32 {
    if version >= 10_000 {
        version / 10_000
    } else {
        version / 100
    }
}

/// The purge-delay option of the linked mimalloc: its number in 2.x and 3.x, none in
/// another major version, whose enum may differ.
fn purge_delay_option(version: i32) -> Option<libmimalloc_sys::mi_option_t> {
    matches!(major(version), 2 | 3).then_some(MI_OPTION_PURGE_DELAY)
}

/// Sets the process up for tensor workloads; call it first thing in `main`.
///
/// - **mimalloc keeps freed memory** (purge delay -1), for the reason above. Only has
///   an effect where mimalloc is the global allocator; with a mimalloc whose options
///   are numbered differently it does nothing (and says so at debug level).
/// - **No transparent huge pages** ([`disable_huge_pages`]).
pub fn configure() {
    keep_freed_memory();
    disable_huge_pages();
}

fn keep_freed_memory() {
    // SAFETY: a plain getter of the linked library's version.
    let version = unsafe { libmimalloc_sys::mi_version() };
    match purge_delay_option(version) {
        // SAFETY: sets a documented option of this version; mimalloc reads options on
        // every purge decision.
        Some(option) => unsafe { libmimalloc_sys::mi_option_set(option, -1) },
        None => tracing::debug!("mimalloc {version}: purge delay left at its default"),
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, which the
/// kernel checks at every fault, so it also covers what mimalloc mapped before `main`
/// and advised `MADV_HUGEPAGE`).
///
/// Why: loading a model's weights is the first touch of that much memory. On a VM
/// that hands freed memory back to its host, the first touch of a 2 MiB page cost 3x
/// what 512 small pages cost (538 MB: 1.27 s against 0.44 s), and `ckpt eval` of a
/// 135M model spent 1.1 s of its start-up in `clear_page`. Scoring in warm memory ran
/// at the same speed either way. Without Linux this does nothing.
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a process-wide flag with integer arguments; failure (an old kernel)
        // leaves the pages as they were.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option is set by number only for the major versions whose enum has that
    /// number there; the version this crate links is one of them.
    #[test]
    fn the_purge_delay_is_set_only_for_the_versions_that_number_it_so() {
        assert_eq!(purge_delay_option(217), Some(15));
        assert_eq!(purge_delay_option(30302), Some(15));
        assert_eq!(purge_delay_option(40001), None);
        assert_eq!(purge_delay_option(199), None);
        // SAFETY: getters and a setter of documented options.
        unsafe {
            let version = libmimalloc_sys::mi_version();
            assert!(
                purge_delay_option(version).is_some(),
                "linked mimalloc {version}"
            );
            // The next option named by the crate pins the layout after 15.
            assert_eq!(libmimalloc_sys::mi_option_use_numa_nodes, 16);
            configure();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }

    /// After `configure`, the kernel reports huge pages off for this process (Linux
    /// has said so in /proc/self/status since 5.0; older kernels skip the check).
    #[cfg(target_os = "linux")]
    #[test]
    fn configure_turns_huge_pages_off() {
        configure();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
