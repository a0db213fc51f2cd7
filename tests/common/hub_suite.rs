//! Checkpoints for the Hub tests: the tiny GPT-NeoX fixture with its weights scaled,
//! so that each revision of a synthetic suite holds different weights.

#![allow(dead_code)] // each test file uses its own subset

use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

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
