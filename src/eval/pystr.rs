//! Python's `str` semantics where lm-evaluation-harness relies on them.
//!
//! The harness cleans and compares text with Python built-ins whose Unicode rules
//! differ from Rust's: `str.isspace` also counts the ASCII separators U+001C..U+001F,
//! `str.capitalize` title-cases the first character (`"ǆ"` -> `"ǅ"`, `"ß"` -> `"Ss"`),
//! `float()` accepts underscores and any Unicode decimal digit, `repr(float)` switches
//! to exponent notation outside [1e-4, 1e16), and `round(x, n)` rounds the exact binary
//! value half to even. These functions reproduce them, so prompts and scores are
//! byte-identical.
//!
//! Case mappings come from Rust's Unicode tables (Unicode 16), Python 3.11 uses
//! Unicode 14: the few characters encoded or remapped since then may differ.
//!
//! ```
//! use ckpt::eval::pystr;
//! assert_eq!(pystr::capitalize("ǆEMAL"), "ǅemal");
//! assert_eq!(pystr::float_repr(1e16), "1e+16");
//! ```

use std::sync::LazyLock;

/// `str.isspace` for one character.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.rstrip()`.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `str.split()` without arguments: runs of whitespace separate, no empty pieces.
pub fn split_whitespace(s: &str) -> Vec<&str> {
    s.split(is_space).filter(|p| !p.is_empty()).collect()
}

/// `str.lower()` (full lowercase mapping with the final-sigma rule, as CPython).
pub fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// `str.capitalize()`: the first character title-cased, the rest lower-cased.
pub fn capitalize(s: &str) -> String {
    let Some(first) = s.chars().next() else {
        return String::new();
    };
    let mut out = titlecase(first);
    // CPython lowers the rest in the context of the whole string (the final-sigma rule
    // looks at the characters before), so lower the whole string and drop the first
    // character's own lowercase form, which is context-free at position 0.
    let whole = s.to_lowercase();
    let first_lower_len: usize = first.to_lowercase().map(char::len_utf8).sum();
    out.push_str(&whole[first_lower_len..]);
    out
}

/// The full title-case mapping of one character (`_PyUnicode_ToTitleFull`).
pub fn titlecase(c: char) -> String {
    let cp = c as u32;
    let single = |cp: u32| char::from_u32(cp).map(String::from).unwrap_or_default();
    match cp {
        0x1C4..=0x1C6 => single(0x1C5),
        0x1C7..=0x1C9 => single(0x1C8),
        0x1CA..=0x1CC => single(0x1CB),
        0x1F1..=0x1F3 => single(0x1F2),
        // Georgian Mkhedruli: uppercase is Mtavruli, title case is the letter itself.
        0x10D0..=0x10FA | 0x10FD..=0x10FF => c.to_string(),
        // Greek with ypogegrammeni: title case keeps the iota subscript (prosgegrammeni).
        0x1F80..=0x1FAF => single(cp | 0x8),
        0x1FB3 | 0x1FBC => single(0x1FBC),
        0x1FC3 | 0x1FCC => single(0x1FCC),
        0x1FF3 | 0x1FFC => single(0x1FFC),
        _ => match TITLE_SPECIAL.iter().find(|(k, _)| *k == cp) {
            Some((_, mapped)) => mapped.iter().filter_map(|&u| char::from_u32(u)).collect(),
            None => c.to_uppercase().collect(),
        },
    }
}

/// Characters whose full title-case mapping is a sequence that differs from their
/// uppercase mapping (from Python 3.11's `unicodedata`).
const TITLE_SPECIAL: &[(u32, &[u32])] = &[
    (0xDF, &[0x53, 0x73]),
    (0x587, &[0x535, 0x582]),
    (0x1FB2, &[0x1FBA, 0x345]),
    (0x1FB4, &[0x386, 0x345]),
    (0x1FB7, &[0x391, 0x342, 0x345]),
    (0x1FC2, &[0x1FCA, 0x345]),
    (0x1FC4, &[0x389, 0x345]),
    (0x1FC7, &[0x397, 0x342, 0x345]),
    (0x1FF2, &[0x1FFA, 0x345]),
    (0x1FF4, &[0x38F, 0x345]),
    (0x1FF7, &[0x3A9, 0x342, 0x345]),
    (0xFB00, &[0x46, 0x66]),
    (0xFB01, &[0x46, 0x69]),
    (0xFB02, &[0x46, 0x6C]),
    (0xFB03, &[0x46, 0x66, 0x69]),
    (0xFB04, &[0x46, 0x66, 0x6C]),
    (0xFB05, &[0x53, 0x74]),
    (0xFB06, &[0x53, 0x74]),
    (0xFB13, &[0x544, 0x576]),
    (0xFB14, &[0x544, 0x565]),
    (0xFB15, &[0x544, 0x56B]),
    (0xFB16, &[0x54E, 0x576]),
    (0xFB17, &[0x544, 0x56D]),
];

static DECIMAL_DIGIT: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^\p{Nd}$").expect("static regex"));

fn is_decimal(c: char) -> bool {
    let mut buf = [0u8; 4];
    DECIMAL_DIGIT.is_match(c.encode_utf8(&mut buf))
}

/// The value of a Unicode decimal digit (general category Nd), as `unicodedata.decimal`.
pub fn decimal_value(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return c.to_digit(10);
    }
    if c.is_ascii() || !is_decimal(c) {
        return None;
    }
    // Nd characters come in complete runs 0..9; adjacent runs (the mathematical
    // digits) start at multiples of ten from the first one.
    let mut start = c as u32;
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_decimal(prev) {
            break;
        }
        start -= 1;
    }
    Some((c as u32 - start) % 10)
}

/// Python's `float(s)` for a `str`, or `None` where it raises `ValueError`.
pub fn parse_float(s: &str) -> Option<f64> {
    // CPython first maps non-ASCII whitespace to ' ' and non-ASCII digits to ASCII
    // (any other non-ASCII character makes the string invalid), then strips ASCII
    // whitespace only: "7\x1c" is not a number although "\x1c".isspace().
    let mut ascii = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else if is_space(c) {
            ascii.push(' ');
        } else {
            ascii.push(char::from_digit(decimal_value(c)?, 10)?);
        }
    }
    let t = ascii.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
    let t = remove_underscores(t)?;
    let body = t.strip_prefix(['+', '-']).unwrap_or(&t);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        let v = if lower == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Some(if t.starts_with('-') { -v } else { v });
    }
    if !is_decimal_literal(body) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// PEP 515: an underscore is allowed only between two digits; it is then dropped.
fn remove_underscores(s: &str) -> Option<String> {
    if !s.contains('_') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let before = i > 0 && b[i - 1].is_ascii_digit();
            let after = b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(before && after) {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// `digits [. digits] [e [sign] digits]` or `. digits [...]`, with at least one digit.
fn is_decimal_literal(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let all_digits = |x: &str| x.bytes().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// `repr(x)` / `str(x)` of a Python float: shortest round-trip digits, fixed notation
/// for exponents in [-4, 16), else `d.ddde+XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = (exp + 1) as usize;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
    }
}

/// Python's `round(x, ndigits)` for a float: the exact binary value rounded half to
/// even at `ndigits` decimals, read back as the nearest float.
pub fn round(x: f64, ndigits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Rust's fixed-precision formatting is exact and rounds ties to even, like
    // CPython's `_Py_dg_dtoa` mode 3.
    format!("{x:.ndigits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_includes_ascii_separators() {
        assert_eq!(strip("\u{1f} a b\u{3000}\n"), "a b");
        assert_eq!(split_whitespace(" a\u{1c}b  c "), ["a", "b", "c"]);
        assert!(!is_space('\u{200b}'));
    }

    #[test]
    fn capitalize_edge_cases() {
        assert_eq!(capitalize("ßtraße"), "Sstraße");
        assert_eq!(capitalize("ﬁne"), "Fine");
        assert_eq!(capitalize("ǆ"), "ǅ");
        assert_eq!(capitalize("1ABC"), "1abc");
        assert_eq!(capitalize("AΣ"), "Aς");
        assert_eq!(capitalize("Σ"), "Σ");
        assert_eq!(capitalize(""), "");
        assert_eq!(capitalize("İSTANBUL"), "İstanbul");
    }

    #[test]
    fn python_float_parsing() {
        assert_eq!(parse_float("1_000"), Some(1000.0));
        assert_eq!(parse_float(" ٣ "), Some(3.0));
        assert_eq!(parse_float("１２"), Some(12.0));
        assert_eq!(parse_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_float("nan").unwrap().is_nan());
        assert_eq!(parse_float("1."), Some(1.0));
        assert_eq!(parse_float(".5e-1"), Some(0.05));
        for bad in [
            "", ".", "1_", "_1", "1__0", "1e", "e5", "1,000", "0x10", "1 2", "infx",
        ] {
            assert_eq!(parse_float(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn python_float_repr() {
        for (x, s) in [
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(float_repr(x), s);
        }
    }

    #[test]
    fn round_half_even_on_exact_value() {
        assert_eq!(round(0.125, 2), 0.12);
        assert_eq!(round(0.375, 2), 0.38);
        assert_eq!(round(2.675, 2), 2.67);
        assert_eq!(round(0.5, 0), 0.0);
        assert_eq!(round(2.0 / 3.0, 2), 0.67);
    }
}
