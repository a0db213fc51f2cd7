//! How much memory this machine can give a new allocation, so that a model too large
//! for it is refused with the number before any allocation, instead of filling memory
//! (and swap) with nothing printed.

use crate::error::{Error, Result};

/// Bytes available to a new allocation: Linux's `MemAvailable` (free memory plus the
/// caches the kernel can drop), lowered to what the process's cgroup (v2) still allows.
/// `None` where neither can be read: no check is then made.
pub(crate) fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_field(&meminfo, "MemAvailable:")?;
    Some(match cgroup_room() {
        Some(room) => available.min(room),
        None => available,
    })
}

/// A `/proc/meminfo` field in bytes (the file gives kB).
fn meminfo_field(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// `memory.max - memory.current` of this process's cgroup (v2), when it has a limit.
fn cgroup_room() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // "max" (no limit) does not parse: no room to subtract from.
    let max = read("memory.max")?;
    Some(max.saturating_sub(read("memory.current").unwrap_or(0)))
}

/// Refuses `what`, which needs `bytes`, when that is more than the memory available.
pub(crate) fn check_fits(what: &str, bytes: u64) -> Result<()> {
    match available_bytes() {
        Some(available) if bytes > available => Err(Error::unsupported(format!(
            "{what} needs {} of memory but this machine has {} available",
            human_bytes(bytes),
            human_bytes(available)
        ))),
        _ => Ok(()),
    }
}

/// `12.3 GB`-style sizes (decimal units, as `free -H` and the Hub print them).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_in_bytes() {
        let info = "MemTotal:       16384 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(meminfo_field(info, "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(meminfo_field(info, "SwapFree:"), None);
    }

    #[test]
    fn sizes_read_like_free() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4_000_000_000), "4.0 GB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }

    #[test]
    fn an_exabyte_does_not_fit() {
        if available_bytes().is_some() {
            let err = check_fits("the model", u64::MAX).unwrap_err().to_string();
            assert!(err.contains("the model needs 18.4 EB"), "{err}");
        }
    }
}
