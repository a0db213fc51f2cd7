//! Bad input through the real binary. The product rule: a ONE-LINE error on stderr,
//! starting with `error:`, that names the offending file and says what is wrong; exit
//! code 1; never a panic. (Usage errors are clap's: exit code 2.)

mod common;

use common::bad_input::{assert_bad_input, assert_clean, run};
use common::{arg, texts_jsonl, Sandbox};
use serde_json::{Map, Value};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

// ----- ways to break a checkpoint copy -----

/// Rewrites `dir/config.json` through `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

/// Overwrites the bytes of `path` at `offset` with `bytes`.
fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// A copy of `llama_gqa` and the path of its `model.safetensors`.
fn gqa_copy(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let dir = sb.copy_fixture("llama_gqa");
    let weights = dir.join("model.safetensors");
    (dir, weights)
}

/// `ckpt score DIR --text texts.jsonl`.
fn score(sb: &Sandbox, dir: &Path) -> Output {
    run(sb, &["score", arg(dir), "--text", arg(&texts_jsonl())])
}

/// `ckpt score <llama_gqa copy> --text TEXT`.
fn score_text(sb: &Sandbox, text: &Path) -> Output {
    let dir = sb.copy_fixture("llama_gqa");
    run(sb, &["score", arg(&dir), "--text", arg(text)])
}

fn inspect(sb: &Sandbox, dir: &Path) -> Output {
    run(sb, &["inspect", arg(dir)])
}

const NOT_FOUND: &[&str] = &[
    "no such",
    "not found",
    "missing",
    "does not exist",
    "no model.safetensors",
];

// ----- weights -----

#[test]
fn score_without_model_safetensors() {
    let sb = Sandbox::new();
    let (dir, weights) = gqa_copy(&sb);
    std::fs::remove_file(weights).unwrap();
    assert_bad_input(
        score(&sb, &dir),
        &["llama_gqa", "model.safetensors"],
        NOT_FOUND,
    );
}

#[test]
fn inspect_without_model_safetensors() {
    let sb = Sandbox::new();
    let (dir, weights) = gqa_copy(&sb);
    std::fs::remove_file(weights).unwrap();
    assert_bad_input(
        inspect(&sb, &dir),
        &["llama_gqa", "model.safetensors"],
        NOT_FOUND,
    );
}

#[test]
fn truncated_model_safetensors() {
    let sb = Sandbox::new();
    let (dir, weights) = gqa_copy(&sb);
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let problem = &["truncated", "incomplete", "too short"];
    assert_bad_input(score(&sb, &dir), &["model.safetensors"], problem);
    assert_bad_input(inspect(&sb, &dir), &["model.safetensors"], problem);
}

#[test]
fn corrupt_safetensors_header_length() {
    let sb = Sandbox::new();
    let (dir, weights) = gqa_copy(&sb);
    overwrite(&weights, 0, &[0xff; 8]);
    let problem = &["corrupt", "not a valid safetensors", "header"];
    assert_bad_input(score(&sb, &dir), &["model.safetensors"], problem);
    assert_bad_input(inspect(&sb, &dir), &["model.safetensors"], problem);
}

#[test]
fn garbage_safetensors_json_header() {
    let sb = Sandbox::new();
    let (dir, weights) = gqa_copy(&sb);
    overwrite(&weights, 8, b"garbage! not JSON");
    let problem = &["corrupt", "not a valid safetensors", "invalid json"];
    assert_bad_input(score(&sb, &dir), &["model.safetensors"], problem);
    assert_bad_input(inspect(&sb, &dir), &["model.safetensors"], problem);
}

#[test]
fn tensor_of_the_wrong_shape() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    // The MLP weights are stored as [64, 32] / [32, 64]; the config now implies 48.
    edit_config(&dir, |cfg| {
        cfg.insert("intermediate_size".into(), 48.into());
    });
    let line = assert_bad_input(
        score(&sb, &dir),
        &["model.safetensors", ".mlp."],
        &["shape"],
    );
    assert!(
        line.contains("_proj.weight"),
        "must name the tensor: {line}"
    );
}

#[test]
fn tensor_missing_from_model_safetensors() {
    let sb = Sandbox::new();
    let (_, weights) = gqa_copy(&sb);
    // Rename the tensor in the JSON header (same length: the file stays valid).
    let bytes = std::fs::read(&weights).unwrap();
    let name = b"model.layers.0.mlp.gate_proj.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    overwrite(&weights, at as u64, b"model.layers.0.mlp.gatX_proj.weight");
    let dir = weights.parent().unwrap();
    let line = assert_bad_input(
        score(&sb, dir),
        &["model.safetensors"],
        &["missing", "no tensor"],
    );
    assert!(
        line.contains("model.layers.0.mlp.gate_proj.weight"),
        "must name the tensor: {line}"
    );
}

#[test]
fn sharded_checkpoint_with_a_missing_shard() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("mistral_sharded");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let must = &["model-00002-of-00002.safetensors"];
    assert_bad_input(score(&sb, &dir), must, NOT_FOUND);
    assert_bad_input(inspect(&sb, &dir), must, NOT_FOUND);
}

// ----- config.json -----

#[test]
fn config_missing_a_required_field() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    edit_config(&dir, |cfg| {
        cfg.remove("hidden_size");
    });
    assert_bad_input(
        score(&sb, &dir),
        &["config.json", "hidden_size"],
        &["missing"],
    );
}

#[test]
fn config_with_an_unsupported_architecture() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    edit_config(&dir, |cfg| {
        cfg.insert(
            "architectures".into(),
            serde_json::json!(["GPT2LMHeadModel"]),
        );
        cfg.insert("model_type".into(), "gpt2".into());
    });
    let must = &["config.json", "GPT2LMHeadModel"];
    assert_bad_input(score(&sb, &dir), must, &["unsupported", "not supported"]);
    assert_bad_input(inspect(&sb, &dir), must, &["unsupported", "not supported"]);
}

#[test]
fn config_with_an_unsupported_model_type_only() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    edit_config(&dir, |cfg| {
        cfg.remove("architectures");
        cfg.insert("model_type".into(), "gpt2".into());
    });
    assert_bad_input(
        score(&sb, &dir),
        &["config.json", "gpt2"],
        &["unsupported", "not supported"],
    );
}

#[test]
fn config_not_valid_json() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\",\n").unwrap();
    assert_bad_input(
        score(&sb, &dir),
        &["config.json"],
        &["invalid json", "parse"],
    );
    assert_bad_input(
        inspect(&sb, &dir),
        &["config.json"],
        &["invalid json", "parse"],
    );
}

// ----- ckpt.json -----

#[test]
fn sidecar_without_step() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    std::fs::write(dir.join("ckpt.json"), r#"{"stage": "pre"}"#).unwrap();
    assert_bad_input(inspect(&sb, &dir), &["ckpt.json", "step"], &["missing"]);
    assert_bad_input(score(&sb, &dir), &["ckpt.json", "step"], &["missing"]);
}

// ----- tokenizer -----

#[test]
fn score_without_tokenizer_json() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_bad_input(score(&sb, &dir), &["tokenizer.json"], NOT_FOUND);
}

#[test]
fn tokenizer_of_another_model() {
    // A tokenizer with a token past the model's 360-entry vocabulary.
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    let path = dir.join("tokenizer.json");
    let mut tok: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tok["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 400, "content": "<zq>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false
        }));
    std::fs::write(&path, serde_json::to_vec(&tok).unwrap()).unwrap();
    let text = sb.write("texts.txt", "some words <zq> more\n");
    let out = run(&sb, &["score", arg(&dir), "--text", arg(&text)]);
    assert_bad_input(out, &["tokenizer.json", "outside"], &["vocabulary"]);
}

// ----- texts -----

#[test]
fn empty_text_file() {
    let sb = Sandbox::new();
    let text = sb.write("texts.txt", "");
    assert_bad_input(
        score_text(&sb, &text),
        &["texts.txt"],
        &["no text", "empty"],
    );
}

#[test]
fn whitespace_only_text_file() {
    let sb = Sandbox::new();
    let text = sb.write("texts.txt", " \n\t\n   \n");
    assert_bad_input(
        score_text(&sb, &text),
        &["texts.txt"],
        &["no text", "empty"],
    );
}

#[test]
fn non_utf8_text_file() {
    let sb = Sandbox::new();
    let text = sb.write("texts.txt", b"fine first line\nbad \xff byte\n");
    assert_bad_input(
        score_text(&sb, &text),
        &["texts.txt", "line 2"],
        &["utf-8", "utf8"],
    );
}

#[test]
fn jsonl_record_without_text() {
    let sb = Sandbox::new();
    let text = sb.write(
        "texts.jsonl",
        "{\"text\": \"ok\"}\n{\"content\": \"no text field\"}\n",
    );
    let line = assert_bad_input(
        score_text(&sb, &text),
        &["texts.jsonl", "line 2"],
        &["\"text\""],
    );
    assert!(line.contains("no ") || line.contains("missing"), "{line}");
}

#[test]
fn jsonl_with_invalid_json() {
    let sb = Sandbox::new();
    let text = sb.write(
        "texts.jsonl",
        "{\"text\": \"ok\"}\n{\"text\": \"unterminated\n",
    );
    assert_bad_input(
        score_text(&sb, &text),
        &["texts.jsonl", "line 2"],
        &["invalid json"],
    );
}

// ----- paths -----

#[test]
fn nonexistent_checkpoint_path() {
    let sb = Sandbox::new();
    let missing = sb.path().join("does-not-exist");
    assert_bad_input(score(&sb, &missing), &["does-not-exist"], NOT_FOUND);
    assert_bad_input(inspect(&sb, &missing), &["does-not-exist"], NOT_FOUND);
}

#[test]
fn nonexistent_text_file() {
    let sb = Sandbox::new();
    let missing = sb.path().join("missing.txt");
    assert_bad_input(
        score_text(&sb, &missing),
        &["missing.txt"],
        &["no such", "not found"],
    );
}

// ----- flags -----

/// `ckpt score <llama_gqa copy> --text texts.jsonl FLAG VALUE`.
fn score_with_flag(sb: &Sandbox, flag: &str, value: &str) -> Output {
    let (dir, _) = gqa_copy(sb);
    let text = texts_jsonl();
    run(sb, &["score", arg(&dir), "--text", arg(&text), flag, value])
}

#[test]
fn bad_device() {
    let sb = Sandbox::new();
    let out = score_with_flag(&sb, "--device", "tpu");
    assert_bad_input(out, &["tpu"], &["invalid device", "unknown device"]);
}

#[test]
fn bad_dtype() {
    let sb = Sandbox::new();
    let out = score_with_flag(&sb, "--dtype", "int8");
    assert_bad_input(out, &["int8"], &["invalid dtype", "unknown dtype"]);
}

#[test]
fn missing_required_text_flag_is_a_usage_error() {
    let sb = Sandbox::new();
    let (dir, _) = gqa_copy(&sb);
    let out = run(&sb, &["score", arg(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // clap's usage errors: exit code 2 and a usage hint (several lines, by design).
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error:") && stderr.contains("--text"),
        "{stderr}"
    );
    assert_clean(&stderr);
}

/// A tokenizer-kind fixture of `tests/fixtures/tokenizers`, in place (read only).
fn tokenizer_kind(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizers")
        .join(kind)
}

#[test]
fn add_bos_token_flags_are_checked_and_contradictions_warned() {
    let sb = Sandbox::new();
    let text = sb.write("t.txt", "The cat sat on the mat.\n");
    let llama3 = tokenizer_kind("llama3_bytelevel_bos");
    // Not a value of the flag: clap's usage error.
    let out = run(
        &sb,
        &[
            "score",
            arg(&llama3),
            "--text",
            arg(&text),
            "--add-bos-token",
            "maybe",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--add-bos-token"));
    // A prefix token outside the vocabulary.
    let out = run(
        &sb,
        &[
            "score",
            arg(&llama3),
            "--text",
            arg(&text),
            "--prefix-token-id",
            "99999",
        ],
    );
    assert_bad_input(out, &["--prefix-token-id", "99999"], &["outside"]);
    // Turning BOS off on a tokenizer that adds it works, with a warning saying so.
    let out = run(
        &sb,
        &[
            "score",
            arg(&llama3),
            "--text",
            arg(&text),
            "--add-bos-token",
            "false",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("adds special tokens by default") && stderr.contains("without them"),
        "{stderr}"
    );
    // Asking for BOS on a tokenizer without one says that nothing is added.
    let gpt2 = tokenizer_kind("gpt2_no_bos");
    let dir = sb.path().join("nobos");
    common::copy_dir(&gpt2, &dir);
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        edit_json(&dir.join(file), |c| {
            c.remove("bos_token");
        });
    }
    let out = run(
        &sb,
        &[
            "score",
            arg(&dir),
            "--text",
            arg(&text),
            "--add-bos-token",
            "true",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no BOS token: nothing is added"),
        "{stderr}"
    );
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let mut v: Map<String, Value> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn a_chat_template_that_does_not_compile_is_named() {
    let sb = Sandbox::new();
    let dir = sb.path().join("ckpt");
    common::copy_dir(&tokenizer_kind("gpt2_no_bos"), &dir);
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}{{ m.content }}",
    )
    .unwrap();
    let out = run(&sb, &["serve", arg(&dir), "--port", "0"]);
    assert_bad_input(
        out,
        &["chat_template.jinja"],
        &["chat template", "syntax", "endfor"],
    );
}
