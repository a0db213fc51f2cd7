//! `ckpt schedule` end to end: the CSV/JSON it prints against the paper's formulas
//! written out here, recipes overlaid, plots written, and bad input refused with one
//! line naming the key or the file.

mod common;

use common::{arg, Sandbox};
use serde_json::Value;
use std::f64::consts::PI;
use std::path::Path;

const ETA: f64 = 3e-4;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-300) || a == b
}

/// Runs `ckpt ARGS`, asserts success and returns stdout.
fn stdout_of(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.run(args);
    assert!(
        out.status.success(),
        "ckpt {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `ckpt ARGS`, asserts exit code 1 with one `error:` line on stderr naming each
/// of `wanted`.
fn fails_with(sb: &Sandbox, args: &[&str], wanted: &[&str]) {
    let out = sb.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "ckpt {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "ckpt {args:?}: no {w:?} in {stderr}");
    }
}

/// CSV text -> header and rows (cells as text).
fn csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// Row for `step` as `(step, lr columns)`.
fn row(rows: &[Vec<String>], step: u64) -> &[String] {
    &rows
        .iter()
        .find(|r| r[0] == step.to_string())
        .unwrap_or_else(|| panic!("no row for step {step}"))[1..]
}

const WSD_FLAGS: [&str; 15] = [
    "schedule",
    "--kind",
    "wsd",
    "--peak-lr",
    "3e-4",
    "--warmup",
    "1000",
    "--steps",
    "80000",
    "--alpha",
    "0.1",
    "--mid-steps",
    "36000",
    "--alpha-mid",
    "0",
];

#[test]
fn flags_print_the_paper_formula_as_csv() {
    let sb = Sandbox::new();
    let mut args = WSD_FLAGS.to_vec();
    args.extend(["--every", "250"]);
    let (header, rows) = csv(&stdout_of(&sb, &args));
    assert_eq!(header, ["step", "lr"]);
    assert_eq!(rows.len(), 116_000 / 250 + 1);
    assert_eq!(rows.last().unwrap()[0], "116000");

    // Equations 7 and 11 with W = 1000, S = W + 0.75 (T - W) = 60,250, T = 80,000, M = 36,000.
    let (w, s, t_end, m) = (1000.0, 60_250.0, 80_000.0, 36_000.0);
    let pre = |t: f64| {
        if t <= w {
            ETA * t / w
        } else if t <= s {
            ETA
        } else {
            ETA * (0.9 * (t_end - t) / (t_end - s) + 0.1)
        }
    };
    let lr = |t: f64| {
        if t <= t_end {
            pre(t)
        } else {
            pre(t_end) * ((t_end + m - t) / m)
        }
    };
    for step in [
        0, 500, 1000, 30_000, 60_250, 70_000, 80_000, 98_000, 116_000,
    ] {
        let got: f64 = row(&rows, step)[0].parse().unwrap();
        assert!(
            close(got, lr(step as f64)),
            "step {step}: {got} vs {}",
            lr(step as f64)
        );
    }

    // Every step by default; the last one is always there.
    let out = stdout_of(
        &sb,
        &[
            "schedule",
            "--kind",
            "cosine",
            "--peak-lr",
            "1e-3",
            "--steps",
            "100",
        ],
    );
    let (_, rows) = csv(&out);
    assert_eq!(rows.len(), 101);
    let lr50: f64 = row(&rows, 50)[0].parse().unwrap();
    assert!(close(lr50, 1e-3 * 0.5 * (1.0 + (PI * 0.5).cos())));
    let out = stdout_of(
        &sb,
        &[
            "schedule",
            "--kind",
            "wso",
            "--peak-lr",
            "1",
            "--steps",
            "100",
            "--every",
            "30",
        ],
    );
    let steps: Vec<String> = csv(&out).1.into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(steps, ["0", "30", "60", "90", "100"]);
}

#[test]
fn json_output_has_label_spec_and_points() {
    let sb = Sandbox::new();
    let mut args = WSD_FLAGS.to_vec();
    args.extend(["--format", "json", "--every", "1000"]);
    let v: Value = serde_json::from_str(&stdout_of(&sb, &args)).unwrap();
    let curves = v.as_array().unwrap();
    assert_eq!(curves.len(), 1);
    let c = &curves[0];
    assert_eq!(c["label"], "WSD (α=0.1) + mid α_mid=0");
    assert_eq!(c["spec"]["kind"], "wsd");
    assert_eq!(c["spec"]["stable_ratio"], 0.75, "defaults written out");
    assert_eq!(c["spec"]["total_steps"], 80_000);
    let points = c["points"].as_array().unwrap();
    assert_eq!(points.len(), 117);
    assert_eq!(points[1]["step"], 1000);
    assert_eq!(points[1]["lr"].as_f64().unwrap(), ETA);
    assert!(close(points[80]["lr"].as_f64().unwrap(), 0.1 * ETA));
    assert_eq!(points[116]["lr"].as_f64().unwrap(), 0.0);
}

const WSO_RECIPE: &str = r#"
[model]
hidden_size = 64
layers = 2

[training]
steps = 12

[schedule]
kind = "wso"
peak_lr = 3e-4
warmup = 1000
total_steps = 80000

[data]
path = "somewhere.jsonl"
"#;

const COSINE_MID_RECIPE: &str = r#"
[schedule]
kind = "cosine"
peak_lr = 3e-4
warmup = 1000
total_steps = 80000
alpha = 0.1
mid_steps = 36000
alpha_mid = 0.0

[optimizer]
beta2 = 0.95
"#;

#[test]
fn recipes_are_overlaid_and_other_tables_ignored() {
    let sb = Sandbox::new();
    let wso = sb.write("wso.toml", WSO_RECIPE);
    let cos = sb.write("recipes/cos.toml", COSINE_MID_RECIPE);
    let out = stdout_of(&sb, &["schedule", arg(&wso), arg(&cos), "--every", "4000"]);
    let (header, rows) = csv(&out);
    assert_eq!(header, ["step", "WSO", "Cosine (α=0.1) + mid α_mid=0"]);
    assert_eq!(rows.last().unwrap()[0], "116000");
    let r = row(&rows, 40_000);
    assert_eq!(r[0], ETA.to_string());
    let cos_at = |t: f64| ETA * (0.1 + 0.45 * (1.0 + (PI * (t - 1000.0) / 79_000.0).cos()));
    assert!(close(r[1].parse().unwrap(), cos_at(40_000.0)));
    let r = row(&rows, 80_000);
    assert_eq!(r[0], ETA.to_string(), "WSO's last step");
    assert!(close(r[1].parse().unwrap(), 0.1 * ETA));
    let r = row(&rows, 100_000);
    assert_eq!(r[0], "", "WSO has ended: empty cell");
    let mid = 0.1 * ETA * (116_000.0 - 100_000.0) / 36_000.0;
    assert!(close(r[1].parse().unwrap(), mid));

    // The same as JSON: one entry per recipe, each to its own end.
    let v: Value = serde_json::from_str(&stdout_of(
        &sb,
        &[
            "schedule",
            arg(&wso),
            arg(&cos),
            "--format",
            "json",
            "--every",
            "8000",
        ],
    ))
    .unwrap();
    let ends: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["points"].as_array().unwrap().last().unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ends, [80_000, 116_000]);

    // Two recipes with the same schedule are told apart by their file names.
    let twin = sb.write("twin.toml", WSO_RECIPE);
    let (header, _) = csv(&stdout_of(
        &sb,
        &["schedule", arg(&wso), arg(&twin), "--every", "80000"],
    ));
    assert_eq!(header, ["step", "WSO [wso]", "WSO [twin]"]);
}

#[test]
fn out_writes_the_data_to_a_file() {
    let sb = Sandbox::new();
    let wso = sb.write("wso.toml", WSO_RECIPE);
    let out = sb.run([
        "schedule",
        arg(&wso),
        "--every",
        "20000",
        "--out",
        "data/lr.csv",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(sb.path().join("data/lr.csv")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.starts_with("step,lr\n0,0\n"));
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_dims(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn plots_are_written_as_png_and_svg() {
    let sb = Sandbox::new();
    let wso = sb.write("wso.toml", WSO_RECIPE);
    let cos = sb.write("cos.toml", COSINE_MID_RECIPE);

    let out = sb.run(["schedule", arg(&wso), arg(&cos), "--plot", "plots/lr.png"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "only the plot unless --format asks for data"
    );
    let (w, h) = png_dims(&sb.path().join("plots/lr.png"));
    assert!(w >= 600 && h >= 400, "{w}x{h}");

    let svg_path = sb.path().join("lr.svg");
    let out = sb.run([
        "schedule",
        arg(&wso),
        arg(&cos),
        "--plot",
        arg(&svg_path),
        "--title",
        "Figure 2, again",
        "--format",
        "csv",
        "--every",
        "58000",
    ]);
    assert!(out.status.success());
    let steps: Vec<String> = csv(&String::from_utf8_lossy(&out.stdout))
        .1
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        steps,
        ["0", "58000", "80000", "116000"],
        "data too, with WSO's end"
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"));
    for text in [
        "WSO",
        "Cosine (α=0.1) + mid α_mid=0",
        "Figure 2, again",
        "learning rate",
        "mid-training",
    ] {
        assert!(svg.contains(text), "no {text:?} in the SVG");
    }
    let leftovers: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ckpt-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Flags plot too, without a mid-training line.
    let out = sb.run([
        "schedule",
        "--kind",
        "cyclic",
        "--peak-lr",
        "1e-3",
        "--steps",
        "5000",
        "--cycle",
        "1000",
        "--plot",
        "c.svg",
    ]);
    assert!(out.status.success());
    let svg = std::fs::read_to_string(sb.path().join("c.svg")).unwrap();
    assert!(svg.contains("Cyclic (cycle 1000, α=0)") && !svg.contains("mid-training"));
}

#[test]
fn bad_input_fails_with_one_line_naming_the_key_or_file() {
    let sb = Sandbox::new();
    let flags = |extra: &[&'static str]| {
        let mut a = vec![
            "schedule",
            "--kind",
            "wsd",
            "--peak-lr",
            "3e-4",
            "--steps",
            "1000",
        ];
        a.extend_from_slice(extra);
        a
    };
    fails_with(
        &sb,
        &flags(&["--alpha", "1.5"]),
        &["schedule.alpha = 1.5 is outside [0, 1]", "--alpha"],
    );
    fails_with(
        &sb,
        &flags(&["--warmup", "2000"]),
        &["schedule.warmup = 2000", "total_steps = 1000"],
    );
    fails_with(
        &sb,
        &flags(&["--cycle", "10"]),
        &["schedule.cycle does not apply", "wsd"],
    );
    fails_with(
        &sb,
        &flags(&["--mid-steps", "10"]),
        &["schedule.alpha_mid is required"],
    );
    fails_with(
        &sb,
        &flags(&["--plot", "lr.jpg"]),
        &["lr.jpg", ".png or .svg"],
    );
    assert!(!sb.path().join("lr.jpg").exists());

    let bad_alpha = sb.write(
        "bad_alpha.toml",
        "[model]\nx = 1\n[schedule]\nkind = \"cosine\"\npeak_lr = 1e-3\ntotal_steps = 10\nalpha = 1.5\n",
    );
    fails_with(
        &sb,
        &["schedule", arg(&bad_alpha)],
        &["bad_alpha.toml", "schedule.alpha = 1.5"],
    );
    let unknown = sb.write(
        "unknown.toml",
        "[schedule]\nkind = \"wso\"\npeak_lr = 1e-3\ntotal_steps = 10\nwarmup_steps = 5\n",
    );
    fails_with(
        &sb,
        &["schedule", arg(&unknown)],
        &["unknown.toml", "unknown field `warmup_steps`"],
    );
    let none = sb.write("none.toml", "[training]\nsteps = 5\n");
    fails_with(
        &sb,
        &["schedule", arg(&none)],
        &["none.toml", "no [schedule] table"],
    );
    let sft = sb.write(
        "sft.toml",
        "[schedule]\nkind = \"cosine\"\npeak_lr = 1e-5\nwarmup = 100\n",
    );
    fails_with(
        &sb,
        &["schedule", arg(&sft)],
        &["sft.toml", "schedule.total_steps is required"],
    );
    let broken = sb.write("broken.toml", "[schedule\nkind = \"wso\"\n");
    fails_with(
        &sb,
        &["schedule", arg(&broken)],
        &["broken.toml", "invalid TOML at line 1"],
    );
    // A good recipe beside a missing one: the missing one is named, nothing is printed.
    let good = sb.write("good.toml", WSO_RECIPE);
    fails_with(
        &sb,
        &["schedule", arg(&good), "missing.toml"],
        &["missing.toml"],
    );

    // Usage errors are clap's: exit code 2.
    assert_eq!(sb.run(["schedule"]).status.code(), Some(2));
    assert_eq!(sb.run(["schedule", "--kind", "wso"]).status.code(), Some(2));
    assert_eq!(
        sb.run([
            "schedule",
            "--kind",
            "nope",
            "--peak-lr",
            "1",
            "--steps",
            "1"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(sb.run(flags(&["--every", "0"])).status.code(), Some(2));
}

#[test]
fn help_lists_the_flags() {
    let sb = Sandbox::new();
    let out = stdout_of(&sb, &["schedule", "--help"]);
    for flag in [
        "--kind",
        "--peak-lr",
        "--mid-steps",
        "--alpha-mid",
        "--plot",
        "--every",
        "inv-sqrt",
    ] {
        assert!(out.contains(flag), "no {flag} in\n{out}");
    }
}
