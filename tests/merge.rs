//! `ckpt merge` (WSM checkpoint merging) through the real binary:
//! - the coefficients of every emulated shape against the closed-form formula,
//!   written out here independently of the library;
//! - the merged tensors against the weighted sum computed here with candle in f64,
//!   for f32 and bf16 sources;
//! - the round trip through transformers: `scripts/make_merge_fixture.py` merged the
//!   fixture run in float64 and scored it with transformers (and checked that
//!   transformers loads ckpt's merge); ckpt's merge must score the same;
//! - a merge of a run trained by `ckpt train`, scored by `ckpt score`;
//! - bad input: one-line errors naming the file, exit code 1.

mod common;

use candle_core::{DType, Device, Tensor};
use ckpt::merge::{emulate, DecayShape};
use common::{arg, copy_dir, Sandbox};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merge")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixture_dir().join("reference.json")).unwrap()).unwrap()
}

/// The fixture run (four checkpoints, steps 100, 200, 260, 400) copied to `<sb>/run`.
fn copy_run(sb: &Sandbox) -> PathBuf {
    let run = sb.path().join("run");
    for entry in std::fs::read_dir(fixture_dir().join("run")).unwrap() {
        let entry = entry.unwrap();
        copy_dir(&entry.path(), &run.join(entry.file_name()));
    }
    run
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join(format!("step-{step:07}"))
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "ckpt failed ({:?}); stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

// ----- coefficients -----

/// The WSM coefficients, written out from DESIGN.md section 9 and the shapes' formulas:
/// w_0 = 1, w_i = f(x_i) with x_i = (s_i - s_0) / (s_k - s_0 + h), h the mean interval;
/// c_j = w_j - w_{j+1}, c_k = w_k.
fn closed_form(shape: &str, steps: &[u64]) -> Vec<f64> {
    let k = steps.len() - 1;
    if shape == "uniform" {
        return vec![1.0 / (k as f64 + 1.0); k + 1];
    }
    let span = (steps[k] - steps[0]) as f64;
    let h = span / k as f64;
    let f = |s: u64| {
        let d = (s - steps[0]) as f64;
        let x = d / (span + h);
        match shape {
            "linear" => 1.0 - x,
            "cosine" => 0.5 * (1.0 + (std::f64::consts::PI * x).cos()),
            "1-sqrt" => 1.0 - x.sqrt(),
            "inv-sqrt" => f64::min(1.0, 1.0 / (d / h).sqrt()),
            _ => unreachable!(),
        }
    };
    let w: Vec<f64> = (0..=k)
        .map(|i| if i == 0 { 1.0 } else { f(steps[i]) })
        .collect();
    (0..=k)
        .map(|j| if j < k { w[j] - w[j + 1] } else { w[k] })
        .collect()
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn coefficients_follow_the_formula_for_every_shape() {
    let spacings: [&[u64]; 4] = [
        &[1000, 2000, 3000, 4000, 5000],
        &[100, 200, 260, 400],
        &[0, 7],
        &[10, 11, 12, 50, 51, 90, 300],
    ];
    for shape in ["uniform", "linear", "cosine", "inv-sqrt", "1-sqrt"] {
        for steps in spacings {
            let got = emulate(shape.parse().unwrap(), steps).unwrap();
            let want = closed_form(shape, steps);
            assert_close(&got.coefficients, &want, &format!("{shape} {steps:?}"));
            let sum: f64 = got.coefficients.iter().sum();
            assert!((sum - 1.0).abs() < 1e-12, "{shape} {steps:?}: sum {sum}");
            assert!(
                got.coefficients.iter().all(|&c| c >= 0.0),
                "{shape} {steps:?}: {:?}",
                got.coefficients
            );
        }
    }
    // Values by hand. Cosine at x = 1/3, 2/3: w = 1, 3/4, 1/4.
    let c = |shape: DecayShape, steps: &[u64]| emulate(shape, steps).unwrap().coefficients;
    assert_close(
        &c(DecayShape::Cosine, &[200, 300, 400]),
        &[0.25, 0.5, 0.25],
        "cosine",
    );
    // Evenly spaced, inverse square root: w = 1, 1, 1/sqrt 2, 1/sqrt 3.
    let r = |x: f64| x.sqrt().recip();
    assert_close(
        &c(DecayShape::InvSqrt, &[0, 10, 20, 30]),
        &[0.0, 1.0 - r(2.0), r(2.0) - r(3.0), r(3.0)],
        "inv-sqrt",
    );
    // 1 - sqrt at x = i/4.
    let w = [1.0, 0.5, 1.0 - 0.5f64.sqrt(), 1.0 - 0.75f64.sqrt()];
    assert_close(
        &c(DecayShape::OneMinusSqrt, &[4, 8, 12, 16]),
        &[w[0] - w[1], w[1] - w[2], w[2] - w[3], w[3]],
        "1-sqrt",
    );
    // Uniform averaging is linear decay for evenly spaced checkpoints, not otherwise.
    for steps in [&[1000u64, 2000, 3000, 4000][..], &[5, 10, 15]] {
        assert_close(
            &c(DecayShape::Uniform, steps),
            &c(DecayShape::Linear, steps),
            "uniform = linear",
        );
    }
    let uneven = [100, 200, 260, 400];
    let (u, l) = (
        c(DecayShape::Uniform, &uneven),
        c(DecayShape::Linear, &uneven),
    );
    assert!((u[1] - l[1]).abs() > 0.05, "{u:?} {l:?}");
}

#[test]
fn the_cli_prints_the_coefficients_and_plots_the_curve() {
    let sb = Sandbox::new();
    let run = copy_run(&sb);
    for shape in ["uniform", "linear", "cosine", "inv-sqrt", "1-sqrt"] {
        let out = sb.run_json(["merge", arg(&run), "--emulate", shape, "--json"]);
        let got: Vec<f64> = out["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["coefficient"].as_f64().unwrap())
            .collect();
        assert_close(&got, &closed_form(shape, &[100, 200, 260, 400]), shape);
        assert_eq!(out["out"], Value::Null, "no --out: nothing written");
    }
    // --last 3 = --window 200 here; the table names the steps.
    let out = ok(sb.run(["merge", arg(&run), "--emulate", "cosine", "--last", "3"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("step-0000100") && table.contains("step-0000260"));
    assert!(table.contains("0.654508"), "{table}");
    let plot = sb.path().join("lr.svg");
    ok(sb.run([
        "merge",
        arg(&run),
        "--emulate",
        "cosine",
        "--window",
        "200",
        "--plot",
        arg(&plot),
    ]));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("emulated by the merge"));
    let mut names: Vec<String> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["lr.svg", "run"], "no --out: no checkpoint written");
}

// ----- merged tensors -----

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Rewrites every checkpoint of `run` with its tensors cast to `dtype`.
fn cast_run(run: &Path, dtype: DType) {
    for entry in std::fs::read_dir(run).unwrap() {
        let file = entry.unwrap().path().join("model.safetensors");
        let cast: HashMap<String, Tensor> = load(&file)
            .into_iter()
            .map(|(n, t)| (n, t.to_dtype(dtype).unwrap()))
            .collect();
        candle_core::safetensors::save(&cast, &file).unwrap();
    }
}

/// Checks `merged` against sum_j c_j * source_j computed here in f64: f32 outputs within
/// a few f32 roundings, bf16 outputs rounded to nearest (half a bf16 ulp, at most 2^-8
/// relative, plus the f32 sums' error).
fn check_weighted_sum(merged: &Path, sources: &[PathBuf], c: &[f64], dtype: DType) {
    let merged = load(merged);
    let sources: Vec<HashMap<String, Tensor>> = sources
        .iter()
        .map(|s| load(&s.join("model.safetensors")))
        .collect();
    assert_eq!(merged.len(), sources[0].len());
    let mut moved = 0f64;
    for (name, got) in &merged {
        assert_eq!(got.dtype(), dtype, "{name}");
        let mut want = Tensor::zeros(got.shape(), DType::F64, &Device::Cpu).unwrap();
        let mut scale = want.clone();
        for (s, &cj) in sources.iter().zip(c) {
            let x = s[name].to_dtype(DType::F64).unwrap();
            want = (want + (&x * cj).unwrap()).unwrap();
            scale = (scale + (x.abs().unwrap() * cj).unwrap()).unwrap();
        }
        let got = got.to_dtype(DType::F64).unwrap();
        let err: Vec<f64> = (&got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale: Vec<f64> = scale.flatten_all().unwrap().to_vec1().unwrap();
        let rel = if dtype == DType::BF16 {
            2f64.powi(-8)
        } else {
            0.0
        };
        for (e, s) in err.iter().zip(&scale) {
            assert!(
                *e <= (rel + 4e-7) * s + 1e-12,
                "{name}: error {e} at scale {s}"
            );
        }
        let last = sources[sources.len() - 1][name]
            .to_dtype(DType::F64)
            .unwrap();
        let d: f64 = (&got - &last)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        moved = moved.max(d);
    }
    assert!(moved > 0.01, "the merge differs from the newest source");
}

#[test]
fn merged_tensors_are_the_weighted_sum_of_f32_and_bf16_sources() {
    for dtype in [DType::F32, DType::BF16] {
        let sb = Sandbox::new();
        let run = copy_run(&sb);
        if dtype != DType::F32 {
            cast_run(&run, dtype);
        }
        let all: Vec<PathBuf> = [100, 200, 260, 400]
            .iter()
            .map(|&s| step_dir(&run, s))
            .collect();
        // Explicit weights over all four; an emulated shape over a window.
        let out = sb.path().join("explicit");
        ok(sb.run([
            "merge",
            arg(&run),
            "--weights",
            "0.1,0.2,0.3,0.4",
            "--out",
            arg(&out),
        ]));
        check_weighted_sum(
            &out.join("model.safetensors"),
            &all,
            &[0.1, 0.2, 0.3, 0.4],
            dtype,
        );
        for accumulate in ["f32", "f64"] {
            let out = sb.path().join(format!("linear-{accumulate}"));
            ok(sb.run([
                "merge",
                arg(&run),
                "--emulate",
                "linear",
                "--window",
                "200",
                "--accumulate",
                accumulate,
                "--out",
                arg(&out),
            ]));
            let c = closed_form("linear", &[200, 260, 400]);
            check_weighted_sum(&out.join("model.safetensors"), &all[1..], &c, dtype);
        }
    }
}

// ----- round trip through transformers -----

#[test]
fn transformers_scores_the_reference_merge_as_ckpt_scores_its_merge() {
    let sb = Sandbox::new();
    let run = copy_run(&sb);
    let reference = reference();
    let merged = sb.path().join("merged");
    let printed = sb.run_json([
        "merge",
        arg(&run),
        "--emulate",
        "cosine",
        "--window",
        "200",
        "--out",
        arg(&merged),
        "--json",
    ]);
    let meta = read_json(&merged.join("ckpt.json"));
    let info = &meta["merge"];
    let steps: Vec<u64> = info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(Value::from(steps), reference["steps"]);
    let c: Vec<f64> = info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["coefficient"].as_f64().unwrap())
        .collect();
    assert_close(&c, &floats(&reference["coefficients"]), "coefficients");
    assert_eq!(info["shape"], "cosine");
    assert_eq!(info["window"], 200);

    // The sidecar: the newest source's step, stage and tokens; decayed by the merge.
    assert_eq!(meta["step"], 400);
    assert_eq!(meta["stage"], "pre");
    assert_eq!(meta["tokens_seen"], 400 * 512);
    assert_eq!(meta["schedule"]["kind"], "wsm");
    let alpha = meta["schedule"]["alpha_pre"].as_f64().unwrap();
    assert!(
        (alpha - 0.25).abs() < 1e-12,
        "the final multiplier: {alpha}"
    );
    assert!((meta["lr"].as_f64().unwrap() - 3e-3 * 0.25).abs() < 1e-15);
    // Sources are identified by the fingerprints `ckpt inspect` reports.
    let listed = sb.run_json(["inspect", arg(&run), arg(&merged), "--json"]);
    let row = |path: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed: {listed}"))
            .clone()
    };
    for source in info["sources"].as_array().unwrap() {
        let path = source["path"].as_str().unwrap();
        assert_eq!(source["fingerprint"], row(path)["fingerprint"], "{path}");
    }
    assert_eq!(printed["fingerprint"], row(arg(&merged))["fingerprint"]);
    assert_eq!(row(arg(&merged))["schedule"], "wsm");
    // An ordinary checkpoint: the newest source's config and tokenizer files.
    let newest = step_dir(&run, 400);
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(merged.join(file)).unwrap(),
            std::fs::read(newest.join(file)).unwrap(),
            "{file}"
        );
    }

    // ckpt scores its merge as transformers scored the float64 reference merge.
    let texts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/texts.jsonl");
    let scored = sb.run_json([
        "score",
        arg(&merged),
        "--text",
        arg(&texts),
        "--per-token",
        "--json",
    ]);
    let want = reference["texts"].as_array().unwrap();
    let got = scored["texts"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (floats(&g["token_logprobs"]), floats(&w["token_logprobs"]));
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    // The sources score differently (a wrong merge would show).
    let newest_scored = sb.run_json([
        "score",
        arg(&newest),
        "--text",
        arg(&texts),
        "--per-token",
        "--json",
    ]);
    let a = floats(&newest_scored["texts"][0]["token_logprobs"]);
    let b = floats(&want[0]["token_logprobs"]);
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 0.05));
    // When the fixture was made, transformers loaded ckpt's merge and agreed.
    let check = &reference["transformers_loaded_ckpt_merge"]["max_abs_logprob_diff"];
    assert!(check.as_f64().unwrap() < 1e-5, "{check}");
}

// ----- a run trained by ckpt -----

/// `ckpt train trainer/tiny-wso.toml` shrunk to a ~60k-parameter model, 24 steps,
/// a checkpoint every 4.
fn train_tiny_wso(sb: &Sandbox) -> PathBuf {
    ok(sb.run([
        "synth",
        "--out",
        "data/synth",
        "--entities",
        "20",
        "--pretrain-docs",
        "300",
        "--midtrain-docs",
        "20",
        "--sft-chats",
        "20",
        "--validation-docs",
        "8",
    ]));
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tiny-wso.toml");
    let mut args = vec!["train".to_string(), arg(&recipe).to_string()];
    for set in [
        "model.hidden_size=32",
        "model.intermediate_size=86",
        "model.num_hidden_layers=2",
        "tokenizer.train_vocab_size=320",
        "training.seq_len=32",
        "training.batch_tokens=512",
        "schedule.warmup=4",
        "schedule.total_steps=24",
        "training.checkpoint_every=4",
    ] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    ok(sb.run(&args));
    sb.path().join("runs/tiny-wso")
}

#[test]
fn a_trained_run_merges_into_a_checkpoint_that_scores() {
    let sb = Sandbox::new();
    let run = train_tiny_wso(&sb);
    let merged = sb.path().join("merged");
    let out = sb.run_json([
        "merge",
        arg(&run),
        "--emulate",
        "cosine",
        "--window",
        "12",
        "--out",
        arg(&merged),
        "--json",
    ]);
    assert_eq!(
        out["found_steps"],
        serde_json::json!([4, 8, 12, 16, 20, 24])
    );
    let c: Vec<f64> = out["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["coefficient"].as_f64().unwrap())
        .collect();
    assert_close(
        &c,
        &closed_form("cosine", &[12, 16, 20, 24]),
        "coefficients",
    );
    // The optimizer state of the sources is not part of a merged model.
    assert!(!merged.join("optimizer.safetensors").exists());
    assert!(merged.join("tokenizer.json").is_file());

    let val = sb.path().join("data/synth/validation.jsonl");
    let score = |ckpt: &Path| {
        sb.run_json(["score", arg(ckpt), "--text", arg(&val), "--json"])["aggregate"]["mean_loss"]
            .as_f64()
            .unwrap()
    };
    let (loss_merged, loss_last) = (score(&merged), score(&step_dir(&run, 24)));
    assert!(
        loss_merged.is_finite() && loss_merged < 6.0,
        "{loss_merged}"
    );
    assert!(
        (loss_merged - loss_last).abs() < 1.0,
        "{loss_merged} vs {loss_last}"
    );

    // A merge saved inside the run is not taken as a source of the next merge.
    let inside = run.join("merged-cosine");
    ok(sb.run([
        "merge",
        arg(&run),
        "--emulate",
        "cosine",
        "--last",
        "2",
        "--out",
        arg(&inside),
    ]));
    let out = ok(sb.run(["merge", arg(&run), "--emulate", "linear", "--json"]));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["sources"].as_array().unwrap().len(), 6);
    assert_eq!(printed["skipped"][0], arg(&inside));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping"));
}

// ----- bad input -----

/// Exit code 1, one line on stderr starting with `error:`, no panic, mentioning every
/// string of `must` (case-insensitive).
#[track_caller]
fn assert_bad_input(out: Output, must: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    let lower = lines[0].to_lowercase();
    for m in must {
        assert!(
            lower.contains(&m.to_lowercase()),
            "must mention {m:?}: {stderr}"
        );
    }
    lines[0].to_string()
}

#[track_caller]
fn merge_fails(sb: &Sandbox, args: &[&str], must: &[&str]) -> String {
    let mut all = vec!["merge"];
    all.extend(args);
    let out = sb.ckpt(&all).env("RUST_BACKTRACE", "1").output().unwrap();
    assert!(
        !out.status.success(),
        "ckpt {all:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_bad_input(out, must)
}

fn set_meta(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("ckpt.json");
    let mut v = read_json(&path);
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn bad_merges_fail_with_one_clear_line() {
    let sb = Sandbox::new();
    let run = copy_run(&sb);
    let r = arg(&run);

    // Another architecture: a parity fixture given a step in the run.
    let other = sb.copy_fixture_to("llama_gqa", "mixed/step-0000500");
    let mixed = sb.path().join("mixed");
    copy_dir(&step_dir(&run, 400), &mixed.join("step-0000400"));
    let line = merge_fails(
        &sb,
        &[arg(&mixed), "--emulate", "linear"],
        &["different models"],
    );
    assert!(line.contains("step-0000400/config.json") && line.contains("step-0000500/config.json"));
    std::fs::remove_dir_all(&other).unwrap();

    // Same config, a tensor stored in another dtype.
    let cast = sb.path().join("cast");
    copy_dir(&step_dir(&run, 200), &cast.join("step-0000200"));
    copy_dir(&step_dir(&run, 400), &cast.join("step-0000400"));
    cast_run(&cast, DType::BF16);
    copy_dir(&step_dir(&run, 400), &cast.join("step-0000400"));
    merge_fails(
        &sb,
        &[arg(&cast), "--emulate", "linear"],
        &["step-0000200", "step-0000400", "BF16", "F32"],
    );

    // One checkpoint; a window or --last that keeps one; no checkpoint at all.
    merge_fails(
        &sb,
        &[arg(&step_dir(&run, 400)), "--emulate", "linear"],
        &["only one checkpoint", "at least 2", "400"],
    );
    merge_fails(
        &sb,
        &[r, "--emulate", "cosine", "--window", "100"],
        &["window of 100 steps", "100, 200, 260, 400"],
    );
    merge_fails(
        &sb,
        &[r, "--emulate", "cosine", "--last", "1"],
        &["--last 1"],
    );
    std::fs::create_dir_all(sb.path().join("empty")).unwrap();
    merge_fails(
        &sb,
        &["empty", "--emulate", "cosine"],
        &["no checkpoint", "empty"],
    );

    // Explicit weights: negative, not summing to 1, the wrong count.
    merge_fails(
        &sb,
        &[r, "--weights", "-0.2,0.4,0.4,0.4"],
        &["-0.2", "step 100"],
    );
    merge_fails(&sb, &[r, "--weights", "0.3,0.3,0.3,0.3"], &["sum to 1.2"]);
    merge_fails(
        &sb,
        &[r, "--weights", "0.5,0.5", "--window", "200"],
        &["2 weights", "3 checkpoints", "200, 260, 400"],
    );
    merge_fails(&sb, &[r, "--weights", "0.5,x"], &["--weights", "\"x\""]);

    // Duplicate steps; a step that cannot be known; mixed stages.
    let dup = sb.path().join("dup");
    copy_dir(&step_dir(&run, 260), &dup.join("step-0000260"));
    copy_dir(&step_dir(&run, 260), &dup.join("copy-of-260"));
    merge_fails(
        &sb,
        &[arg(&dup), "--emulate", "linear"],
        &["step-0000260", "copy-of-260", "both at step 260"],
    );
    std::fs::remove_file(dup.join("copy-of-260/ckpt.json")).unwrap();
    merge_fails(
        &sb,
        &[arg(&dup), "--emulate", "linear"],
        &["copy-of-260", "step unknown"],
    );
    set_meta(&step_dir(&run, 260), |m| m["stage"] = "mid".into());
    merge_fails(
        &sb,
        &[r, "--emulate", "linear"],
        &["different stages", "step-0000260", "pre and mid"],
    );
    set_meta(&step_dir(&run, 260), |m| m["stage"] = "pre".into());

    // The output exists; --force never replaces a directory holding a source.
    let out = sb.path().join("merged");
    std::fs::create_dir_all(&out).unwrap();
    merge_fails(
        &sb,
        &[r, "--emulate", "linear", "--out", arg(&out)],
        &["merged", "already exists", "--force"],
    );
    ok(sb.run([
        "merge",
        r,
        "--emulate",
        "linear",
        "--out",
        arg(&out),
        "--force",
    ]));
    assert!(out.join("model.safetensors").is_file());
    merge_fails(
        &sb,
        &[r, "--emulate", "linear", "--out", r, "--force"],
        &["would delete a source"],
    );
    assert!(step_dir(&run, 100).join("model.safetensors").is_file());
    // A plot file whose format is unknown fails before anything is written.
    let out2 = sb.path().join("merged2");
    merge_fails(
        &sb,
        &[
            r,
            "--emulate",
            "linear",
            "--plot",
            "lr.jpg",
            "--out",
            arg(&out2),
        ],
        &["lr.jpg", ".png or .svg"],
    );
    assert!(!out2.exists());
}

#[test]
fn sharded_sources_merge_into_one_file_and_identical_ones_into_themselves() {
    let sb = Sandbox::new();
    for step in [1, 2, 3] {
        sb.copy_fixture_to("mistral_sharded", &format!("run/checkpoint-{step}"));
    }
    let merged = sb.path().join("merged");
    let out = sb.run_json([
        "merge",
        "run",
        "--emulate",
        "1-sqrt",
        "--out",
        arg(&merged),
        "--json",
    ]);
    assert!(merged.join("model.safetensors").is_file());
    assert!(!merged.join("model.safetensors.index.json").exists());
    // 1-sqrt at x = 1/3, 2/3; no sidecars: the steps come from the names.
    let c = closed_form("1-sqrt", &[1, 2, 3]);
    for (row, want) in out["sources"].as_array().unwrap().iter().zip(&c) {
        assert!((row["coefficient"].as_f64().unwrap() - want).abs() < 1e-12);
    }
    // A weighted average of one model with itself is that model, up to one rounding of
    // the f32 sums; bit for bit when the coefficients are exact in binary.
    ok(sb.run([
        "merge",
        "run",
        "--weights",
        "0.25,0.25,0.5",
        "--out",
        "exact",
    ]));
    let listed = sb.run_json(["inspect", "run/checkpoint-1", "exact", "--json"]);
    assert_eq!(listed[0]["fingerprint"], listed[1]["fingerprint"]);
    let meta = read_json(&merged.join("ckpt.json"));
    assert_eq!(meta["step"], 3);
    assert_eq!(meta["stage"], Value::Null, "the sources record no stage");
}
