//! PyTorch `.bin` weights (fixtures made by scripts/make_bin_fixtures.py from the parity
//! fixtures): they load, score and fingerprint exactly as the safetensors they were
//! written from, and broken ones are one-line errors naming the file, never panics.

mod common;

use candle_core::{DType, Device};
use ckpt::checkpoint::{
    discover, hash_weights, is_checkpoint_dir, validate_shapes, weight_index, weight_paths,
    Checkpoint, WeightFiles,
};
use ckpt::score::{score_texts, ScoreOptions};
use ckpt::tokenizer::TextTokenizer;
use common::bad_input::{assert_bad_input, run};
use common::{arg, copy_dir, fixture, fixture_in, parity_texts, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn bin_fixture(name: &str) -> PathBuf {
    fixture_in("bin", name)
}

/// Every token's log-probability of the parity texts, in f32.
fn token_logprobs(dir: &Path) -> Vec<Vec<f32>> {
    let ckpt = Checkpoint::open(dir).unwrap();
    let cfg = ckpt.config().unwrap();
    let tokenizer =
        TextTokenizer::load(&ckpt.dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
    let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
    let opts = ScoreOptions {
        max_length: Some(64),
        keep_token_logprobs: true,
        ..Default::default()
    };
    let report = score_texts(&model, &tokenizer, &parity_texts(), &opts, &|_| {}).unwrap();
    report
        .texts
        .into_iter()
        .map(|t| t.token_logprobs.unwrap())
        .collect()
}

fn weights(dir: &Path) -> WeightFiles {
    WeightFiles::open(dir).unwrap()
}

/// Asserts that `a` and `b` hold the same tensors, byte for byte.
#[track_caller]
fn assert_same_tensors(a: &WeightFiles, b: &WeightFiles) {
    assert_eq!(a.tensors(), b.tensors());
    for name in a.tensors().keys() {
        assert_eq!(a.raw_bytes(name), b.raw_bytes(name), "{name}");
    }
}

#[test]
fn bin_checkpoints_score_bit_identically_to_their_safetensors_original() {
    for (bin, original) in [
        ("llama_gqa_bin", "llama_gqa"),
        ("llama_gqa_bin_sharded", "llama_gqa"),
        // lm_head.weight is the embedding's storage again, and `_metadata` is skipped.
        ("llama_tied_bin", "llama_tied"),
    ] {
        let ours = token_logprobs(&bin_fixture(bin));
        let theirs = token_logprobs(&fixture(original));
        assert_eq!(ours, theirs, "{bin} vs {original}");
    }
}

#[test]
fn bin_checkpoints_keep_the_fingerprint_of_their_safetensors_original() {
    let original = weights(&fixture("llama_gqa"));
    let expected = hash_weights(&original);
    for bin in ["llama_gqa_bin", "llama_gqa_bin_sharded"] {
        let w = weights(&bin_fixture(bin));
        assert_same_tensors(&w, &original);
        assert_eq!(hash_weights(&w), expected, "{bin}");
    }
    // The tied state dict also holds lm_head.weight (transformers drops it when it
    // writes safetensors): the tensors the safetensors has are the same bytes.
    let tied = weights(&bin_fixture("llama_tied_bin"));
    let original = weights(&fixture("llama_tied"));
    for (name, stored) in original.tensors() {
        assert_eq!(tied.tensors()[&name], stored, "{name}");
        assert_eq!(tied.raw_bytes(&name), original.raw_bytes(&name), "{name}");
    }
    assert_eq!(
        tied.raw_bytes("lm_head.weight"),
        tied.raw_bytes("model.embed_tokens.weight")
    );
}

/// Pythia's intermediate revisions ship `pytorch_model.bin`: GPT-NeoX (and Gemma 2,
/// tied) as `.bin` score and fingerprint exactly as their safetensors originals.
#[test]
fn bin_checkpoints_of_other_architectures_match_their_safetensors_original() {
    for name in ["gpt_neox_parallel", "gemma2"] {
        let bin = bin_fixture(&format!("{name}_bin"));
        let original = fixture_in("arch", name);
        assert_eq!(token_logprobs(&bin), token_logprobs(&original), "{name}");
        let (w, o) = (weights(&bin), weights(&original));
        assert_same_tensors(&w, &o);
        assert_eq!(hash_weights(&w), hash_weights(&o), "{name}");
    }
}

#[test]
fn bf16_bin_weights_are_torch_roundings_of_the_f32_ones() {
    let bf16 = weights(&bin_fixture("llama_gqa_bin_bf16"));
    let f32 = weights(&fixture("llama_gqa"));
    for (name, stored) in bf16.tensors() {
        assert_eq!(stored.dtype, safetensors::Dtype::BF16, "{name}");
        // candle's f32 -> bf16 rounds to nearest even, as torch's .to(torch.bfloat16).
        let rounded = f32.load(&name, DType::BF16, &Device::Cpu).unwrap();
        let ours = bf16.load(&name, DType::BF16, &Device::Cpu).unwrap();
        let flat = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<half::bf16>();
        assert_eq!(flat(ours).unwrap(), flat(rounded).unwrap(), "{name}");
    }
    let logprobs = token_logprobs(&bin_fixture("llama_gqa_bin_bf16"));
    assert!(logprobs
        .iter()
        .flatten()
        .all(|lp| lp.is_finite() && *lp <= 0.0));
}

#[test]
fn views_and_every_dtype_read_as_torch_wrote_them() {
    let dir = bin_fixture("tensors");
    let bin = weights(&dir.join("bin"));
    let contiguous = weights(&dir.join("safetensors"));
    assert_same_tensors(&bin, &contiguous);
    assert_eq!(hash_weights(&bin), hash_weights(&contiguous));
    assert_eq!(bin.tensors().len(), 20);
    assert_eq!(bin.raw_bytes("tied.first"), bin.raw_bytes("tied.second"));
}

#[test]
fn bin_directories_are_checkpoints_and_safetensors_win() {
    for name in ["llama_gqa_bin", "llama_gqa_bin_sharded", "bad/not_a_pickle"] {
        assert!(is_checkpoint_dir(&bin_fixture(name)), "{name}");
    }
    let sharded = bin_fixture("llama_gqa_bin_sharded");
    assert_eq!(
        weight_index(&sharded),
        Some(sharded.join("pytorch_model.bin.index.json"))
    );
    assert_eq!(weight_paths(&sharded).unwrap().len(), 3);
    let found: Vec<PathBuf> = discover(&[bin_fixture("")])
        .unwrap()
        .into_iter()
        .map(|c| c.dir)
        .collect();
    assert!(found.contains(&bin_fixture("llama_gqa_bin_sharded")));
    assert!(!found.iter().any(|d| d.starts_with(bin_fixture("tensors"))));

    // Both formats: safetensors is read (here the .bin is not even valid).
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    std::fs::copy(
        bin_fixture("bad/not_a_pickle/pytorch_model.bin"),
        dir.join("pytorch_model.bin"),
    )
    .unwrap();
    let w = weights(&dir);
    assert_eq!(w.paths(), [dir.join("model.safetensors")]);
    assert_eq!(weight_index(&dir), None);
}

/// The error opening `bad/<name>`'s weights, which must name its `.bin` file.
fn open_error(name: &str, file: &str) -> String {
    let dir = bin_fixture(&format!("bad/{name}"));
    let err = match Checkpoint::open(&dir).unwrap().weights() {
        Ok(_) => panic!("{name}: opened"),
        Err(e) => e.to_string(),
    };
    let path = dir.join(file).display().to_string();
    assert!(err.starts_with(&format!("{path}: ")), "{name}: {err}");
    err
}

#[test]
fn broken_bin_files_are_errors_naming_the_file() {
    for (name, problem) in [
        ("not_a_pickle", "not a PyTorch zip archive"),
        ("truncated", "not a PyTorch zip archive"),
        (
            "non_tensor",
            "entry \"note\" is a string, not a tensor (and 1 more entry that is not a tensor)",
        ),
        (
            "runs_code",
            "entry \"hook\" is an object built by __builtin__.print, not a tensor",
        ),
        ("legacy", "torch's legacy format (torch < 1.6"),
        (
            "compressed",
            "is compressed (Deflated), but torch writes its archives uncompressed",
        ),
    ] {
        let err = open_error(name, "pytorch_model.bin");
        assert!(err.contains(problem), "{name}: {err}");
    }
    let err = open_error("missing_shard", "pytorch_model.bin.index.json");
    assert!(
        err.contains("shard pytorch_model-00003-of-00003.bin is missing"),
        "{err}"
    );
}

#[test]
fn a_wrong_shape_in_a_bin_names_the_file_and_the_tensor() {
    let dir = bin_fixture("bad/wrong_shape");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let expected = format!(
        "{}: tensor \"model.layers.0.self_attn.k_proj.weight\" has shape [32, 16] but \
         config.json implies [16, 32] through hidden_size, num_attention_heads, \
         num_key_value_heads, head_dim (architectures: LlamaForCausalLM)",
        dir.join("pytorch_model.bin").display()
    );
    let cfg = ckpt.config().unwrap();
    let err = validate_shapes(&cfg, &ckpt.weights().unwrap()).unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = ckpt.load_model(&Device::Cpu, DType::F32).err().unwrap();
    assert_eq!(err.to_string(), expected);
}

// ----- through the binary -----

fn inspect_json(sb: &Sandbox, dir: &Path) -> Value {
    let rows = sb.run_json(["inspect", "--json", arg(dir)]);
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    rows[0].clone()
}

#[test]
fn inspect_reads_bin_checkpoints_with_the_original_fingerprint() {
    let sb = Sandbox::new();
    let original = inspect_json(&sb, &fixture("llama_gqa"));
    for bin in ["llama_gqa_bin", "llama_gqa_bin_sharded"] {
        let row = inspect_json(&sb, &bin_fixture(bin));
        for key in ["fingerprint", "parameters", "dtype", "architecture"] {
            assert_eq!(row[key], original[key], "{bin}: {key}");
        }
    }
    assert_eq!(
        inspect_json(&sb, &bin_fixture("llama_gqa_bin_bf16"))["dtype"],
        "bf16"
    );
}

#[test]
fn inspect_of_a_broken_bin_is_one_error_line() {
    let sb = Sandbox::new();
    for (name, problem) in [
        ("not_a_pickle", "not a PyTorch zip archive"),
        ("non_tensor", "not a tensor"),
        ("runs_code", "__builtin__.print"),
        ("truncated", "truncated"),
        ("wrong_shape", "has shape [32, 16]"),
    ] {
        let dir = bin_fixture(&format!("bad/{name}"));
        let file = dir.join("pytorch_model.bin");
        let out = run(&sb, &["inspect", arg(&dir)]);
        assert_bad_input(out, &[&file.display().to_string()], &[problem]);
    }
}

#[test]
fn the_fingerprint_cache_covers_bin_files() {
    let sb = Sandbox::new();
    let dir = sb.path().join("bin");
    copy_dir(&bin_fixture("llama_gqa_bin"), &dir);
    let first = inspect_json(&sb, &dir)["fingerprint"].clone();

    // The cache holds the .bin file's stamp: a changed value is read back as is.
    let cache_file = sb.cache_dir().join("fingerprints.json");
    let mut cache: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    let entry = cache.as_object_mut().unwrap().values_mut().next().unwrap();
    let stamped = entry["files"][0]["path"].as_str().unwrap();
    assert!(stamped.ends_with("pytorch_model.bin"), "{stamped}");
    entry["fingerprint"] = "f".repeat(64).into();
    std::fs::write(&cache_file, serde_json::to_vec(&cache).unwrap()).unwrap();
    assert_eq!(inspect_json(&sb, &dir)["fingerprint"], "f".repeat(64));

    // A touched .bin is hashed again.
    let file = std::fs::File::options()
        .write(true)
        .open(dir.join("pytorch_model.bin"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(inspect_json(&sb, &dir)["fingerprint"], first);
}
