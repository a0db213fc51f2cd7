//! Value parsers for numeric flags: a value out of range is refused where it enters,
//! by clap (a usage error, exit code 2), with the flag and its allowed range named.

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
