//! `ckpt train` end to end on the synthetic world: the shipped tiny recipes (shrunk by
//! `--set` to test size) train, resume bit for bit, branch, mid-train and fine-tune,
//! and bad recipes fail before the first step.

mod common;

use common::{arg, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A shipped recipe.
fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("trainer")
        .join(format!("{name}.toml"))
}

use common::SMALL_RECIPE as SMALL;

/// A sandbox with a small synthetic world under `data/synth`.
fn world() -> Sandbox {
    let sb = Sandbox::new();
    sb.small_world();
    sb
}

/// `ckpt train RECIPE --set ...` (the SMALL overrides for pre-training recipes first).
fn train(sb: &Sandbox, name: &str, sets: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["train".into(), arg(&recipe(name)).into()];
    // Runs from a parent take its shape and tokenizer; SFT sizes its schedule by epochs.
    let from_parent = matches!(name, "tiny-mid" | "tiny-sft" | "tiny-wsd-branch");
    let applies = |s: &&&str| {
        let inherited = s.starts_with("model.") || s.starts_with("tokenizer.");
        !(from_parent && inherited || name == "tiny-sft" && s.starts_with("schedule."))
    };
    for set in SMALL.iter().filter(applies) {
        args.extend(["--set".into(), set.to_string()]);
    }
    for set in sets {
        args.extend(["--set".into(), set.to_string()]);
    }
    sb.run(&args)
}

fn train_ok(sb: &Sandbox, name: &str, sets: &[&str]) {
    let out = train(sb, name, sets);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn meta(ckpt: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(ckpt.join("ckpt.json")).unwrap()).unwrap()
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tiny_recipes_train_and_their_loss_goes_down() {
    let sb = world();
    let peak = 3e-3;
    for (kind, final_lr) in [
        ("wso", peak),
        ("wsd", 0.1 * peak),
        ("cosine", 0.1 * peak),
        ("linear", 0.1 * peak),
    ] {
        let name = format!("tiny-{kind}");
        train_ok(&sb, &name, &[]);
        let run = sb.path().join("runs").join(&name);
        let m = metrics(&run);
        assert_eq!(m.len(), 24, "{name}");
        let first = m[0]["loss"].as_f64().unwrap();
        let last: f64 = m[20..]
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .sum::<f64>()
            / 4.0;
        assert!(last < first - 1.0, "{name}: loss {first} -> {last}");
        // The LR each step used follows the schedule's formula.
        let lr_at = |step: usize| m[step - 1]["lr"].as_f64().unwrap();
        assert!(
            (lr_at(2) - peak * 2.0 / 4.0).abs() < 1e-15,
            "{name}: warmup"
        );
        assert!(
            (lr_at(24) - final_lr).abs() < 1e-12,
            "{name}: final LR {}",
            lr_at(24)
        );
        for step in [12, 24] {
            let ckpt = run.join(format!("step-{step:07}"));
            let meta = meta(&ckpt);
            assert_eq!(meta["step"], step as u64);
            assert_eq!(meta["stage"], "pre");
            assert_eq!(meta["schedule"]["kind"], kind);
            assert!(ckpt.join("optimizer.safetensors").is_file());
            assert!(ckpt.join("tokenizer.json").is_file());
        }
    }
    // Every checkpoint is found and readable by the rest of the toolkit.
    let listed = sb.run_json(["inspect", "runs", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 8);
}

#[test]
fn resume_is_bit_exact() {
    let sb = world();
    let straight = ["job.out=runs/straight"];
    train_ok(&sb, "tiny-wso", &straight);
    // Half the steps, then the same command with the full length resumes the run.
    train_ok(
        &sb,
        "tiny-wso",
        &["job.out=runs/split", "training.steps=12"],
    );
    assert!(!sb.path().join("runs/split/step-0000024").exists());
    train_ok(&sb, "tiny-wso", &["job.out=runs/split"]);
    let (a, b) = (
        sb.path().join("runs/straight"),
        sb.path().join("runs/split"),
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (x, y) = (
            a.join("step-0000024").join(file),
            b.join("step-0000024").join(file),
        );
        assert!(bytes(&x) == bytes(&y), "{file} differs after resuming");
    }
    assert_eq!(
        meta(&a.join("step-0000024"))["data_position"],
        meta(&b.join("step-0000024"))["data_position"]
    );
    let losses =
        |run: &Path| -> Vec<Value> { metrics(run).iter().map(|m| m["loss"].clone()).collect() };
    assert_eq!(losses(&a), losses(&b));
    // Resuming a run directory with another recipe is refused.
    let out = train(
        &sb,
        "tiny-wso",
        &["job.out=runs/split", "schedule.peak_lr=1e-3"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("schedule.peak_lr"),
        "{err}"
    );
}

#[test]
fn a_branched_decay_shares_the_stable_phase() {
    let sb = world();
    train_ok(&sb, "tiny-wso", &["training.checkpoint_every=6"]);
    // Branch at step 12 into a decay over the last 6 of 24 steps.
    train_ok(
        &sb,
        "tiny-wsd-branch",
        &[
            "init.parent=runs/tiny-wso/step-0000012",
            "schedule.decay_steps=6",
            "training.checkpoint_every=6",
        ],
    );
    let (wso, branch) = (
        sb.path().join("runs/tiny-wso"),
        sb.path().join("runs/tiny-wsd-branch"),
    );
    // Steps 13..18 run at the peak in both: the same weights, bit for bit.
    let weights =
        |run: &Path, step: u64| bytes(&run.join(format!("step-{step:07}/model.safetensors")));
    assert!(
        weights(&wso, 18) == weights(&branch, 18),
        "the stable phase differs"
    );
    assert!(
        weights(&wso, 24) != weights(&branch, 24),
        "the decay changed nothing"
    );
    let m = meta(&branch.join("step-0000024"));
    assert_eq!(m["schedule"]["branched_from_step"], 12);
    assert_eq!(m["parent"]["step"], 12);
    assert_eq!(m["lr"], 0.0);
    assert_eq!(metrics(&branch).first().unwrap()["step"], 13);
    // A parent inside the decay is refused.
    let out = train(
        &sb,
        "tiny-wsd-branch",
        &[
            "init.parent=runs/tiny-wso/step-0000024",
            "schedule.decay_steps=6",
            "job.out=runs/late",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("stable phase"),
        "{err}"
    );
}

#[test]
fn mid_training_and_sft_continue_from_a_parent() {
    let sb = world();
    train_ok(&sb, "tiny-wso", &[]);
    train_ok(
        &sb,
        "tiny-mid",
        &[
            "init.parent=runs/tiny-wso/step-0000024",
            "schedule.mid_steps=8",
            "training.checkpoint_every=4",
        ],
    );
    let mid = sb.path().join("runs/tiny-wso-mid");
    let m = metrics(&mid);
    assert_eq!(
        (m[0]["step"].as_u64(), m.last().unwrap()["step"].as_u64()),
        (Some(25), Some(32))
    );
    // LR(t) = LR_pre(T) * ((T + M - t) / M) with alpha_mid = 0.
    assert!((m[3]["lr"].as_f64().unwrap() - 3e-3 * 4.0 / 8.0).abs() < 1e-15);
    let last = meta(&mid.join("step-0000032"));
    assert_eq!(
        (last["stage"].as_str(), last["lr"].as_f64()),
        (Some("mid"), Some(0.0))
    );
    assert_eq!(last["parent"]["step"], 24);
    assert_eq!(last["schedule"]["alpha_mid"], 0.0);

    train_ok(
        &sb,
        "tiny-sft",
        &[
            "init.parent=runs/tiny-wso-mid/step-0000032",
            "training.batch_tokens=512",
            "schedule.warmup=2",
        ],
    );
    let sft = sb.path().join("runs/tiny-wso-sft");
    let m = metrics(&sft);
    // One epoch of the conversations that fit in 33 tokens, 16 per step; the LR ends at 0.
    let steps = m.len() as u64;
    let last = meta(&sft.join(format!("step-{steps:07}")));
    let kept = last["data_position"]["data"]["num_items"].as_u64().unwrap();
    assert!(kept > 16 && kept <= 120, "{kept}");
    assert_eq!(steps, kept.div_ceil(16));
    assert_eq!(last["schedule"]["total_steps"], steps);
    assert_eq!(m.last().unwrap()["lr"], 0.0);
    assert_eq!(last["stage"], "sft");
    assert_eq!(last["parent"]["step"], 32);
    assert!(m.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()));
}

#[test]
fn bad_recipes_fail_before_any_step() {
    let sb = world();
    for (sets, expected) in [
        (vec!["training.stepz=3"], "stepz"),
        (vec!["schedule.warmup=100"], "schedule.warmup"),
        (vec!["schedule.alpha=1.5"], "schedule.alpha"),
        (vec!["training.batch_tokens=500"], "training.batch_tokens"),
        (vec!["data.paths=[\"data/none.jsonl\"]"], "data/none.jsonl"),
        (vec!["data.text_column=\"body\""], "body"),
        (vec!["job.stage=\"mid\""], "init.parent"),
    ] {
        let out = train(&sb, "tiny-wsd", &sets);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sets:?}: {err}");
        assert!(err.contains(expected), "{sets:?}: {err}");
        assert!(err.lines().count() == 1, "{sets:?}: not one line: {err}");
        assert!(!sb.path().join("runs/tiny-wsd/step-0000012").exists());
    }
}

#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let sb = world();
    let out = train(
        &sb,
        "tiny-wso",
        &[
            "schedule.peak_lr=1e4",
            "schedule.warmup=0",
            "optimizer.grad_clip=0",
            "training.checkpoint_every=1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("last good checkpoint") || err.contains("no checkpoint was written"),
        "{err}"
    );
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    let run = sb.path().join("runs/tiny-wso");
    let kept: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .collect();
    for ckpt in &kept {
        let m = meta(&ckpt.path());
        assert!(m["train_loss"].as_f64().unwrap().is_finite());
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_the_run_resumes() {
    let sb = world();
    let mut args: Vec<String> = vec!["train".into(), arg(&recipe("tiny-wso")).into()];
    for set in SMALL.iter().chain(&[
        "training.checkpoint_every=1000",
        "training.steps=1000",
        "schedule.total_steps=1000",
    ]) {
        args.extend(["--set".into(), set.to_string()]);
    }
    let bin = assert_cmd::cargo::cargo_bin("ckpt");
    let child = std::process::Command::new(bin)
        .current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics_path = sb.path().join("runs/tiny-wso/metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metrics_path.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "training never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let saved: Vec<PathBuf> = std::fs::read_dir(sb.path().join("runs/tiny-wso"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    assert_eq!(saved.len(), 1, "{err}");
    let step = meta(&saved[0])["step"].as_u64().unwrap();
    assert!((1..1000).contains(&step));
    assert_eq!(metrics(&sb.path().join("runs/tiny-wso")).len() as u64, step);
}

#[test]
fn bf16_compute_keeps_f32_master_weights() {
    let sb = world();
    train_ok(&sb, "tiny-wso", &["job.dtype=\"bf16\""]);
    let run = sb.path().join("runs/tiny-wso");
    let m = metrics(&run);
    let (first, last) = (
        m[0]["loss"].as_f64().unwrap(),
        m[23]["loss"].as_f64().unwrap(),
    );
    assert!(last < first - 1.0, "bf16 loss {first} -> {last}");
    let listed = sb.run_json(["inspect", arg(&run.join("step-0000024")), "--json"]);
    assert_eq!(listed[0]["dtype"], "f32", "{listed}");
}

#[test]
fn resume_from_a_run_directory_alone_uses_its_run_toml() {
    let sb = world();
    train_ok(&sb, "tiny-wso", &["training.steps=12"]);
    // run.toml holds the resolved recipe (steps = 12): the run is complete.
    let out = sb.run([
        "train",
        "--resume",
        "runs/tiny-wso",
        "--set",
        "training.steps=24",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(&sb.path().join("runs/tiny-wso"));
    assert_eq!((m[0]["step"].as_u64(), m.len()), (Some(1), 24));
    let out = sb.run(["train", "--resume", "runs/nothing"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run.toml"), "{err}");
}

#[test]
fn training_on_pre_tokenized_shards_equals_training_on_text() {
    let sb = world();
    train_ok(&sb, "tiny-wso", &["training.steps=6", "job.out=runs/text"]);
    let out = sb.run([
        "tokenize",
        "data/synth/pretrain.jsonl",
        "--tokenizer",
        "runs/text",
        "--out",
        "shards",
        "--shard-tokens",
        "5000",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["summary"]["shards"].as_array().unwrap().len() > 2);
    // The same run from the shards, with the first run's tokenizer.
    let text = std::fs::read_to_string(recipe("tiny-wso")).unwrap();
    let own = text.replace("train_vocab_size = 1024", "path = \"runs/text\"");
    let own = sb.write("from-shards.toml", own);
    let mut args: Vec<String> = vec!["train".into(), arg(&own).into()];
    let sets = SMALL
        .iter()
        .filter(|s| !s.starts_with("tokenizer."))
        .chain(&[
            "data.paths=[\"shards\"]",
            "training.steps=6",
            "job.out=runs/shards",
        ]);
    for set in sets {
        args.extend(["--set".into(), set.to_string()]);
    }
    let out = sb.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (text, shards) = (sb.path().join("runs/text"), sb.path().join("runs/shards"));
    let losses =
        |run: &Path| -> Vec<Value> { metrics(run).iter().map(|m| m["loss"].clone()).collect() };
    assert_eq!(losses(&text), losses(&shards));
    let weights = |run: &Path| bytes(&run.join("step-0000006/model.safetensors"));
    assert!(
        weights(&text) == weights(&shards),
        "shards trained differently"
    );
}

/// A ChatML template written for these tests (the layout Qwen and SmolLM ship).
const CHATML: &str = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A copy of the trained tiny base with its own ChatML template, in its
/// `tokenizer_config.json` or (as transformers 5 saves it) in `chat_template.jinja`.
fn chatml_base(sb: &Sandbox, in_file: bool) -> PathBuf {
    let base = sb.path().join(if in_file {
        "bases/jinja"
    } else {
        "bases/config"
    });
    common::copy_dir(&common::fixture_in("trained", "tiny-wso"), &base);
    let cfg_path = base.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&bytes(&cfg_path)).unwrap();
    if in_file {
        cfg.as_object_mut().unwrap().remove("chat_template");
        std::fs::write(base.join("chat_template.jinja"), CHATML).unwrap();
    } else {
        cfg["chat_template"] = CHATML.into();
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    base
}

/// `tiny-sft` from `parent` into `runs/<out>`; the last checkpoint.
fn sft_from(sb: &Sandbox, parent: &Path, out: &str, sets: &[&str]) -> std::process::Output {
    let mut all = vec![
        format!("init.parent={}", arg(parent)),
        format!("job.out=runs/{out}"),
        "training.seq_len=64".into(),
        "training.batch_tokens=512".into(),
        "schedule.warmup=1".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    train(sb, "tiny-sft", &refs)
}

fn last_checkpoint(run: &Path) -> PathBuf {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    steps.sort();
    steps.pop().expect("a checkpoint")
}

#[test]
fn sft_keeps_the_parents_own_chat_template_and_serve_uses_it() {
    use ckpt::chat::ChatPrompt;
    let sb = world();
    for in_file in [false, true] {
        let base = chatml_base(&sb, in_file);
        let out = if in_file { "sft-jinja" } else { "sft-config" };
        let o = sft_from(&sb, &base, out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ft = last_checkpoint(&sb.path().join("runs").join(out));
        // The template is carried unchanged, where the parent kept it.
        let cfg: Value = serde_json::from_slice(&bytes(&ft.join("tokenizer_config.json"))).unwrap();
        if in_file {
            assert_eq!(bytes(&ft.join("chat_template.jinja")), CHATML.as_bytes());
            assert!(cfg.get("chat_template").is_none(), "{cfg}");
        } else {
            assert_eq!(cfg["chat_template"], CHATML);
            assert!(!ft.join("chat_template.jinja").exists());
        }
        let recorded = meta(&ft)["chat_template"].as_str().unwrap().to_string();
        assert!(recorded.starts_with("own ("), "{recorded}");
        // The fine-tune renders what the parent renders: ChatML, not Tulu.
        let turn = ChatPrompt::for_checkpoint(&ft)
            .unwrap()
            .user_turn("Hi?")
            .unwrap();
        assert_eq!(
            turn,
            ChatPrompt::for_checkpoint(&base)
                .unwrap()
                .user_turn("Hi?")
                .unwrap()
        );
        assert_eq!(
            turn,
            "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    // `ckpt serve` on the fine-tune prompts with that template.
    let ft = last_checkpoint(&sb.path().join("runs/sft-jinja"));
    let ckpt = ckpt::checkpoint::Checkpoint::open(&ft).unwrap();
    let served = ckpt::serve::Served::load(
        &ckpt,
        "ft",
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        Default::default(),
    )
    .unwrap();
    let body = serde_json::json!({
        "model": "ft",
        "messages": [{"role": "user", "content": "Hi?"}],
        "max_tokens": 1
    });
    use ckpt::serve::Handler;
    let (status, reply) = served.handle(
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
        &ckpt::serve::Events::none(),
    );
    assert_eq!(status, 200, "{reply}");
    let chatml_tokens = served
        .tokenizer
        .encode("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n")
        .unwrap()
        .len();
    assert_eq!(reply["usage"]["prompt_tokens"], chatml_tokens);
}

#[test]
fn sft_template_overrides_and_bad_templates() {
    let sb = world();
    let base = chatml_base(&sb, true);
    // data.chat_template = "tulu" replaces the parent's own, file included.
    let o = sft_from(&sb, &base, "sft-tulu", &["data.chat_template=\"tulu\""]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ft = last_checkpoint(&sb.path().join("runs/sft-tulu"));
    let cfg: Value = serde_json::from_slice(&bytes(&ft.join("tokenizer_config.json"))).unwrap();
    assert_eq!(cfg["chat_template"], ckpt::chat::TULU_CHAT_TEMPLATE);
    assert!(!ft.join("chat_template.jinja").exists());
    assert_eq!(meta(&ft)["chat_template"], "tulu");

    // A template that renders none of the assistant's text: the file and line are named.
    let drop = sb.write(
        "templates/drop.jinja",
        "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}\n{% endif %}{% endfor %}",
    );
    let o = sft_from(
        &sb,
        &base,
        "sft-drop",
        &[&format!("data.chat_template=\"{}\"", arg(&drop))],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("sft.jsonl") && err.contains("line 1") && err.contains("no assistant text"),
        "{err}"
    );
    // A template that raises: its message and the data file.
    let raise = sb.write(
        "templates/raise.jinja",
        "{{ raise_exception('only user turns, please') }}",
    );
    let o = sft_from(
        &sb,
        &base,
        "sft-raise",
        &[&format!("data.chat_template=\"{}\"", arg(&raise))],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("only user turns, please") && err.contains("raise.jinja"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
