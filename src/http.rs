//! One retry policy for every HTTP client of ckpt: the Hub's API, uploads and
//! downloads, and the judge's OpenAI-compatible endpoint.
//!
//! A request is retried on a broken connection and on the answers that may differ next
//! time (408, 429 and any 5xx). The wait is what the server's `Retry-After` asks for,
//! in seconds or as an HTTP date, up to [`MAX_RETRY_AFTER`]; a server that asks for
//! more is given up on. Without one, the wait doubles from `base_delay` up to
//! `max_delay`, and is drawn between half and all of that ("equal jitter"), so that
//! clients failing together do not retry together. Each client scrubs its secrets out
//! of the messages it builds from these failures.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured; a server asking for more is given up on.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How many times, and how patiently, a request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub(crate) max_retries: u32,
    /// Wait before the first retry; doubles each time up to `max_delay`.
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    /// huggingface_hub's `http_backoff`: 5 retries, 1 s doubling to 8 s.
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry `n` (1: the first): `base_delay * 2^(n - 1)`, capped at
    /// `max_delay`, of which a random half to all is waited.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max_delay);
        full.mul_f64(0.5 + 0.5 * rand::random::<f64>())
    }

    /// The wait before retry `n` when the server asked for `asked` (its `Retry-After`):
    /// the ask itself, else the backoff. `None`: the ask is longer than
    /// [`MAX_RETRY_AFTER`], not worth waiting for.
    pub(crate) fn wait(&self, n: u32, asked: Option<Duration>) -> Option<Duration> {
        match asked {
            Some(asked) if asked > MAX_RETRY_AFTER => None,
            Some(asked) => Some(asked),
            None => Some(self.backoff(n)),
        }
    }
}

/// Whether an answer with `status` may be different next time.
pub(crate) fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..=599).contains(&status)
}

/// A `Retry-After` header's wait: seconds (`120`, `1.5`) or an HTTP date (the time
/// until then; none if it has passed). `None` for anything else.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return None;
        }
        // Past the cap it only needs to stay past it (the caller gives up).
        return Some(Duration::from_secs_f64(
            secs.min(2.0 * MAX_RETRY_AFTER.as_secs_f64()),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 1.5 "), Some(Duration::from_millis(1500)));
        // RFC 9110's example date is 1,445,412,480 s after the epoch.
        assert_eq!(
            p("Wed, 21 Oct 2015 07:28:10 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(p("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        // Absurd asks are kept above the cap, so that the caller gives up.
        assert!(p("1e300").unwrap() > MAX_RETRY_AFTER);
        for bad in ["", "-1", "NaN", "soon", "inf"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_asks_are_honoured() {
        let policy = RetryPolicy {
            max_retries: 9,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        };
        for (n, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (9, 800)] {
            for _ in 0..50 {
                let d = policy.backoff(n).as_secs_f64() * 1e3;
                assert!(
                    d >= full as f64 * 0.5 - 1e-9 && d <= full as f64 + 1e-9,
                    "{n}: {d}"
                );
            }
        }
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(policy.wait(1, Some(MAX_RETRY_AFTER * 2)), None);
        assert!(is_retryable(408) && is_retryable(429) && is_retryable(503));
        assert!(!is_retryable(401) && !is_retryable(404) && !is_retryable(409));
    }
}
