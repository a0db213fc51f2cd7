//! The ground-truth judge: `ckpt serve --oracle` as the judge of
//! `ckpt eval --tasks alpaca_eval` through the real binaries on loopback, the OpenAI
//! schema of the in-process server the demo starts, and bad input.
//!
//! References: the answer score is checked against SQuAD's own normalization and F1
//! (values written by `scripts/make_oracle_f1_fixture.py` with lm-eval's copy of the
//! official SQuAD v1.1 code), and every preference against p = sigmoid(k (q_A - q_B))
//! recomputed here with this file's own F1 (a regex for the articles, as SQuAD's
//! Python does) from the exported outputs and the truth in `instructions.json`.

mod common;

use ckpt::eval::judge::oracle::{token_f1, Oracle, DEFAULT_K};
use ckpt::eval::judge::prompt::JudgeTemplate;
use ckpt::serve::oracle::{start_oracle, DEFAULT_NAME};
use ckpt::synth::{generate, SynthConfig};
use common::{arg, Sandbox};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The slope the oracle documents.
const K: f64 = 5.0;

/// SQuAD v1.1's `normalize_answer`, written from its Python: lower, drop
/// `string.punctuation`, `re.sub(r"\b(a|an|the)\b", " ")`, `" ".join(s.split())`.
fn squad_normalize(s: &str) -> String {
    const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    let no_punct: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let articles = regex::Regex::new(r"\b(a|an|the)\b").unwrap();
    let spaced = articles.replace_all(&no_punct, " ");
    // Python's str.split(): Unicode white space and the ASCII separators 0x1c-0x1f.
    spaced
        .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD v1.1's token F1 (`f1_abstractive`).
fn squad_f1(prediction: &str, truth: &str) -> f64 {
    let (p, t) = (squad_normalize(prediction), squad_normalize(truth));
    let p: Vec<&str> = p.split(' ').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = t.split(' ').filter(|s| !s.is_empty()).collect();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for w in &p {
        counts.entry(w).or_default().0 += 1;
    }
    for w in &t {
        counts.entry(w).or_default().1 += 1;
    }
    let same: usize = counts.values().map(|(a, b)| a.min(b)).sum();
    if same == 0 {
        return 0.0;
    }
    let (precision, recall) = (same as f64 / p.len() as f64, same as f64 / t.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// SQuAD's values for (prediction, truth) pairs: ckpt's normalization equals SQuAD's
/// exactly and its F1 to 1e-12; so does this file's F1, which the other tests use.
#[test]
fn answer_scores_equal_squads_own() {
    assert_eq!(DEFAULT_K, K);
    let fixture = read_json(&common::fixture_in("judge", "oracle_f1.json"));
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let (p, t) = (
            c["prediction"].as_str().unwrap(),
            c["truth"].as_str().unwrap(),
        );
        let f1 = c["f1"].as_f64().unwrap();
        assert_eq!(
            ckpt::eval::judge::oracle::normalize(p),
            c["normalized_prediction"].as_str().unwrap(),
            "{p:?}"
        );
        assert!((token_f1(p, t) - f1).abs() < 1e-12, "{p:?} vs {t:?}");
        assert!((squad_f1(p, t) - f1).abs() < 1e-12, "{p:?} vs {t:?} (test)");
    }
    assert!(cases.iter().any(|c| c["f1"] == 1.0));
    assert!(cases.iter().any(|c| c["f1"] == 0.0));
}

/// `ckpt serve --oracle FILE` on a free port: the process (killed on drop) and its URL.
fn serve_oracle(sb: &Sandbox, file: &Path) -> (common::Served, String) {
    let served = sb.serve(["--oracle", arg(file)]);
    let url = served.url.clone();
    (served, url)
}

/// A small world's instruction set (`data/synth/instructions.json`) and its truth.
fn synth(sb: &Sandbox, n: usize) -> (PathBuf, Vec<(String, String)>) {
    let out = sb.run([
        "synth",
        "--out",
        "data/synth",
        "--entities",
        "20",
        "--pretrain-docs",
        "10",
        "--midtrain-docs",
        "0",
        "--sft-chats",
        "120",
        "--validation-docs",
        "0",
        "--instructions",
        &n.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = sb.path().join("data/synth/instructions.json");
    let truth = read_json(&path)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["generator"], "ground_truth");
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("instruction"), s("output"))
        })
        .collect();
    (path, truth)
}

/// A reference of every quality: the truth, its first half, another instruction's
/// truth, the truth padded with noise (so the preferences vary and both sides win).
fn degraded_reference(truth: &[(String, String)]) -> Value {
    let records: Vec<Value> = truth
        .iter()
        .enumerate()
        .map(|(i, (ins, out))| {
            let words: Vec<&str> = out.split(' ').collect();
            let output = match i % 4 {
                0 => out.clone(),
                1 => words[..words.len().div_ceil(2)].join(" "),
                2 => truth[(i + 1) % truth.len()].1.clone(),
                _ => format!("{out} Also, it rained that week."),
            };
            json!({"instruction": ins, "output": output, "generator": "degraded"})
        })
        .collect();
    Value::Array(records)
}

/// `ckpt eval` of two checkpoints (a random-weight Llama whose greedy answers are
/// noise, and a barely trained one whose answers are blank) with the oracle as the
/// judge: every exported preference is 1 + sigmoid(k (q_model - q_reference)), the q
/// recomputed here from the exported outputs and the truth; the win rate is their mean.
/// Then against the truth itself (the default reference, the demo's): no model beats it.
#[test]
fn eval_with_the_oracle_as_judge_exports_its_formula() {
    let sb = Sandbox::new();
    let (instructions, truth) = synth(&sb, 12);
    let runs = sb.path().join("runs");
    common::copy_dir(&common::fixture("llama_gqa"), &runs.join("noise/step-1"));
    common::copy_dir(
        &common::fixture_in("trained", "tiny-wso"),
        &runs.join("blank/step-30"),
    );
    let reference = sb.write("reference.json", degraded_reference(&truth).to_string());
    let (_server, url) = serve_oracle(&sb, &instructions);
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            arg(&runs),
            "--tasks",
            "alpaca_eval",
            "--judge-url",
            &url,
            "--instructions",
            arg(&instructions),
            "--max-new-tokens",
            "16",
            "--store",
            "s.sqlite",
            "--json",
        ];
        args.extend(extra);
        sb.run_json(args)
    };
    let truth_of: HashMap<&str, &str> = truth
        .iter()
        .map(|(i, o)| (i.as_str(), o.as_str()))
        .collect();

    let report = eval(&["--reference", arg(&reference)]);
    assert_eq!(report["alpaca_eval"]["judge"], DEFAULT_NAME);
    let checkpoints = report["alpaca_eval"]["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 2);
    let (mut preferences, mut verdicts, mut noisy) = (Vec::new(), Vec::new(), 0);
    for c in checkpoints {
        let dir = sb.path().join(c["export"].as_str().unwrap());
        let anns = read_json(&dir.join("annotations.json"));
        let anns = anns.as_array().unwrap();
        assert_eq!(anns.len(), truth.len());
        let mut sum = 0.0;
        for a in anns {
            let t = truth_of[a["instruction"].as_str().unwrap()];
            let (reference, model) = (
                a["output_1"].as_str().unwrap(),
                a["output_2"].as_str().unwrap(),
            );
            let p = sigmoid(K * (squad_f1(model, t) - squad_f1(reference, t)));
            let pref = a["preference"].as_f64().unwrap();
            assert!(
                (pref - 1.0 - p).abs() < 1e-12,
                "{pref} vs 1 + {p} for {model:?} / {reference:?}"
            );
            assert_eq!(a["annotator"], DEFAULT_NAME);
            assert_eq!(a["generator_1"], "degraded");
            let raw = &a["raw_completion"];
            let top = raw["logprobs"]["content"][0]["top_logprobs"]
                .as_array()
                .unwrap();
            let mass: f64 = top
                .iter()
                .map(|t| t["logprob"].as_f64().unwrap().exp())
                .sum();
            assert!((mass - 1.0).abs() < 1e-12, "{raw}");
            verdicts.push(raw["message"]["content"].as_str().unwrap().to_string());
            noisy += usize::from(!model.trim().is_empty());
            preferences.push(pref);
            sum += p;
        }
        let win_rate = c["metrics"]["win_rate"].as_f64().unwrap();
        assert!(
            (win_rate - 100.0 * sum / anns.len() as f64).abs() < 1e-9,
            "{c}"
        );
    }
    // Not vacuous: varied preferences, verdicts on both sides, non-empty answers.
    preferences.sort_by(f64::total_cmp);
    preferences.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    assert!(preferences.len() >= 3, "{preferences:?}");
    assert!(verdicts.iter().any(|v| v == "A") && verdicts.iter().any(|v| v == "B"));
    assert!(noisy >= truth.len(), "{noisy} non-empty answers");

    // Against the truth: the generations come from the store, the judge is asked anew.
    let report = eval(&[]);
    assert_eq!(report["alpaca_eval"]["reference"], "ground_truth");
    for c in report["alpaca_eval"]["checkpoints"].as_array().unwrap() {
        assert_eq!(c["generated"], 0, "{c}");
        let dir = sb.path().join(c["export"].as_str().unwrap());
        for a in read_json(&dir.join("annotations.json")).as_array().unwrap() {
            let t = truth_of[a["instruction"].as_str().unwrap()];
            assert_eq!(a["output_1"], t);
            let p = sigmoid(K * (squad_f1(a["output_2"].as_str().unwrap(), t) - 1.0));
            assert!((a["preference"].as_f64().unwrap() - 1.0 - p).abs() < 1e-12);
        }
        assert!(c["metrics"]["win_rate"].as_f64().unwrap() <= 50.0);
    }
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// The preference for the first answer, read as a client does: P(A) / (P(A) + P(B))
/// from `top_logprobs`.
fn p_first(reply: &Value) -> f64 {
    let top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        .as_array()
        .unwrap();
    let prob = |id: &str| {
        top.iter()
            .filter(|t| t["token"] == id)
            .map(|t| t["logprob"].as_f64().unwrap().exp())
            .sum::<f64>()
    };
    prob("A") / (prob("A") + prob("B"))
}

fn ask(url: &str, prompt: &str) -> (u16, Value) {
    post(
        url,
        &json!({"model": DEFAULT_NAME, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 1, "temperature": 0.0, "logprobs": true, "top_logprobs": 20}),
    )
}

/// The server the demo starts in-process, over HTTP: the truth beats a wrong answer in
/// either order by the documented formula, identical answers are a coin toss, prompts
/// it cannot read and instructions it does not know are 400s that say so, and after
/// shutdown nothing listens.
#[test]
fn the_in_process_oracle_speaks_openai() {
    let corpus = generate(&SynthConfig {
        seed: 3,
        entities: 16,
        pretrain_docs: 0,
        midtrain_docs: 0,
        sft_chats: 40,
        validation_docs: 0,
        instructions: 8,
    });
    let oracle = Oracle::new(&corpus.instructions, DEFAULT_K).unwrap();
    let server = start_oracle(oracle, DEFAULT_NAME).unwrap();
    let url = server.url().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );
    let models: Value = reqwest::blocking::get(format!("{url}/models"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], DEFAULT_NAME);

    let template = JudgeTemplate::builtin();
    let set = &corpus.instructions;
    for (k, ins) in set.iter().enumerate() {
        let truth = ins.output.as_deref().unwrap();
        let wrong = set[(k + 1) % set.len()].output.as_deref().unwrap();
        let expected = sigmoid(K * (1.0 - squad_f1(wrong, truth)));
        assert!(expected > 0.5);
        for truth_first in [true, false] {
            let (a, b) = if truth_first {
                (truth, wrong)
            } else {
                (wrong, truth)
            };
            let (status, reply) = ask(&url, &template.render(&ins.instruction, a, b).unwrap());
            assert_eq!(status, 200, "{reply}");
            let p = p_first(&reply);
            let p_truth = if truth_first { p } else { 1.0 - p };
            assert!(
                (p_truth - expected).abs() < 1e-12,
                "{p_truth} vs {expected}"
            );
            let better = if truth_first { "A" } else { "B" };
            assert_eq!(reply["choices"][0]["message"]["content"], better);
            assert_eq!(reply["object"], "chat.completion");
        }
        let (_, reply) = ask(
            &url,
            &template.render(&ins.instruction, wrong, wrong).unwrap(),
        );
        assert_eq!(p_first(&reply), 0.5);
    }

    let (status, e) = ask(&url, "Which answer is better, A or B?");
    assert_eq!(status, 400);
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not follow the built-in judge template"),
        "{message}"
    );
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let (status, e) = ask(&url, &template.render("Who is Nobody?", "x", "y").unwrap());
    assert_eq!(status, 400);
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown instruction") && message.contains("Who is Nobody?"),
        "{message}"
    );

    server.shutdown().unwrap();
    let refused = reqwest::blocking::Client::new()
        .get(format!("{url}/models"))
        .timeout(std::time::Duration::from_secs(5))
        .send();
    assert!(refused.is_err(), "still answering after shutdown");
}

/// What `ckpt serve --oracle` refuses, before it listens.
#[test]
fn bad_oracle_input_is_a_clear_error() {
    let sb = Sandbox::new();
    // Exit code 1 for bad input, 2 for a bad command line (clap's).
    let err = |code: i32, args: &[&str]| {
        let out = sb.run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(1, &["serve", "--oracle", "missing.json"]);
    assert!(
        e.contains("missing.json") && e.contains("no such file"),
        "{e}"
    );
    sb.write("no_truth.json", r#"[{"instruction": "Say hi."}]"#);
    let e = err(1, &["serve", "--oracle", "no_truth.json"]);
    assert!(
        e.contains("no_truth.json") && e.contains("no `output`"),
        "{e}"
    );
    sb.write(
        "set.json",
        r#"[{"instruction": "Say hi.", "output": "Hi."}]"#,
    );
    let e = err(1, &["serve", "--oracle", "set.json", "--oracle-k", "0"]);
    assert!(e.contains("set.json") && e.contains("positive"), "{e}");
    let e = err(2, &["serve", "ckpt", "--oracle", "set.json"]);
    assert!(e.contains("--oracle"), "{e}");
}
