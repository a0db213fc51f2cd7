//! The product rule for bad input, checked through the real binary: a ONE-LINE error on
//! stderr, starting with `error:`, that names the offending file, flag or key and says
//! what is wrong; exit code 1; never a panic. (Usage errors are clap's: exit code 2.)

use super::Sandbox;
use std::process::Output;

/// Runs `ckpt ARGS...` as a user with `RUST_BACKTRACE=1` in their shell would: the error
/// must stay one clean line even then.
pub fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.ckpt(args).env("RUST_BACKTRACE", "1").output().unwrap()
}

/// Asserts the product rule for a failed run and returns the error line: exit code 1,
/// stderr exactly one line starting with `error:`, no panic or backtrace, every string
/// of `must` in it and at least one of `any_of` (case-insensitive).
#[track_caller]
pub fn assert_bad_input(out: Output, must: &[&str], any_of: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert_clean(&stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr must be one line, got {}:\n{stderr}",
        lines.len()
    );
    let line = lines[0];
    assert!(
        line.starts_with("error: "),
        "must start with `error: `: {line}"
    );
    let lower = line.to_lowercase();
    for m in must {
        assert!(
            lower.contains(&m.to_lowercase()),
            "error must mention {m:?}: {line}"
        );
    }
    assert!(
        any_of.iter().any(|p| lower.contains(&p.to_lowercase())),
        "error must say one of {any_of:?}: {line}"
    );
    line.to_string()
}

/// No panic, and no backtrace frames folded into the message.
#[track_caller]
pub fn assert_clean(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "panic note:\n{stderr}");
    assert!(
        !stderr.contains(".rs:") && !stderr.contains("stack backtrace"),
        "backtrace in the error ({} bytes):\n{}",
        stderr.len(),
        stderr.chars().take(600).collect::<String>()
    );
}
