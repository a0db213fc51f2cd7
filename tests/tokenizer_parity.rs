//! lm-evaluation-harness 0.4.13's tokenization and scores, replayed without Python.
//!
//! `scripts/make_tokenizer_fixtures.py` built four tiny Llama checkpoints whose
//! tokenizers carry the quirks real ones have (Llama 3's byte-level BPE with BOS in
//! the post-processor, Llama 2's SentencePiece-style BPE that transformers 5 rebuilds,
//! GPT-2's that adds nothing, one that adds BOS and EOS) and recorded what lm-eval's
//! HF backend did with them under each `add_bos_token` / `prefix_token_id`: the token
//! ids of every context, continuation, rolling window and generation prompt, and the
//! log-likelihoods and generations it computed. Every one must come out the same here.

use candle_core::{DType, Device};
use ckpt::checkpoint::Checkpoint;
use ckpt::eval::engine::{Engine, Response};
use ckpt::eval::prompt::Request;
use ckpt::score::rolling_windows;
use ckpt::tokenizer::{AddBos, EncodePolicy, TextTokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn policy(run: &Value) -> EncodePolicy {
    EncodePolicy {
        add_bos_token: match run["add_bos_token"].as_bool() {
            None => AddBos::Auto,
            Some(true) => AddBos::True,
            Some(false) => AddBos::False,
        },
        prefix_token_id: run["prefix_token_id"].as_u64().map(|x| x as u32),
    }
}

/// Every kind, every run: `check(kind, run label, tokenizer, engine, run)`.
fn each_run(check: impl Fn(&str, &str, &TextTokenizer, &Engine, &Value)) {
    let r = reference();
    let max_length = r["max_length"].as_u64().unwrap() as usize;
    let kinds = r["kinds"].as_object().unwrap();
    assert_eq!(kinds.len(), 4);
    for (kind, info) in kinds {
        let dir = fixtures().join(kind);
        let ckpt = Checkpoint::open(&dir).unwrap();
        let cfg = ckpt.config().unwrap();
        let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
        for run in info["runs"].as_array().unwrap() {
            let p = policy(run);
            let tok = TextTokenizer::load_with(&dir, None, cfg.bos_token_id, cfg.eos_token_id, p)
                .unwrap();
            let mut engine = Engine::new(&model, &tok);
            engine.max_length = max_length;
            let label = format!("{kind} [{}]", p.key());
            assert_eq!(
                tok.prefix_token as u64,
                run["prefix_token_id_used"].as_u64().unwrap(),
                "{label}: prefix token"
            );
            check(kind, &label, &tok, &engine, run);
        }
    }
}

#[test]
fn loglikelihood_requests_match_lm_eval() {
    each_run(|_, label, _, engine, run| {
        let items = run["loglikelihood"].as_array().unwrap();
        assert!(items.len() >= 8);
        let requests: Vec<Request> = items
            .iter()
            .map(|it| Request::Loglikelihood {
                context: it["context"].as_str().unwrap().into(),
                continuation: it["continuation"].as_str().unwrap().into(),
            })
            .collect();
        for it in items {
            let (ctx, cont) = engine
                .encode_pair(
                    it["context"].as_str().unwrap(),
                    it["continuation"].as_str().unwrap(),
                )
                .unwrap();
            let what = format!("{label}: {:?} + {:?}", it["context"], it["continuation"]);
            assert_eq!(ctx, ids(&it["context_ids"]), "{what}: context ids");
            assert_eq!(
                cont,
                ids(&it["continuation_ids"]),
                "{what}: continuation ids"
            );
        }
        let responses = engine.run(&requests, &|_| {}).unwrap();
        for (it, r) in items.iter().zip(responses) {
            let Response::Loglikelihood { logprob, is_greedy } = r else {
                panic!("{label}: not a log-likelihood");
            };
            let want = it["logprob"].as_f64().unwrap();
            assert!(
                (logprob - want).abs() < 1e-4,
                "{label}: {:?} + {:?}: {logprob} vs lm-eval {want}",
                it["context"],
                it["continuation"]
            );
            assert_eq!(
                is_greedy,
                it["is_greedy"].as_bool().unwrap(),
                "{label}: is_greedy"
            );
        }
    });
}

#[test]
fn rolling_windows_and_totals_match_lm_eval() {
    each_run(|_, label, tok, engine, run| {
        for it in run["rolling"].as_array().unwrap() {
            let text = it["text"].as_str().unwrap();
            let tokens = tok.encode_lm(text).unwrap();
            assert_eq!(tokens, ids(&it["token_ids"]), "{label}: {text:?} tokens");
            // lm-eval's windows are disjoint (context without the scored overlap); ours
            // carry the overlap, which predicts the same targets from the same inputs.
            let windows = rolling_windows(&tokens, tok.prefix_token, engine.max_length);
            let theirs = it["windows"].as_array().unwrap();
            assert_eq!(windows.len(), theirs.len(), "{label}: {text:?} windows");
            for (w, t) in windows.iter().zip(theirs) {
                let input = ids(&t["input"]);
                let targets = ids(&t["targets"]);
                assert_eq!(w.targets, targets, "{label}: {text:?} targets");
                let full: Vec<u32> = input
                    .iter()
                    .chain(&targets[..targets.len() - 1])
                    .copied()
                    .collect();
                assert_eq!(w.input, full, "{label}: {text:?} window inputs");
            }
            let r = engine
                .run(&[Request::Rolling { text: text.into() }], &|_| {})
                .unwrap();
            let Response::Rolling { logprob, .. } = r[0] else {
                panic!("{label}: not rolling");
            };
            let want = it["logprob"].as_f64().unwrap();
            assert!(
                (logprob - want).abs() < 1e-4,
                "{label}: {text:?}: {logprob} vs {want}"
            );
        }
    });
}

#[test]
fn generation_prompts_and_texts_match_lm_eval() {
    each_run(|_, label, tok, engine, run| {
        for it in run["generate_until"].as_array().unwrap() {
            let context = it["context"].as_str().unwrap();
            let max_gen_toks = it["max_gen_toks"].as_u64().unwrap() as usize;
            let mut prompt = tok.encode_prompt(context).unwrap();
            let room = engine.max_length - max_gen_toks;
            if prompt.len() > room {
                prompt.drain(..prompt.len() - room);
            }
            assert_eq!(
                prompt,
                ids(&it["context_ids"]),
                "{label}: {context:?} prompt"
            );
            let until: Vec<String> = it["until"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let text = engine.generate(context, &until, max_gen_toks).unwrap();
            assert_eq!(
                text,
                it["text"].as_str().unwrap(),
                "{label}: {context:?} generation"
            );
        }
    });
}

#[test]
fn what_each_tokenizer_kind_adds() {
    // The README's table, checked: BOS for Llama 2/3, BOS+EOS for the fourth kind,
    // nothing for GPT-2, under lm-eval's default policy.
    let expected = [
        ("llama3_bytelevel_bos", vec!["<|begin_of_text|>"]),
        ("llama2_metaspace_bos", vec!["<s>"]),
        ("gpt2_no_bos", vec![]),
        ("bos_eos_both", vec!["<s>", "</s>"]),
    ];
    for (kind, added) in expected {
        let dir = fixtures().join(kind);
        let tok = TextTokenizer::load(&dir, None, None, None).unwrap();
        let texts: Vec<String> = tok
            .added_tokens()
            .unwrap()
            .iter()
            .map(|&id| tok.decode(&[id]).unwrap())
            .collect();
        assert_eq!(texts, added, "{kind}");
    }
}

#[test]
fn ckpt_score_totals_match_lm_eval_rolling() {
    // `ckpt score` (the library behind it) on the rolling texts, default policy.
    let r = reference();
    for (kind, info) in r["kinds"].as_object().unwrap() {
        let run = &info["runs"][0];
        assert!(run["add_bos_token"].is_null() && run["prefix_token_id"].is_null());
        let dir = fixtures().join(kind);
        let ckpt = Checkpoint::open(&dir).unwrap();
        let cfg = ckpt.config().unwrap();
        let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
        let tok = TextTokenizer::load(&dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
        let items = run["rolling"].as_array().unwrap();
        let texts: Vec<String> = items
            .iter()
            .map(|it| it["text"].as_str().unwrap().to_string())
            .collect();
        let opts = ckpt::score::ScoreOptions {
            max_length: Some(r["max_length"].as_u64().unwrap() as usize),
            ..Default::default()
        };
        let report = ckpt::score::score_texts(&model, &tok, &texts, &opts, &|_| {}).unwrap();
        for (it, got) in items.iter().zip(&report.texts) {
            let want = it["logprob"].as_f64().unwrap();
            assert!(
                (got.loglikelihood - want).abs() < 1e-4,
                "{kind}: {got:?} vs {want}"
            );
            assert_eq!(
                got.tokens,
                it["token_ids"].as_array().unwrap().len(),
                "{kind}"
            );
        }
    }
}
