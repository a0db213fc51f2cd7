//! A checkpoint written by `ckpt train` as transformers sees it
//! (`scripts/check_trained_checkpoint.py`): the same token ids, the same
//! log-probabilities, the same chat rendering.

use candle_core::{DType, Device};
use ckpt::chat::{Message, TemplateChoice};
use ckpt::checkpoint::Checkpoint;
use ckpt::score::{score_texts, ScoreOptions};
use ckpt::tokenizer::TextTokenizer;
use ckpt::train::data::sft::template_for;
use ckpt::train::data::TrainTokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn transformers_reads_the_trained_checkpoint_as_ckpt_does() {
    let ckpt = Checkpoint::open(&root().join("tiny-wso")).unwrap();
    assert_eq!(ckpt.step, Some(30));
    let cfg = ckpt.config().unwrap();
    let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
    let tok = TextTokenizer::load(&ckpt.dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
    let reference = reference();
    let cases = reference["texts"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let opts = ScoreOptions {
        keep_token_logprobs: true,
        ..Default::default()
    };
    let report = score_texts(&model, &tok, &texts, &opts, &|_| {}).unwrap();
    for (case, (text, got)) in cases.iter().zip(texts.iter().zip(&report.texts)) {
        assert_eq!(tok.encode(text).unwrap(), ids(&case["token_ids"]), "{text}");
        let want = case["token_logprobs"].as_array().unwrap();
        let got = got.token_logprobs.as_ref().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w.as_f64().unwrap()).abs() < 1e-4,
                "{text}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn chats_render_and_tokenize_as_transformers_does() {
    let tok = TrainTokenizer::load(&root().join("tiny-wso"), &TemplateChoice::Own).unwrap();
    let template = template_for(&tok).unwrap();
    let chats: Vec<Vec<Message>> = std::fs::read_to_string(root().join("chats.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["messages"].clone()).unwrap()
        })
        .collect();
    let reference = reference();
    for (messages, want) in chats.iter().zip(reference["chats"].as_array().unwrap()) {
        let rendered = template.render(messages, false).unwrap();
        assert_eq!(rendered, want["rendered"].as_str().unwrap());
        let prompt = template
            .render(&messages[..messages.len() - 1], true)
            .unwrap();
        assert_eq!(prompt, want["generation_prompt"].as_str().unwrap());
        assert_eq!(tok.encode(&rendered).unwrap(), ids(&want["token_ids"]));
    }
}
