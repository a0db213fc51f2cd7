//! Every command on every architecture, through the real binary: the fixture
//! checkpoints of tests/fixtures/arch (GPT-NeoX, OLMo 2/3, Qwen3, Gemma 2/3, SmolLM3)
//! are inspected, evaluated (log-likelihood and generation tasks), scored, measured for
//! sharpness (finite differences against double backward), merged, released (dry run)
//! and served.

mod common;

use common::{arg, Sandbox};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const ARCHS: [(&str, &str); 9] = [
    ("gpt_neox_parallel", "GPTNeoXForCausalLM"),
    ("gpt_neox_sequential", "GPTNeoXForCausalLM"),
    ("olmo2", "Olmo2ForCausalLM"),
    ("olmo3", "Olmo3ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM"),
    ("gemma2", "Gemma2ForCausalLM"),
    ("gemma3", "Gemma3ForCausalLM"),
    ("gemma3_nested", "Gemma3ForCausalLM"),
    ("smollm3", "SmolLM3ForCausalLM"),
];

fn arch_fixture(name: &str) -> PathBuf {
    common::fixture_in("arch", name)
}

/// A sandbox with `runs/<arch>/step-1` for every fixture and the fixture texts.
fn runs() -> Sandbox {
    let sb = Sandbox::new();
    for (name, _) in ARCHS {
        common::copy_dir(
            &arch_fixture(name),
            &sb.path().join(format!("runs/{name}/step-1")),
        );
    }
    std::fs::copy(arch_fixture("texts.jsonl"), sb.path().join("texts.jsonl")).unwrap();
    sb
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn inspect_names_every_architecture() {
    let sb = runs();
    let report = sb.run_json(["inspect", "runs", "--json"]);
    let found = report.as_array().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(found.len(), ARCHS.len());
    for (name, architecture) in ARCHS {
        let entry = found
            .iter()
            .find(|c| c["path"].as_str().unwrap().contains(&format!("/{name}/")))
            .unwrap_or_else(|| panic!("{name} not in {report}"));
        assert_eq!(entry["architecture"], architecture, "{entry}");
    }
}

/// The pre-training suite (log-likelihood tasks and validation loss) and generation
/// tasks (gsm8k: greedy until a stop string) over all architectures at once.
#[test]
fn eval_runs_loglikelihood_and_generation_tasks_on_every_architecture() {
    let sb = runs();
    ok(&sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "6"]));
    let pt = sb.run_json([
        "eval",
        "runs",
        "--suite",
        "pt",
        "--data-dir",
        "evaldata",
        "--limit",
        "3",
        "--json",
    ]);
    let gen = sb.run_json([
        "eval",
        "runs",
        "--tasks",
        "gsm8k",
        "--data-dir",
        "evaldata",
        "--limit",
        "2",
        "--json",
    ]);
    for report in [&pt, &gen] {
        let checkpoints = report["checkpoints"].as_array().unwrap();
        assert_eq!(checkpoints.len(), ARCHS.len(), "{report}");
        for c in checkpoints {
            for m in c["metrics"].as_array().unwrap() {
                assert!(m["value"].as_f64().is_some_and(f64::is_finite), "{m}");
            }
        }
    }
}

/// `ckpt score` through the binary gives transformers' totals (reference.json).
#[test]
fn score_matches_the_transformers_totals() {
    let sb = runs();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(arch_fixture("reference.json")).unwrap()).unwrap();
    for (name, _) in ARCHS {
        let report = sb.run_json([
            "score",
            &format!("runs/{name}/step-1"),
            "--text",
            "texts.jsonl",
            "--max-length",
            "64",
            "--json",
        ]);
        let ours = report["aggregate"]["loglikelihood"]
            .as_f64()
            .unwrap_or_else(|| panic!("{report}"));
        let theirs: f64 = reference["models"][name]["f32"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["total_logprob"].as_f64().unwrap())
            .sum();
        assert!(
            (ours - theirs).abs() < 1e-2,
            "{name}: {ours} vs transformers {theirs}"
        );
    }
}

/// Hutchinson traces from finite-difference and from exact (double-backward)
/// Hessian-vector products agree on every architecture, probe for probe.
#[test]
fn sharpness_by_finite_differences_matches_double_backward() {
    let sb = runs();
    let probes = |method: &str| -> Vec<(String, Vec<f64>)> {
        let store = format!("{method}.sqlite");
        let extra = ["--method", method, "--store", &store];
        let report = sb.run_json(common::small_sharpness(&["runs"], 3, 1, &extra));
        let rows = report.as_array().unwrap_or_else(|| panic!("{report}"));
        rows.iter()
            .map(|r| {
                let samples = r["samples"].as_array().unwrap_or_else(|| panic!("{r}"));
                let values = samples.iter().map(|v| v.as_f64().unwrap()).collect();
                (r["checkpoint"].as_str().unwrap().to_string(), values)
            })
            .collect()
    };
    let (fd, exact) = (probes("fd"), probes("exact"));
    assert_eq!(fd.len(), ARCHS.len());
    for ((path, a), (other, b)) in fd.iter().zip(&exact) {
        assert_eq!(path, other);
        for (x, y) in a.iter().zip(b) {
            // f32 finite differences (eps 3e-5) against exact f32 double backward.
            assert!(
                (x - y).abs() <= 1e-2 * y.abs().max(1.0),
                "{path}: fd {x} vs exact {y}"
            );
        }
    }
}

/// Merging two copies of a checkpoint gives it back: the same fingerprint.
#[test]
fn merge_of_copies_is_the_checkpoint_itself() {
    let sb = runs();
    for (name, _) in ARCHS {
        let run = sb.path().join(format!("runs/{name}"));
        common::copy_dir(&run.join("step-1"), &run.join("step-2"));
        let out = format!("merged-{name}");
        ok(&sb.run(["merge", arg(&run), "--weights", "0.5,0.5", "--out", &out]));
        let fingerprint = |dir: &str| {
            let r = sb.run_json(["inspect", dir, "--json"]);
            r[0]["fingerprint"].as_str().unwrap().to_string()
        };
        assert_eq!(
            fingerprint(&out),
            fingerprint(&format!("runs/{name}/step-1")),
            "{name}"
        );
    }
}

/// The model card of a release names the architecture.
#[test]
fn release_card_names_the_architecture() {
    let sb = runs();
    for (name, architecture) in ARCHS {
        let dir = format!("release-{name}");
        ok(&sb.run([
            "release",
            &format!("runs/{name}/step-1"),
            "--repo",
            "org/tiny",
            "--allow-unknown-schedule",
            "--dry-run",
            &dir,
        ]));
        let card = std::fs::read_to_string(sb.path().join(&dir).join("README.md")).unwrap();
        assert!(card.contains(architecture), "{name}: card\n{card}");
    }
}

fn serve(sb: &Sandbox, ckpt: &Path) -> (common::Served, String) {
    // The reference prompts start with BOS, which this tokenizer does not add.
    let served = sb.serve([arg(ckpt), "--add-bos-token", "true"]);
    let url = served.url.clone();
    (served, url)
}

/// `ckpt serve` answers a greedy completion with transformers' greedy tokens.
#[test]
fn serve_completes_greedily_as_transformers_does() {
    let sb = runs();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(arch_fixture("reference.json")).unwrap()).unwrap();
    for name in ["gpt_neox_parallel", "olmo3", "gemma2", "smollm3"] {
        let (_server, url) = serve(&sb, &sb.path().join(format!("runs/{name}/step-1")));
        let greedy = &reference["models"][name]["greedy"][0];
        let model = format!("{name}/step-1");
        let body = json!({
            "model": model,
            "prompt": greedy["prompt"],
            "max_tokens": 4,
            "temperature": 0,
        });
        let r: Value = reqwest::blocking::Client::new()
            .post(format!("{url}/completions"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let text = r["choices"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        assert_eq!(r["usage"]["completion_tokens"], 4, "{name}: {r}");
        let dir = arch_fixture(name);
        let tokenizer = ckpt::tokenizer::TextTokenizer::load(&dir, None, Some(0), Some(1)).unwrap();
        let ids: Vec<u32> = greedy["new_ids"].as_array().unwrap()[..4]
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(text, tokenizer.decode(&ids).unwrap(), "{name}: {r}");
    }
}

/// `ckpt train` from scratch with `model.arch` set: every architecture trains, its
/// loss falls, and the checkpoint reads back as that architecture.
#[test]
fn train_from_scratch_on_every_architecture() {
    let sb = Sandbox::new();
    sb.small_world();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tiny-wso.toml");
    for arch in [
        "mistral", "qwen2", "gpt_neox", "olmo2", "olmo3", "qwen3", "gemma2", "gemma3", "smollm3",
    ] {
        let mut args: Vec<String> = vec!["train".into(), arg(&recipe).into()];
        let kv = if arch == "gpt_neox" { "4" } else { "2" };
        for set in [
            format!("job.name={arch}"),
            format!("model.arch={arch}"),
            format!("model.num_key_value_heads={kv}"),
            "model.hidden_size=32".into(),
            "model.intermediate_size=64".into(),
            "model.num_hidden_layers=2".into(),
            "tokenizer.train_vocab_size=320".into(),
            "training.seq_len=32".into(),
            "training.batch_tokens=512".into(),
            "schedule.warmup=4".into(),
            "schedule.total_steps=16".into(),
            "training.checkpoint_every=16".into(),
        ] {
            args.extend(["--set".into(), set]);
        }
        ok(&sb.run(&args));
        let run = sb.path().join("runs").join(arch);
        let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert_eq!(losses.len(), 16, "{arch}");
        assert!(losses[15] < losses[0] - 0.5, "{arch}: loss {losses:?}");
        let inspected = sb.run_json(["inspect", arg(&run), "--json"]);
        let architecture =
            ckpt::model::ModelConfig::from_file(&run.join("step-0000016").join("config.json"))
                .unwrap()
                .arch
                .architecture();
        assert_eq!(inspected[0]["architecture"], architecture, "{inspected}");
    }
}

/// A config that contradicts its weights is one error line naming the tensor and the
/// config keys behind it, for `inspect` and for every command that loads the model.
#[test]
fn configs_that_contradict_the_weights_name_the_tensor_and_the_key() {
    let sb = Sandbox::new();
    let cases: [(&str, &str, Value, &str, &str); 4] = [
        // OLMo 2's weights read as Llama: Llama's pre-attention norm is not there.
        (
            "olmo2",
            "architectures",
            json!(["LlamaForCausalLM"]),
            "input_layernorm",
            "LlamaForCausalLM",
        ),
        (
            "gpt_neox_parallel",
            "vocab_size",
            json!(400),
            "gpt_neox.embed_in.weight",
            "vocab_size",
        ),
        (
            "qwen3",
            "tie_word_embeddings",
            json!(false),
            "lm_head.weight",
            "tie_word_embeddings",
        ),
        (
            "gemma2",
            "intermediate_size",
            json!(48),
            "mlp.",
            "intermediate_size",
        ),
    ];
    for (i, (fixture, key, value, tensor, named)) in cases.into_iter().enumerate() {
        let dir = sb.path().join(format!("bad-{i}"));
        common::copy_dir(&arch_fixture(fixture), &dir);
        let path = dir.join("config.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
        for command in [
            vec!["inspect", arg(&dir)],
            vec![
                "score",
                arg(&dir),
                "--text",
                arg(&arch_fixture("texts.jsonl")),
            ],
        ] {
            let out = sb.run(&command);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{command:?}: {err}");
            assert!(
                err.contains(tensor) && err.contains(named),
                "{command:?}: {err}"
            );
        }
    }
}
