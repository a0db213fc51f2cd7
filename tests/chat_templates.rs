//! Chat templates rendered as transformers 5's `apply_chat_template` renders them,
//! replayed without Python from `tests/fixtures/chat` (made by
//! `scripts/make_chat_template_fixtures.py`): six templates in the styles real models
//! ship (ChatML with a default system message, Llama-3-style headers with
//! `bos_token`, one that raises on a bad role order, two with `{% generation %}`
//! blocks, one that loops over content parts and uses `tojson` on tools), each
//! conversation with and without the generation prompt, and the assistant masks.

use ckpt::chat::{assistant_mask, ChatTemplate};
use ckpt::tokenizer::TokenizerFiles;
use ckpt::train::data::TrainTokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn template(name: &str) -> ChatTemplate {
    let source = std::fs::read_to_string(fixtures().join("templates").join(name)).unwrap();
    let files = TokenizerFiles::read(&fixtures().join("tokenizer")).unwrap();
    ChatTemplate::with_variables(&source, files.template_variables()).unwrap()
}

#[test]
fn special_token_variables_are_the_ones_transformers_passes() {
    let r = read("reference.json");
    let files = TokenizerFiles::read(&fixtures().join("tokenizer")).unwrap();
    let mut ours: Vec<(String, String)> = files.template_variables();
    ours.sort();
    let mut theirs: Vec<(String, String)> = r["special_tokens"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn every_render_is_byte_identical_and_errors_are_errors() {
    let r = read("reference.json");
    let conversations = read("conversations.json");
    let renders = r["renders"].as_array().unwrap();
    assert!(renders.len() >= 90);
    let (mut texts, mut errors) = (0, 0);
    for case in renders {
        let name = case["template"].as_str().unwrap();
        let conv = &conversations[case["conversation"].as_u64().unwrap() as usize];
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        let got = template(name).render_with(&conv["messages"], agp, case.get("tools"), &kwargs);
        let what = format!("{name} on {} (generation prompt {agp})", conv["name"]);
        match (case.get("text"), got) {
            (Some(want), Ok(rendered)) => {
                assert_eq!(rendered.text, want.as_str().unwrap(), "{what}");
                texts += 1;
            }
            (None, Err(e)) => {
                let want = case["error"].as_str().unwrap();
                // raise_exception's own message is shown as the template wrote it.
                if case["error_type"] == "TemplateError" {
                    assert_eq!(
                        e.to_string(),
                        format!("chat template raised: {want}"),
                        "{what}"
                    );
                }
                errors += 1;
            }
            (Some(_), Err(e)) => panic!("{what}: transformers renders it, ckpt fails: {e}"),
            (None, Ok(r)) => panic!(
                "{what}: transformers raises {}, ckpt renders {:?}",
                case["error"], r.text
            ),
        }
    }
    assert!(
        texts >= 80 && errors >= 10,
        "{texts} texts, {errors} errors"
    );
}

#[test]
fn named_templates_pick_default_and_tool_use_as_transformers_does() {
    let r = read("reference.json");
    let named = &r["named_templates"];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::json!({"chat_template": named["config"]}).to_string(),
    )
    .unwrap();
    let files = TokenizerFiles::read(dir.path()).unwrap();
    let source = files.chat_template.unwrap();
    let conversations = read("conversations.json");
    let conv = &conversations[named["conversation"].as_u64().unwrap() as usize];
    let t = ChatTemplate::with_variables(&source.text, vec![]).unwrap();
    let text = t.render_json(&conv["messages"], false).unwrap().text;
    assert_eq!(named["picked"], "default");
    assert_eq!(text, named["text"].as_str().unwrap());
}

#[test]
fn assistant_masks_equal_transformers() {
    let r = read("reference.json");
    let conversations = read("conversations.json");
    let tok = TrainTokenizer::load(
        &fixtures().join("tokenizer"),
        &ckpt::chat::TemplateChoice::Own,
    )
    .unwrap();
    let cases = r["assistant_masks"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let conv = &conversations[case["conversation"].as_u64().unwrap() as usize];
        let rendered = template(name)
            .render_json(&conv["messages"], false)
            .unwrap();
        assert_eq!(rendered.text, case["text"].as_str().unwrap(), "{name}");
        let spans: Vec<Vec<usize>> =
            serde_json::from_value(case["generation_spans_bytes"].clone()).unwrap();
        let ours: Vec<Vec<usize>> = rendered
            .generation_spans
            .iter()
            .map(|s| vec![s.start, s.end])
            .collect();
        assert_eq!(ours, spans, "{name} on {}: spans", conv["name"]);
        let encoded = tok.encode_with_offsets(&rendered.text).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(encoded.ids, want_ids, "{name} on {}: ids", conv["name"]);
        let mask: Vec<u8> = assistant_mask(&encoded.offsets, &rendered.generation_spans)
            .into_iter()
            .map(u8::from)
            .collect();
        let want: Vec<u8> = serde_json::from_value(case["assistant_masks"].clone()).unwrap();
        assert_eq!(mask, want, "{name} on {}: mask", conv["name"]);
    }
}
