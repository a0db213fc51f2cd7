//! Checkpoints for the Hub tests: the tiny GPT-NeoX fixture with its weights scaled,
//! so that each revision of a synthetic suite holds different weights.

#![allow(dead_code)] // each test file uses its own subset

use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::Value;
use std::process::{Command, Output};

/// `ckpt ARGS...` in the sandbox with the Hugging Face variables of a test only:
/// `endpoint` as `HF_ENDPOINT`, `<sandbox>/hf` as `HF_HOME`, no token, online, the
/// default log level.
pub fn hf_ckpt<I, S>(sb: &super::common::Sandbox, endpoint: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ckpt"));
    cmd.current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env_remove("CKPT_DEVICE")
        .env_remove("CKPT_LOG")
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", sb.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_HUB_OFFLINE")
        .args(args);
    cmd
}

/// The JSON a successful command printed (its stderr when it failed).
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "ckpt failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The tiny GPT-NeoX checkpoint's files, its weights scaled by `1 + k/20`.
pub fn checkpoint_files(k: u32) -> Vec<(&'static str, Vec<u8>)> {
    let dir = super::common::fixture_in("arch", "gpt_neox_parallel");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    vec![
        ("config.json", read("config.json")),
        ("tokenizer.json", read("tokenizer.json")),
        ("tokenizer_config.json", read("tokenizer_config.json")),
        ("model.safetensors", scaled(&read("model.safetensors"), k)),
    ]
}

/// f32 safetensors weights with every value scaled by `1 + k/20`.
pub fn scaled(weights: &[u8], k: u32) -> Vec<u8> {
    let st = SafeTensors::deserialize(weights).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let factor = 1.0 + k as f32 / 20.0;
    for (_, dtype, _, data) in owned.iter_mut() {
        assert_eq!(*dtype, safetensors::Dtype::F32);
        for x in data.chunks_exact_mut(4) {
            let v = f32::from_le_bytes(x.try_into().unwrap()) * factor;
            x.copy_from_slice(&v.to_le_bytes());
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}
