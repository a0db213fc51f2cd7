//! Every architecture against transformers 5: tiny random checkpoints with the quirks
//! real ones have (scripts/make_arch_fixtures.py wrote them and transformers' per-token
//! log-probs, greedy generations and losses), then ckpt's own invariants per
//! architecture: KV cache and prefix sharing equal a full pass, and every parameter's
//! gradient equals central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use ckpt::checkpoint::Checkpoint;
use ckpt::model::{init_weights, KvCache, Model, ModelConfig};
use ckpt::score::{score_texts, ScoreOptions};
use ckpt::tokenizer::TextTokenizer;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// The fixture checkpoints: one or two per architecture.
const MODELS: [&str; 9] = [
    "gpt_neox_parallel",
    "gpt_neox_sequential",
    "olmo2",
    "olmo3",
    "qwen3",
    "gemma2",
    "gemma3",
    "gemma3_nested",
    "smollm3",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch")
}

#[derive(Deserialize)]
struct RefText {
    num_tokens: usize,
    token_logprobs: Vec<f64>,
    token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt_ids: Vec<u32>,
    new_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct LossCheck {
    token_ids: Vec<Vec<u32>>,
    loss: f64,
}

#[derive(Deserialize)]
struct ModelReference {
    f32: Vec<RefText>,
    bf16: Vec<RefText>,
    greedy: Vec<Greedy>,
    loss_check: LossCheck,
}

#[derive(Deserialize)]
struct Reference {
    max_length: usize,
    models: HashMap<String, ModelReference>,
}

fn reference() -> Reference {
    serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn load(name: &str, dtype: DType) -> (Checkpoint, Model) {
    let ckpt = Checkpoint::open(&fixtures().join(name)).unwrap();
    let model = ckpt
        .load_model(&Device::Cpu, dtype)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (ckpt, model)
}

/// Per-token |ours - transformers| over every fixture text, scored as lm-eval's
/// rolling log-likelihood windows them.
fn token_differences(name: &str, dtype: DType, key: &str) -> Vec<f64> {
    let reference = reference();
    let refs = match key {
        "f32" => &reference.models[name].f32,
        _ => &reference.models[name].bf16,
    };
    let (ckpt, model) = load(name, dtype);
    let cfg = model.config();
    let tokenizer =
        TextTokenizer::load(&ckpt.dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
    let texts = ckpt::texts::read_texts(&fixtures().join("texts.jsonl")).unwrap();
    let opts = ScoreOptions {
        max_length: Some(reference.max_length),
        keep_token_logprobs: true,
        ..Default::default()
    };
    let report = score_texts(&model, &tokenizer, &texts, &opts, &|_| {}).unwrap();
    let mut diffs = Vec::new();
    for ((text, ours), r) in texts.iter().zip(&report.texts).zip(refs) {
        assert_eq!(
            tokenizer.encode(text).unwrap(),
            r.token_ids,
            "{name}: token ids"
        );
        assert_eq!(ours.tokens, r.num_tokens, "{name}");
        let lp = ours.token_logprobs.as_ref().unwrap();
        diffs.extend(
            lp.iter()
                .zip(&r.token_logprobs)
                .map(|(a, b)| (*a as f64 - b).abs()),
        );
    }
    diffs
}

#[test]
fn f32_log_probs_match_transformers_per_token() {
    for name in MODELS {
        let diffs = token_differences(name, DType::F32, "f32");
        let max = diffs.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "{name}: f32 per-token difference max {max:.2e} over {} tokens",
            diffs.len()
        );
        assert!(max <= 1e-4, "{name}: f32 per-token difference {max}");
    }
}

/// bf16 rounds every op's output to 8 bits of mantissa, in a different order than
/// torch's kernels: the same bound as the Llama fixtures (tests/model.rs).
#[test]
fn bf16_log_probs_match_transformers_within_tolerance() {
    for name in MODELS {
        let diffs = token_differences(name, DType::BF16, "bf16");
        let max = diffs.iter().cloned().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        eprintln!("{name}: bf16 per-token difference mean {mean:.4} max {max:.4}");
        assert!(
            mean < 0.02 && max < 0.2,
            "{name}: bf16 mean {mean} max {max}"
        );
    }
}

/// f16 keeps 3 more mantissa bits than bf16: against transformers' f32 it lands
/// closer (the bound of tests/model.rs).
#[test]
fn f16_log_probs_are_close_to_f32() {
    for name in MODELS {
        let diffs = token_differences(name, DType::F16, "f32");
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        eprintln!("{name}: f16 vs f32 per-token difference mean {mean:.4}");
        assert!(mean < 0.01, "{name}: f16 mean {mean}");
    }
}

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

fn argmax(logits: &Tensor) -> u32 {
    logits
        .flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap()
}

/// Greedy decoding with the KV cache, one token at a time, as transformers'
/// `generate(do_sample=False)` does.
#[test]
fn greedy_generation_matches_transformers() {
    let reference = reference();
    for name in MODELS {
        let (_, model) = load(name, DType::F32);
        let layers = model.config().num_hidden_layers;
        for g in &reference.models[name].greedy {
            let mut cache = KvCache::new(layers);
            let n = g.prompt_ids.len();
            let mut next = argmax(
                &model
                    .logits_at(&ids(&[&g.prompt_ids]), &mut cache, &[(0, n - 1)])
                    .unwrap(),
            );
            let mut out = vec![next];
            while out.len() < g.new_ids.len() {
                next = argmax(
                    &model
                        .logits_at(&ids(&[&[next]]), &mut cache, &[(0, 0)])
                        .unwrap(),
                );
                out.push(next);
            }
            assert_eq!(out, g.new_ids, "{name}: greedy continuation differs");
        }
    }
}

#[test]
fn next_token_loss_matches_transformers() {
    let reference = reference();
    for name in MODELS {
        let (_, model) = load(name, DType::F32);
        let check = &reference.models[name].loss_check;
        let rows: Vec<&[u32]> = check.token_ids.iter().map(Vec::as_slice).collect();
        let loss = model
            .next_token_loss(&ids(&rows))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!(
            (loss - check.loss).abs() < 1e-5,
            "{name}: loss {loss} vs transformers {}",
            check.loss
        );
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Chunked and one-token-at-a-time passes through the cache, and a prefix shared by
/// three continuations, give the logits of one full pass (sliding windows included:
/// the fixtures' windows are shorter than these 12 tokens).
#[test]
fn kv_cache_and_prefix_sharing_equal_a_full_pass() {
    let tokens: [u32; 12] = [0, 51, 7, 200, 9, 11, 3, 3, 120, 77, 5, 300];
    for name in MODELS {
        let (_, model) = load(name, DType::F32);
        let layers = model.config().num_hidden_layers;
        let all: Vec<(usize, usize)> = (0..12).map(|p| (0, p)).collect();
        let full = model
            .logits_at(&ids(&[&tokens]), &mut KvCache::new(layers), &all)
            .unwrap();
        let mut cache = KvCache::new(layers);
        let mut pieces = Vec::new();
        for (start, len) in [(0, 5), (5, 4), (9, 1), (10, 1), (11, 1)] {
            let positions: Vec<_> = (0..len).map(|p| (0, p)).collect();
            let chunk = ids(&[&tokens[start..start + len]]);
            pieces.push(model.logits_at(&chunk, &mut cache, &positions).unwrap());
        }
        let incremental = Tensor::cat(&pieces, 0).unwrap();
        let diff = max_abs_diff(&full, &incremental);
        assert!(diff < 1e-4, "{name}: cached pass differs by {diff}");

        let mut prefix = KvCache::new(layers);
        model
            .hidden_states(&ids(&[&tokens[..6]]), &mut prefix)
            .unwrap();
        let conts: [&[u32]; 3] = [&[4, 4, 4], &[0, 22, 7], &tokens[6..9]];
        let mut shared = prefix.expand_batch(3).unwrap();
        let last: Vec<_> = (0..3).map(|r| (r, 2)).collect();
        let batched = model.logits_at(&ids(&conts), &mut shared, &last).unwrap();
        for (r, cont) in conts.iter().enumerate() {
            let whole: Vec<u32> = tokens[..6].iter().chain(cont.iter()).copied().collect();
            let alone = model
                .logits_at(&ids(&[&whole]), &mut KvCache::new(layers), &[(0, 8)])
                .unwrap();
            let diff = max_abs_diff(&alone, &batched.narrow(0, r, 1).unwrap());
            assert!(diff < 1e-4, "{name}: shared prefix differs by {diff}");
        }
    }
}

/// A model loaded for inference only holds each weight once, packed for this CPU's
/// kernels (where it has them): its logits equal the fully loaded model's bit for bit,
/// in f32 and bf16, fused or split q/k/v, tied or untied heads; and the training loss,
/// whose kernels need the weights as tensors, rebuilds them exactly.
#[test]
fn a_model_loaded_for_inference_computes_what_the_full_one_does() {
    let x = ids(&[&[0, 51, 7, 9, 11, 3, 120, 77], &[5, 300, 2, 8, 1, 4, 4, 13]]);
    let bits = |t: Tensor| -> Vec<u32> {
        let t = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        t.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    for name in MODELS {
        let ckpt = Checkpoint::open(&fixtures().join(name)).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let mut full = ckpt.load_model(&Device::Cpu, dtype).unwrap();
            let mut lean = ckpt.load_for_inference(&Device::Cpu, dtype).unwrap();
            let layers = full.config().num_hidden_layers;
            let logits = |m: &Model| {
                bits(
                    m.logits_at(&x, &mut KvCache::new(layers), &[(0, 7), (1, 2), (1, 7)])
                        .unwrap(),
                )
            };
            assert_eq!(logits(&full), logits(&lean), "{name} {dtype:?}: logits");
            full.set_differentiable(true);
            lean.set_differentiable(true);
            let loss = |m: &Model| bits(m.next_token_loss(&x).unwrap());
            assert_eq!(loss(&full), loss(&lean), "{name} {dtype:?}: training loss");
        }
    }
}

/// Requests that started at different times, decoded together in one left-padded
/// cache (`ckpt serve`'s continuous batching), get the logits each gets alone: rows
/// join with more or fewer positions than the batch holds, and leave; per-row RoPE
/// positions and sliding windows hold in both the fused and the composite kernels.
#[test]
fn rows_decoded_together_equal_each_alone() {
    let prompts: [&[u32]; 4] = [
        &[0, 51, 7],
        &[0, 9, 11, 3, 3, 120, 77],
        &[5, 300, 2, 8, 1],
        &[0, 4, 4, 4, 9, 9, 9, 13, 13, 13, 40],
    ];
    let next = |row: usize, step: usize| ((row * 31 + step * 17) % 200) as u32 + 2;
    for name in MODELS {
        let (_, mut model) = load(name, DType::F32);
        for composite in [false, true] {
            model.set_twice_differentiable(composite);
            let layers = model.config().num_hidden_layers;
            let alone = |row: usize, steps: usize| -> Tensor {
                let mut tokens = prompts[row].to_vec();
                tokens.extend((0..steps).map(|s| next(row, s)));
                let last = tokens.len() - 1;
                model
                    .logits_at(&ids(&[&tokens]), &mut KvCache::new(layers), &[(0, last)])
                    .unwrap()
            };
            let prefill = |row: usize| {
                let mut cache = KvCache::new(layers);
                model
                    .hidden_states(&ids(&[prompts[row]]), &mut cache)
                    .unwrap();
                cache
            };
            // Rows 0 and 1 start; row 2 joins after two steps, row 3 (longer than the
            // batch) after three; row 1 leaves after four.
            let mut batch = KvCache::new(layers);
            let mut rows: Vec<(usize, usize)> = vec![]; // (request, tokens run after its prompt)
            for step in 0..7 {
                for (at, row) in [(0, 0), (0, 1), (2, 2), (3, 3)] {
                    if at == step {
                        batch.push_rows(&prefill(row)).unwrap();
                        rows.push((row, 0));
                    }
                }
                if step == 4 {
                    let keep: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].0 != 1).collect();
                    batch.keep_rows(&keep).unwrap();
                    rows.retain(|r| r.0 != 1);
                }
                let input: Vec<u32> = rows.iter().map(|&(r, s)| next(r, s)).collect();
                let x = Tensor::new(input.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(1)
                    .unwrap();
                let last: Vec<_> = (0..rows.len()).map(|i| (i, 0)).collect();
                let together = model.logits_at(&x, &mut batch, &last).unwrap();
                for (i, row) in rows.iter_mut().enumerate() {
                    row.1 += 1;
                    assert_eq!(batch.row_len(i), prompts[row.0].len() + row.1);
                    let diff =
                        max_abs_diff(&alone(row.0, row.1), &together.narrow(0, i, 1).unwrap());
                    assert!(
                        diff < 1e-4,
                        "{name} (composite {composite}): request {} at step {step} differs by {diff}",
                        row.0
                    );
                }
            }
        }
    }
}

/// The fixture's config with fewer tokens, so a f64 finite-difference sweep is quick.
fn small_config(name: &str) -> ModelConfig {
    let text = std::fs::read_to_string(fixtures().join(name).join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let target = if json.get("text_config").is_some() {
        &mut json["text_config"]
    } else {
        &mut json
    };
    target["vocab_size"] = 40.into();
    target["bos_token_id"] = 0.into();
    target["eos_token_id"] = 1.into();
    target["pad_token_id"] = serde_json::Value::Null;
    ModelConfig::from_json(&json.to_string()).unwrap()
}

fn build(cfg: &ModelConfig, weights: &HashMap<String, Tensor>, dtype: DType) -> Model {
    let vb = VarBuilder::from_tensors(weights.clone(), dtype, &Device::Cpu);
    Model::load(cfg, vb).unwrap()
}

fn loss_of(cfg: &ModelConfig, weights: &HashMap<String, Tensor>, x: &Tensor) -> f64 {
    let mut model = build(cfg, weights, DType::F64);
    model.set_differentiable(true);
    model
        .next_token_loss(x)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Every parameter tensor's autograd gradient, projected on a random direction, equals
/// the central finite difference of the loss along it: no op of any architecture
/// (LayerNorm, soft-caps, q/k norms, partial rotary, GELU) lacks its backward.
#[test]
fn gradients_of_every_parameter_match_finite_differences() {
    let dev = Device::Cpu;
    let x = ids(&[
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        &[10, 3, 22, 0, 5, 5, 17, 2, 8, 1],
    ]);
    for name in MODELS {
        let cfg = small_config(name);
        let mut weights = init_weights(&cfg, 0.3, 3, DType::F64, &dev).unwrap();
        // Non-trivial norm scales and biases, so their gradients are generic too.
        for (n, t) in weights.iter_mut() {
            if n.contains("norm") || n.ends_with(".bias") {
                *t = (t.clone() + Tensor::randn(0f64, 0.2, t.shape(), &dev).unwrap()).unwrap();
            }
        }
        let vars: HashMap<String, Var> = weights
            .iter()
            .map(|(n, t)| (n.clone(), Var::from_tensor(t).unwrap()))
            .collect();
        let var_tensors = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let mut model = build(&cfg, &var_tensors, DType::F64);
        model.set_differentiable(true);
        let grads = model.next_token_loss(&x).unwrap().backward().unwrap();
        // Central differences err by O(eps^2 f''') (large on these deliberately sharp
        // random weights) plus O(1e-16 f / eps): 1e-6 balances the two near 1e-9.
        let eps = 1e-6;
        for (param, var) in &vars {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} {param}: no gradient"));
            let direction = Tensor::randn(0f64, 1.0, var.shape(), &dev).unwrap();
            let analytic = (grad * &direction)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let shifted = |sign: f64| {
                let mut w = weights.clone();
                let moved = (&weights[param] + (&direction * (sign * eps)).unwrap()).unwrap();
                w.insert(param.clone(), moved);
                loss_of(&cfg, &w, &x)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
            // Relative to at least 1e-2: a central difference at eps 1e-5 is good to ~1e-8
            // absolute, while a missing backward is off by the whole gradient.
            let err = (analytic - numeric).abs() / analytic.abs().max(1e-2);
            assert!(
                err < 1e-5,
                "{name} {param}: autograd {analytic} vs finite differences {numeric}"
            );
        }
    }
}

/// What ckpt writes for an architecture (`ckpt train`, `ckpt merge`) reads back as the
/// same model, whichever dialect the original used.
#[test]
fn written_configs_read_back_the_same() {
    for name in MODELS {
        let cfg = ModelConfig::from_file(&fixtures().join(name).join("config.json")).unwrap();
        let again = ModelConfig::from_json(&cfg.to_json().to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg, again, "{name}");
    }
}

#[test]
fn unsupported_architectures_are_named_with_the_supported_ones() {
    let err = ModelConfig::from_json(r#"{"architectures":["MambaForCausalLM"]}"#).unwrap_err();
    assert!(
        err.contains("unsupported architecture MambaForCausalLM"),
        "{err}"
    );
    for supported in [
        "GPTNeoXForCausalLM",
        "Olmo3ForCausalLM",
        "Gemma3ForCausalLM",
        "SmolLM3ForCausalLM",
    ] {
        assert!(err.contains(supported), "{err}");
    }
}

/// Checkpoints written by `ckpt train` (20 steps from scratch, one per architecture;
/// scripts/make_trained_arch_fixtures.sh) load in transformers with no missing or
/// unexpected tensor and compute the loss ckpt computes.
#[test]
fn trained_checkpoints_score_as_transformers_scores_them() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained_arch");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let models = reference["models"].as_object().unwrap();
    assert_eq!(models.len(), 8);
    for (name, theirs) in models {
        let ckpt = Checkpoint::open(&dir.join(name)).unwrap();
        assert_eq!(
            ckpt.config().unwrap().arch.architecture(),
            theirs["architecture"].as_str().unwrap()
        );
        let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
        let check: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(name).join("loss_check.json")).unwrap())
                .unwrap();
        let rows: Vec<Vec<u32>> = serde_json::from_value(check["token_ids"].clone()).unwrap();
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let loss = model
            .next_token_loss(&ids(&rows))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let expected = theirs["loss"].as_f64().unwrap();
        assert!(
            (loss - expected).abs() < 1e-5,
            "{name}: {loss} vs transformers {expected}"
        );
    }
}

/// Multimodal Gemma 3 checkpoints (4B and up) name in `text_config` only what differs
/// from `Gemma3TextConfig`; the rest takes transformers' defaults.
#[test]
fn a_sparse_gemma3_text_config_takes_transformers_defaults() {
    let cfg = ModelConfig::from_json(
        r#"{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
              "model_type": "gemma3_text", "num_hidden_layers": 34,
              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
            "torch_dtype": "bfloat16"}"#,
    )
    .unwrap();
    assert_eq!(cfg.arch, ckpt::model::Arch::Gemma3);
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim
        ),
        (262_208, 8, 4, 256)
    );
    assert_eq!(cfg.query_pre_attn_scalar, Some(256.0));
    assert_eq!(cfg.local_rope_theta, Some(10_000.0));
    assert_eq!(cfg.rope_theta, 1_000_000.0);
    // Five sliding layers of six, window 1024.
    assert_eq!(cfg.sliding_window[4], Some(1024));
    assert_eq!(cfg.sliding_window[5], None);
    assert_eq!(cfg.saved_dtype.as_deref(), Some("bfloat16"));
}

/// Pythia-70m's config as it ships (transformers 4.24 dialect) resolves to its
/// published size: 70,426,624 parameters with the untied `embed_out`.
#[test]
fn pythia_70m_config_resolves_to_its_published_size() {
    let cfg = ModelConfig::from_json(
        r#"{"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
            "hidden_act": "gelu", "hidden_size": 512, "initializer_range": 0.02,
            "intermediate_size": 2048, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 2048, "model_type": "gpt_neox",
            "num_attention_heads": 8, "num_hidden_layers": 6, "rotary_emb_base": 10000,
            "rotary_pct": 0.25, "tie_word_embeddings": false, "torch_dtype": "float16",
            "transformers_version": "4.24.0", "use_cache": true,
            "use_parallel_residual": true, "vocab_size": 50304}"#,
    )
    .unwrap();
    assert_eq!(cfg.num_parameters(), 70_426_624);
    assert_eq!((cfg.rotary_dim, cfg.head_dim), (16, 64));
    assert!(cfg.parallel_residual && cfg.qkv_bias && cfg.mlp_bias);
    let shapes: u64 = ckpt::model::parameter_shapes(&cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(shapes, 70_426_624);
}
