//! The feed-forward block: gated (`down(act(gate(x)) * up(x))`: SwiGLU, GeGLU) or
//! plain (`down(act(up(x)))`: GPT-NeoX).

use super::arch::Names;
use super::config::{Activation, ModelConfig};
use super::kernels::Kernels;
use super::linear::{Linear, Weight};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    activation: Activation,
}

impl Mlp {
    pub(crate) fn load(cfg: &ModelConfig, names: &Names, vb: &VarBuilder) -> Result<Self> {
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let gate = match names.gate {
            Some(name) => Some(Linear::load(h, i, bias, vb.pp(name))?),
            None => None,
        };
        Ok(Self {
            gate,
            up: Linear::load(h, i, bias, vb.pp(names.up))?,
            down: Linear::load(i, h, bias, vb.pp(names.down))?,
            activation: cfg.activation,
        })
    }

    pub(crate) fn weights_mut(&mut self) -> impl Iterator<Item = &mut Weight> {
        self.gate
            .iter_mut()
            .chain([&mut self.up, &mut self.down])
            .map(Linear::weight_mut)
    }

    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let up = self.up.forward(x, kernels)?;
        let hidden = match &self.gate {
            Some(gate) => {
                let gate = gate.forward(x, kernels)?;
                // One pass for SwiGLU where a fused kernel serves these tensors.
                let fused = match (kernels, self.activation) {
                    (Kernels::Inference, Activation::Silu) => {
                        super::avx512_rows::silu_mul_tensor(&gate, &up)?
                    }
                    (Kernels::Trainable, Activation::Silu) => {
                        Some(super::fused::swiglu(&gate, &up)?)
                    }
                    _ => None,
                };
                match fused {
                    Some(hidden) => hidden,
                    None => (activate(&gate, self.activation, kernels)? * up)?,
                }
            }
            None => activate(&up, self.activation, kernels)?,
        };
        self.down.forward(&hidden, kernels)
    }
}

fn activate(x: &Tensor, activation: Activation, kernels: Kernels) -> Result<Tensor> {
    match activation {
        Activation::Silu => x.silu(),
        // candle's `gelu` is the tanh approximation, but its backward rounds the
        // constants to six digits (gradients off by ~1e-5 relative): training and
        // sharpness compose it from exact ops instead.
        Activation::GeluTanh if kernels.differentiable() => gelu_tanh_composed(x),
        Activation::GeluTanh => x.gelu(),
        Activation::Gelu => x.gelu_erf(),
    }
}

/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` from differentiable ops.
fn gelu_tanh_composed(x: &Tensor) -> Result<Tensor> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = ((x + ((x.sqr()? * x)? * 0.044715)?)? * c)?;
    ((inner.tanh()? + 1.0)? * 0.5)? * x
}
