//! `ckpt synth` through the real binary: the files it writes exist, parse, and hold
//! what was asked for.

mod common;

use common::{arg, Sandbox};
use serde_json::Value;
use std::path::Path;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn writes_every_file_in_its_format() {
    let sb = Sandbox::new();
    let out = sb.path().join("world");
    let args = [
        "synth",
        "--out",
        arg(&out),
        "--seed",
        "3",
        "--entities",
        "16",
        "--pretrain-docs",
        "50",
        "--midtrain-docs",
        "20",
        "--sft-chats",
        "15",
        "--validation-docs",
        "10",
    ];
    let run = sb.ckpt(args).assert().success();
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(
        stdout.contains("pretrain") && stdout.contains("16 entities"),
        "{stdout}"
    );

    for (file, n) in [
        ("pretrain.jsonl", 50),
        ("midtrain.jsonl", 20),
        ("validation.jsonl", 10),
    ] {
        let records = lines(&out.join(file));
        assert_eq!(records.len(), n, "{file}");
        assert!(records
            .iter()
            .all(|r| r["text"].as_str().is_some_and(|t| !t.is_empty())));
    }
    let chats = lines(&out.join("sft.jsonl"));
    assert_eq!(chats.len(), 15);
    for chat in &chats {
        let messages = chat["messages"].as_array().unwrap();
        assert_eq!(messages.last().unwrap()["role"], "assistant");
        assert!(messages.iter().all(|m| m["content"].is_string()));
    }
    let world: Value =
        serde_json::from_slice(&std::fs::read(out.join("world.json")).unwrap()).unwrap();
    assert_eq!(world["seed"], 3);
    assert_eq!(world["entities"].as_array().unwrap().len(), 16);
    assert!(world["facts"].as_array().unwrap().len() >= 16 * 3);

    // The same flags again: the same bytes.
    let again = sb.path().join("again");
    let args2: Vec<&str> = args
        .iter()
        .map(|a| if *a == arg(&out) { arg(&again) } else { a })
        .collect();
    sb.ckpt(args2).assert().success();
    for f in ckpt::synth::FILES {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn json_summary_and_defaults() {
    let sb = Sandbox::new();
    let out = sb.path().join("d");
    let summary = sb.run_json(["synth", "--out", arg(&out), "--json"]);
    let defaults = ckpt::synth::SynthConfig::default();
    assert_eq!(summary["config"]["pretrain_docs"], defaults.pretrain_docs);
    assert_eq!(summary["parts"][0]["items"], defaults.pretrain_docs);
    assert!(summary["distinct_words"].as_u64().unwrap() > 100);
    assert_eq!(lines(&out.join("sft.jsonl")).len(), defaults.sft_chats);
}

#[test]
fn zero_entities_is_a_clean_error() {
    let sb = Sandbox::new();
    let out = sb.run(["synth", "--out", "x", "--entities", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("entity"),
        "{stderr}"
    );
    assert!(!sb.path().join("x").exists());
}
