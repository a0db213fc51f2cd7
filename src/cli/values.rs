//! Value parsers for flags whose range clap's own parsers do not express: each one
//! rejects the value at parse time with clap's usage error (exit 2), naming the flag
//! and its allowed range.

/// A count of at least 1 (`--limit 0` would do nothing, silently).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number of at least 1)")),
    }
}

/// A count in `lo..=hi`.
pub fn usize_in(
    lo: usize,
    hi: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from {lo} to {hi}, got {s:?}"
        )),
    }
}

/// `--store-timeout SECS`: how long to wait for another process's lock on the store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreTimeout {
    /// Seconds to wait while another process holds the results store locked.
    #[arg(long = "store-timeout", value_name = "SECS", default_value_t = 60, value_parser = at_least_one)]
    secs: usize,
}

impl StoreTimeout {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs as u64)
    }
}

/// A parser for a finite number in `(lo, hi]`. `lo` is excluded: the flags it serves
/// (tolerances, steps) mean nothing at zero or below.
pub fn f64_above(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        if v.is_finite() && v > lo && v <= hi {
            Ok(v)
        } else {
            Err(format!("must be in ({lo}, {hi}], got {s}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = usize_in(0, 20);
        assert_eq!(p("20"), Ok(20));
        assert!(p("21").unwrap_err().contains("from 0 to 20"));
    }

    #[test]
    fn counts() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("-1").is_err() && at_least_one("").is_err());
    }

    #[test]
    fn numbers_outside_the_range_are_refused_with_it() {
        let p = f64_above(0.0, 1.0);
        assert_eq!(p("0.5"), Ok(0.5));
        assert_eq!(p("1"), Ok(1.0));
        for bad in ["0", "-1e-3", "1.5", "nan", "inf"] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("(0, 1]"), "{bad}: {e}");
        }
        assert!(p("x").unwrap_err().contains("not a number"));
    }
}
