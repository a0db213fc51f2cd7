//! The trainer's optimizer step against PyTorch: three AdamW steps of a tiny Llama
//! with parameter groups, clipping, gradient accumulation and an SFT loss mask, from
//! the same weights on the same batches (`scripts/make_train_fixture.py`).

use candle_core::{DType, Device, Var};
use ckpt::checkpoint::{Checkpoint, WeightFiles};
use ckpt::model::parameter_shapes;
use ckpt::train::data::Batch;
use ckpt::train::optimizer::{AdamW, OptimizerConfig};
use ckpt::train::trainer::{build_model, optimizer_step};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Fixture {
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    lr: f64,
    loss: f64,
    grad_norm: f64,
    micro_batches: Vec<Micro>,
}

#[derive(Deserialize)]
struct Micro {
    tokens: Vec<Vec<u32>>,
    loss_mask: Vec<Vec<f32>>,
}

fn batch(m: &Micro) -> Batch {
    let len = m.tokens[0].len();
    let all_ones = m.loss_mask.iter().all(|r| r[1..].iter().all(|&w| w == 1.0));
    Batch {
        rows: m.tokens.len(),
        len,
        tokens: m.tokens.concat(),
        // Full masks go through the unmasked path, so both paths are checked.
        loss_mask: (!all_ones).then(|| m.loss_mask.concat()),
    }
}

#[test]
fn three_steps_match_pytorch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train");
    let fixture: Fixture =
        serde_json::from_str(&std::fs::read_to_string(root.join("steps.json")).unwrap()).unwrap();
    let init = Checkpoint::open(&root.join("init")).unwrap();
    let cfg = init.config().unwrap();
    let files = init.weights().unwrap();
    let vars: Vec<(String, Var)> = parameter_shapes(&cfg)
        .into_iter()
        .map(|(name, _)| {
            let t = files.load(&name, DType::F32, &Device::Cpu).unwrap();
            (name, Var::from_tensor(&t).unwrap())
        })
        .collect();
    let mut opt = AdamW::new(OptimizerConfig::default(), vars.clone()).unwrap();
    let model = build_model(&cfg, &vars, DType::F32).unwrap();
    for (i, step) in fixture.steps.iter().enumerate() {
        let batches: Vec<Batch> = step.micro_batches.iter().map(batch).collect();
        let (loss, report) =
            optimizer_step(&model, &vars, &mut opt, &batches, step.lr, i as u64 + 1).unwrap();
        assert!(
            (loss - step.loss).abs() < 1e-5,
            "step {i}: loss {loss} vs {}",
            step.loss
        );
        let rel = (report.grad_norm - step.grad_norm).abs() / step.grad_norm;
        assert!(
            rel < 1e-4,
            "step {i}: grad norm {} vs {}",
            report.grad_norm,
            step.grad_norm
        );
    }
    let after = WeightFiles::open(&root.join("after")).unwrap();
    let mut worst = (0.0f32, String::new());
    for (name, var) in &vars {
        let want: Vec<f32> = after
            .load(name, DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        for (g, w) in got.iter().zip(&want) {
            if (g - w).abs() > worst.0 {
                worst = ((g - w).abs(), name.clone());
            }
        }
    }
    // Updates are up to ~2e-2 per step; f32 reduction order differs from PyTorch's.
    assert!(
        worst.0 < 2e-5,
        "largest weight difference {} in {}",
        worst.0,
        worst.1
    );
}
