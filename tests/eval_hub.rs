//! `ckpt eval --hub`: a task's Parquet files downloaded from a Hub stand-in on loopback
//! (HF_ENDPOINT, HF_HOME) into huggingface_hub's cache layout, then read again offline
//! from the cache; a dataset without Parquet files on main read from the Hub's
//! conversion (`refs/convert/parquet`).

mod common;
#[path = "common/hub_server.rs"]
mod hub_server;

use common::{arg, Sandbox};
use hub_server::{HubServer, Options};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::sync::Arc;

/// BoolQ-shaped task (super_glue/boolq's columns: question, passage, idx, label).
const TASK: &str = r#"
task = "synthetic_boolq"
dataset_path = "synthetic/boolq"
dataset_name = "cfg"
output_type = "multiple_choice"
validation_split = "validation"
doc_to_text = "{{passage}}\nQuestion: {{question}}?\nAnswer:"
doc_to_target = "label"
doc_to_choice = "{{['no', 'yes']}}"
metric_list = [{ metric = "acc" }]
"#;

/// A Parquet file of `n` synthetic BoolQ rows.
fn boolq_parquet(n: usize) -> Vec<u8> {
    let schema = parquet::schema::parser::parse_message_type(
        "message doc { required binary question (STRING); required binary passage (STRING); \
         required int64 idx; required int64 label; }",
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut writer = SerializedFileWriter::new(
        &mut buf,
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut group = writer.next_row_group().unwrap();
    let texts = |f: &dyn Fn(usize) -> String| -> Vec<ByteArray> {
        (0..n).map(|i| ByteArray::from(f(i).as_str())).collect()
    };
    for values in [
        texts(&|i| format!("is the stone number {i} blue")),
        texts(&|i| format!("The stone number {i} sits by the river.")),
    ] {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
    }
    for values in [
        (0..n as i64).collect::<Vec<_>>(),
        (0..n as i64).map(|i| i % 2).collect(),
    ] {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    buf
}

/// `ckpt eval runs --tasks TASK --hub --store STORE --json`.
fn eval_args(task: &std::path::Path, store: &str) -> Vec<String> {
    [
        "eval",
        "runs",
        "--tasks",
        arg(task),
        "--hub",
        "--store",
        store,
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A checkpoint under `runs/` and the BoolQ-shaped task file; returns the task's path.
fn checkpoint_and_task(sb: &Sandbox) -> std::path::PathBuf {
    common::copy_dir(
        &common::fixture("llama_gqa"),
        &sb.path().join("runs/a/step-1"),
    );
    sb.write("boolq.toml", TASK)
}

#[test]
fn task_data_comes_from_the_hub_then_from_the_cache_offline() {
    let sb = Sandbox::new();
    let server = HubServer::start(Options::default(), Some(sb.path()));
    server.put_files(
        "synthetic/boolq",
        &[
            ("cfg/validation-00000-of-00001.parquet", boolq_parquet(6)),
            ("README.md", b"synthetic".to_vec()),
        ],
    );
    let task = checkpoint_and_task(&sb);
    let hf_home = sb.path().join("hf");
    let args = |store: &str| eval_args(&task, store);
    let out = sb
        .ckpt(args("a.sqlite"))
        .env("HF_ENDPOINT", &server.url)
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let acc = &report["checkpoints"][0]["metrics"][0];
    assert_eq!(acc["n"], 6, "{report}");
    assert!(
        server.ok_count("resolve") >= 1,
        "the Parquet file was downloaded"
    );
    // The store remembers that these scores are on the Hub dataset (model cards say so).
    let store = ckpt::store::Store::open(&sb.path().join("a.sqlite")).unwrap();
    let metric = &store.metrics(None).unwrap()[0];
    let info = store
        .task_info(&metric.task, &metric.spec_hash)
        .unwrap()
        .unwrap();
    assert_eq!(info.data_origin.as_deref(), Some("hub"));
    drop(store);
    // Where huggingface_hub keeps datasets, pinned to the commit main points at.
    let repo_dir = hf_home.join("hub/datasets--synthetic--boolq");
    let main = std::fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    assert_eq!(
        Some(main.trim().to_string()),
        server.head("synthetic/boolq", "main")
    );
    assert!(repo_dir
        .join("snapshots")
        .join(main.trim())
        .join("cfg/validation-00000-of-00001.parquet")
        .is_file());

    // Offline, with the server gone: the same docs from the cache.
    drop(server);
    let out = sb
        .ckpt(args("b.sqlite"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["checkpoints"][0]["metrics"][0]["value"], acc["value"]);

    // A split the Hub does not have is a clear error naming dataset and split.
    let missing = sb.write(
        "missing.toml",
        TASK.replace("validation_split = \"validation\"", "test_split = \"test\""),
    );
    let out = sb
        .ckpt([
            "eval",
            "runs",
            "--tasks",
            arg(&missing),
            "--hub",
            "--store",
            "c.sqlite",
        ])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("synthetic/boolq") && stderr.contains("test"),
        "{stderr}"
    );
}

/// A dataset whose main revision has no Parquet files is read from the Hub's automatic
/// conversion, `refs/convert/parquet` (`<config>/<split>/NNNN.parquet`), as lm-eval's
/// `datasets` would find it; offline, from the cache.
#[test]
fn the_parquet_conversion_is_the_fallback() {
    let sb = Sandbox::new();
    let server = HubServer::start(Options::default(), Some(sb.path()));
    server.put_files("synthetic/boolq", &[("README.md", b"scripted".to_vec())]);
    server.put_revision(
        "synthetic/boolq",
        "refs/convert/parquet",
        &[("cfg/validation/0000.parquet", boolq_parquet(5))],
    );
    let task = checkpoint_and_task(&sb);
    let hf_home = sb.path().join("hf");
    for (offline, store) in [(false, "a.sqlite"), (true, "b.sqlite")] {
        let mut cmd = sb.ckpt(eval_args(&task, store));
        cmd.env("HF_HOME", &hf_home).env_remove("HF_TOKEN");
        if offline {
            cmd.env("HF_ENDPOINT", "http://127.0.0.1:9")
                .env("HF_HUB_OFFLINE", "1");
        } else {
            cmd.env("HF_ENDPOINT", &server.url)
                .env_remove("HF_HUB_OFFLINE");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["checkpoints"][0]["metrics"][0]["n"], 5, "{report}");
    }
}
