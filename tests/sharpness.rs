//! `ckpt sharpness` end to end on checkpoints of a real (tiny) `ckpt train` run, bad
//! input included. The in-process checks against closed forms and PyTorch, which need
//! exact Hessian-vector products, are in `sharpness_exact.rs`.

mod common;

use candle_core::{Device, Tensor};
use ckpt::checkpoint::Checkpoint;
use common::{arg, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// `ckpt sharpness` end to end

use common::SMALL_RECIPE as SMALL;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "ckpt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A synthetic world and two tiny runs, WSO and WSD, trained by `ckpt train`.
fn trained_runs() -> Sandbox {
    let sb = Sandbox::new();
    sb.small_world();
    for recipe in ["tiny-wso", "tiny-wsd"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("trainer/{recipe}.toml"));
        let mut args = vec!["train".to_string(), arg(&path).to_string()];
        for set in SMALL {
            args.extend(["--set".into(), set.into()]);
        }
        ok(&sb.run(&args));
    }
    sb
}

/// The measurement flags of these tests: 32-token rows, 2 batches, 4 probes.
const SMALL_MEASURE: [&str; 10] = [
    "--data",
    "data/synth/validation.jsonl",
    "--seq-len",
    "32",
    "--max-batches",
    "2",
    "--samples",
    "4",
    "--seed",
    "3",
];

fn sharpness(sb: &Sandbox, paths: &[&str], more: &[&str]) -> std::process::Output {
    let mut args = vec!["sharpness"];
    args.extend(paths);
    args.extend(SMALL_MEASURE);
    args.extend(more);
    sb.run(args)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn measures_every_checkpoint_of_trained_runs_plots_and_resumes() {
    let sb = trained_runs();
    let out = sharpness(
        &sb,
        &["runs"],
        &[
            "--json",
            "--plot",
            "fig.png",
            "--save-batches",
            "batches.npy",
            "--top-eigen",
            "--eigen-iters",
            "4",
        ],
    );
    let results: Vec<Value> = serde_json::from_str(&ok(&out)).unwrap();
    let name = |r: &Value| {
        let p = PathBuf::from(r["checkpoint"].as_str().unwrap());
        let run = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        format!("{run}/{}", r["step"])
    };
    let names: Vec<String> = results.iter().map(name).collect();
    assert_eq!(
        names,
        ["tiny-wsd/12", "tiny-wsd/24", "tiny-wso/12", "tiny-wso/24"]
    );
    for r in &results {
        let samples = f64s(&r["samples"]);
        let running = f64s(&r["running"]);
        let mean = samples.iter().sum::<f64>() / 4.0;
        assert_eq!(
            (r["probes"].as_u64(), r["batches"].as_u64()),
            (Some(4), Some(2))
        );
        assert!((r["estimate"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.abs());
        assert_eq!(running.len(), 4);
        assert_eq!(running[3], r["estimate"].as_f64().unwrap());
        assert!(r["stderr"].as_f64().unwrap() > 0.0);
        assert_eq!(r["target_tokens"], 2 * 31);
        assert!(r["top_eigenvalue"]["value"].as_f64().unwrap().is_finite());
        assert_eq!(r["config"]["method"], "fd");
    }
    // Before its decay, the WSD run's weights are the WSO run's: one measurement.
    assert_eq!(results[0]["fingerprint"], results[2]["fingerprint"]);
    assert_eq!(results[0]["estimate"], results[2]["estimate"]);
    assert_ne!(results[1]["estimate"], results[3]["estimate"]);

    let file = sb.path().join("runs/sharpness.jsonl");
    assert_eq!(lines(&file).len(), 4);
    assert_eq!(
        &std::fs::read(sb.path().join("fig.png")).unwrap()[..4],
        b"\x89PNG"
    );
    // The saved batches are the validation texts' tokens, in order.
    let batches = Tensor::read_npy(sb.path().join("batches.npy")).unwrap();
    assert_eq!(batches.dims(), [2, 1, 32]);
    let ckpt = Checkpoint::open(&sb.path().join("runs/tiny-wso/step-0000024")).unwrap();
    let tok = ckpt::tokenizer::TextTokenizer::load(&ckpt.dir, None, None, None).unwrap();
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(sb.path().join("data/synth/validation.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let ids = tok.encode(first["text"].as_str().unwrap()).unwrap();
    let saved: Vec<u32> = batches.flatten_all().unwrap().to_vec1().unwrap();
    let n = ids.len().min(32);
    assert_eq!(saved[..n], ids[..n]);

    // A rerun measures nothing and leaves the file as it was.
    let before = std::fs::read(&file).unwrap();
    let table = ok(&sharpness(
        &sb,
        &["runs"],
        &["--top-eigen", "--eigen-iters", "4"],
    ));
    assert_eq!(table.matches("done before").count(), 4, "{table}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // A killed measurement resumes at its last finished probe: drop the last result,
    // leave progress as if two probes were done (the first one marked), rerun.
    let mut kept = lines(&file);
    let last = kept.pop().unwrap();
    let text: String = kept.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let samples = f64s(&last["samples"]);
    let progress = serde_json::json!({
        "fingerprint": last["fingerprint"],
        "config_key": last["config_key"],
        "samples": [1000.0, samples[1]],
    });
    std::fs::write(
        sb.path().join("runs/sharpness.jsonl.progress.json"),
        progress.to_string(),
    )
    .unwrap();
    let args = ["--top-eigen", "--eigen-iters", "4", "--json"];
    let again: Vec<Value> = serde_json::from_str(&ok(&sharpness(&sb, &["runs"], &args))).unwrap();
    let resumed = f64s(&again[3]["samples"]);
    assert_eq!(resumed[..2], [1000.0, samples[1]]);
    for (a, b) in resumed[2..].iter().zip(&samples[2..]) {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs(),
            "probe drawn again: {a} vs {b}"
        );
    }
    assert!(!sb
        .path()
        .join("runs/sharpness.jsonl.progress.json")
        .exists());

    // Double backward through the binary agrees with the finite differences per probe.
    let exact: Vec<Value> = serde_json::from_str(&ok(&sharpness(
        &sb,
        &["runs/tiny-wso/step-0000024"],
        &["--method", "exact", "--out", "exact.jsonl", "--json"],
    )))
    .unwrap();
    let fd = f64s(&results[3]["samples"]);
    for (e, f) in f64s(&exact[0]["samples"]).iter().zip(&fd) {
        assert!(rel_err(*f, *e) < 1e-3, "fd {f} vs exact {e}");
    }
}

/// `tests/fixtures/trained/tiny-wso` (a `ckpt train` checkpoint) copied into `sb`.
fn trained_checkpoint(sb: &Sandbox, rel: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/tiny-wso");
    let dst = sb.path().join(rel);
    common::copy_dir(&src, &dst);
    dst
}

fn texts(sb: &Sandbox) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/texts.jsonl");
    let dst = sb.path().join("texts.jsonl");
    std::fs::copy(src, &dst).unwrap();
    dst
}

#[test]
fn bad_input_gives_one_clear_line_and_finished_results_stay() {
    let sb = Sandbox::new();
    trained_checkpoint(&sb, "runs/a/step-30");
    texts(&sb);
    let run = |args: &[&str]| {
        let mut all = vec!["sharpness"];
        all.extend(args);
        all.extend(["--samples", "2", "--seq-len", "16", "--max-batches", "1"]);
        sb.run(all)
    };

    let err = failed(&run(&["runs", "--data", "missing.txt"]));
    assert!(
        err.contains("missing.txt") && err.contains("no such file"),
        "{err}"
    );
    sb.write("empty.txt", "\n  \n");
    let err = failed(&run(&["runs", "--data", "empty.txt"]));
    assert!(
        err.contains("empty.txt") && err.contains("no text"),
        "{err}"
    );
    sb.write("short.txt", "tiny\n");
    let err = failed(&run(&["runs", "--data", "short.txt"]));
    assert!(
        err.contains("short.txt") && err.contains("fewer than one batch"),
        "{err}"
    );
    let err = failed(&sb.run([
        "sharpness",
        "runs",
        "--data",
        "texts.jsonl",
        "--seq-len",
        "65",
    ]));
    assert!(err.contains("max_position_embeddings (64)"), "{err}");
    sb.write("notes/readme.txt", "not a checkpoint");
    let err = failed(&run(&["notes", "--data", "texts.jsonl"]));
    assert!(
        err.contains("no checkpoint") && err.contains("notes"),
        "{err}"
    );
    let err = failed(&run(&["nowhere", "--data", "texts.jsonl"]));
    assert!(
        err.contains("nowhere") && err.contains("no such file"),
        "{err}"
    );
    let err = failed(&run(&["runs", "--data", "texts.jsonl", "--dtype", "bf16"]));
    assert!(err.contains("f32 or f64"), "{err}");

    // A checkpoint whose weights are cut short, and one whose loss is NaN: each
    // fails with its own error; the good one is measured and kept.
    let broken = trained_checkpoint(&sb, "runs/b/step-10");
    let weights = broken.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let nan = trained_checkpoint(&sb, "runs/c/step-20");
    let mut tensors =
        candle_core::safetensors::load(nan.join("model.safetensors"), &Device::Cpu).unwrap();
    let norm = "model.norm.weight";
    let poisoned = (tensors[norm].ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert(norm.into(), poisoned);
    ckpt::checkpoint::write_safetensors(&nan.join("model.safetensors"), &tensors).unwrap();

    let out = run(&["runs", "--data", "texts.jsonl"]);
    let err = failed(&out);
    assert!(
        err.contains("runs/b/step-10") && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("runs/c/step-20") && err.contains("NaN"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("runs/a/step-30"));
    let kept = lines(&sb.path().join("runs/sharpness.jsonl"));
    assert_eq!(kept.len(), 1);
    assert!(kept[0]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("runs/a/step-30"));
}

/// With `--store`, results land in the results store and a run with another output file
/// finds them there instead of measuring again.
#[test]
fn results_go_to_the_store_and_are_not_measured_twice() {
    let sb = Sandbox::new();
    common::copy_dir(
        &common::fixture_in("trained", "tiny-wso"),
        &sb.path().join("runs/wso/step-1"),
    );
    std::fs::copy(
        common::fixture_in("trained", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let args = |out: &str| {
        vec![
            "sharpness",
            "runs",
            "--data",
            "texts.jsonl",
            "--seq-len",
            "32",
            "--max-batches",
            "1",
            "--samples",
            "3",
            "--store",
            "s.sqlite",
            "--out",
            out,
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let first = sb.run_json(args("a.jsonl"));
    let second = sb.run_json(args("b.jsonl"));
    assert_eq!(first[0]["estimate"], second[0]["estimate"]);
    assert_eq!(
        first[0]["seconds"], second[0]["seconds"],
        "taken from the store, not re-measured"
    );
    let conn = rusqlite::Connection::open(sb.path().join("s.sqlite")).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM sharpness", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn blocks_top_eigenvalues_and_density_through_the_binary() {
    let sb = trained_runs();
    let more = [
        "--top-k",
        "3",
        "--lanczos-steps",
        "8",
        "--density",
        "--slq-runs",
        "2",
        "--slq-steps",
        "5",
        "--block-plot",
        "blocks.svg",
        "--density-plot",
        "density.svg",
    ];
    let mut json = vec!["--json"];
    json.extend(more);
    let results: Vec<Value> =
        serde_json::from_str(&ok(&sharpness(&sb, &["runs/tiny-wso"], &json))).unwrap();
    assert_eq!(results.len(), 2);
    let cfg = ckpt::model::ModelConfig::from_json(
        &std::fs::read_to_string(sb.path().join("runs/tiny-wso/step-0000024/config.json")).unwrap(),
    )
    .unwrap();
    let layers = cfg.num_hidden_layers;
    for r in &results {
        let samples = f64s(&r["samples"]);
        let blocks = r["blocks"].as_array().unwrap();
        // embed, 3 blocks per layer, final norm (tied head: no head block).
        assert_eq!(blocks.len(), 3 * layers + 2, "{blocks:?}");
        assert_eq!(blocks[0]["name"], "embed");
        for (i, sample) in samples.iter().enumerate() {
            let parts: f64 = blocks.iter().map(|b| f64s(&b["samples"])[i]).sum();
            assert!((parts - sample).abs() <= 1e-9 * sample.abs(), "probe {i}");
        }
        let top = f64s(&r["top_eigenvalues"]["values"]);
        assert_eq!(top.len(), 3);
        assert!(top[0] >= top[1] && top[1] >= top[2], "{top:?}");
        assert_eq!(r["top_eigenvalues"]["steps"], 8);
        let runs = r["density"]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let weights: f64 = run
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["weight"].as_f64().unwrap())
                .sum();
            assert!((weights - 1.0).abs() < 1e-9);
        }
        // The density's largest node is at most the top eigenvalue (both are Ritz
        // values of the same Hessian, the top from more steps).
        let max_node = runs
            .iter()
            .flat_map(|run| {
                run.as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["value"].as_f64().unwrap())
            })
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            max_node <= top[0] * (1.0 + 1e-6) + 1e-9,
            "{max_node} > {}",
            top[0]
        );
        assert_eq!(r["density"]["dimension"], r["parameters"]);
    }
    let heat = std::fs::read_to_string(sb.path().join("blocks.svg")).unwrap();
    assert!(
        heat.contains("tiny-wso") && heat.contains("layer"),
        "heat map"
    );
    let density = std::fs::read_to_string(sb.path().join("density.svg")).unwrap();
    assert!(density.contains("tiny-wso (wso) @ 24"), "density legend");

    // The per-block table, and a rerun measures nothing.
    let mut table = vec!["--blocks"];
    table.extend(more);
    let text = ok(&sharpness(&sb, &["runs/tiny-wso"], &table));
    assert!(
        text.contains("layers.0.mlp") && text.contains("done before"),
        "{text}"
    );
    assert!(text.contains("top eigenvalues (Lanczos)"), "{text}");

    // The spectrum resumes like the probes: a killed measurement's progress (its probes
    // with their block parts, its top eigenvalues, its first SLQ run) is taken as it is,
    // marked here so that a recomputation would show, and only the second run is drawn.
    let file = sb.path().join("runs/tiny-wso/sharpness.jsonl");
    let mut kept = lines(&file);
    let last = kept.pop().unwrap();
    let text: String = kept.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let marked_run = serde_json::json!([{"value": 42.0, "weight": 1.0}]);
    let mut top = last["top_eigenvalues"].clone();
    top["values"][0] = 111.0.into();
    let blocks: Vec<Value> = last["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| serde_json::json!({"name": b["name"], "samples": b["samples"]}))
        .collect();
    let progress = serde_json::json!({
        "fingerprint": last["fingerprint"],
        "config_key": last["config_key"],
        "samples": last["samples"],
        "blocks": blocks,
        "top_eigenvalues": top,
        "density_runs": [marked_run],
    });
    std::fs::write(
        sb.path()
            .join("runs/tiny-wso/sharpness.jsonl.progress.json"),
        progress.to_string(),
    )
    .unwrap();
    let again: Vec<Value> =
        serde_json::from_str(&ok(&sharpness(&sb, &["runs/tiny-wso"], &json))).unwrap();
    let resumed = &again[1];
    assert_eq!(resumed["samples"], last["samples"]);
    assert_eq!(resumed["top_eigenvalues"]["values"][0], 111.0);
    let runs = resumed["density"]["runs"].as_array().unwrap();
    assert_eq!((runs.len(), &runs[0]), (2, &marked_run));
    assert_eq!(runs[1], last["density"]["runs"][1], "run 2 drawn as before");
}

#[test]
fn measures_the_pretraining_and_sft_sets_apart_with_the_assistant_tokens_as_loss() {
    let sb = trained_runs();
    let ckpt_dir = "runs/tiny-wso/step-0000024";
    let args = [
        "sharpness",
        ckpt_dir,
        "--data",
        "pt=data/synth/validation.jsonl",
        "--data",
        "sft=data/synth/sft.jsonl",
        "--seq-len",
        "32",
        "--max-batches",
        "2",
        "--samples",
        "3",
        "--plot",
        "fig.png",
        "--save-batches",
        "batches.json",
        "--json",
    ];
    let results: Vec<Value> = serde_json::from_str(&ok(&sb.run(args))).unwrap();
    let sets: Vec<&str> = results
        .iter()
        .map(|r| r["config"]["set"].as_str().unwrap())
        .collect();
    assert_eq!(sets, ["pt", "sft"]);
    let (pt, sft) = (&results[0], &results[1]);
    assert_ne!(pt["config_key"], sft["config_key"]);
    assert_eq!(pt["target_tokens"], 2 * 31);
    let sft_targets = sft["target_tokens"].as_u64().unwrap();
    assert!(sft_targets > 0 && sft_targets < 2 * 31, "{sft_targets}");
    assert!(sft["estimate"].as_f64().unwrap().is_finite());
    for set in ["pt", "sft"] {
        let png = std::fs::read(sb.path().join(format!("fig.{set}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "Figure 3's {set} panel");
    }

    // The SFT rows are the conversations rendered with the checkpoint's template, and
    // the tokens the loss counts are the assistant's: decoded, they are the assistant's
    // messages (each closed by EOS), in order.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path().join("batches.1.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(saved["batches"][0][0].clone()).unwrap();
    let mask: Vec<f32> = serde_json::from_value(saved["loss_mask"][0][0].clone()).unwrap();
    let tok = ckpt::train::data::tokenizer::TrainTokenizer::load(
        &sb.path().join(ckpt_dir),
        &ckpt::chat::TemplateChoice::Own,
    )
    .unwrap();
    let learned: Vec<u32> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m > 0.0)
        .map(|(&id, _)| id)
        .collect();
    let text = tok.decode(&learned).unwrap();
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(sb.path().join("data/synth/sft.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let answer = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let expected: Vec<&str> = answer.split_whitespace().take(words.len().min(3)).collect();
    assert_eq!(
        words[..expected.len()],
        expected[..],
        "{text:?} vs {answer:?}"
    );
    assert!(
        !text.contains("Tell me"),
        "a user turn counted in the loss: {text:?}"
    );

    // Several sets must be named.
    let out = sb.run([
        "sharpness",
        ckpt_dir,
        "--data",
        "pt=data/synth/validation.jsonl",
        "--data",
        "data/synth/sft.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(failed(&out).contains("name each"), "{}", failed(&out));
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}
