//! A Llama-family decoder (Llama 2/3, Mistral, Qwen2) on candle.
//!
//! Unlike candle-transformers' `llama`, this one returns logits at any positions asked
//! for (never `[batch, seq, vocab]` when a few rows are needed), keeps a [`KvCache`]
//! that can be shared by several continuations, and trains: with
//! [`Llama::set_differentiable`] every op on the path has a backward pass, and with
//! [`Llama::set_twice_differentiable`] every op is a composite of candle's own ops, whose
//! backward can itself be differentiated (exact Hessian-vector products).
//!
//! ```no_run
//! # use ckpt::model::{Llama, KvCache};
//! # fn run(model: &Llama, ids: &candle_core::Tensor) -> candle_core::Result<()> {
//! let mut cache = KvCache::new(model.config().num_hidden_layers);
//! let hidden = model.hidden_states(ids, &mut cache)?;      // [batch, seq, hidden]
//! let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?;
//! let logits = model.logits(&last)?;                        // [batch, vocab]
//! # Ok(()) }
//! ```

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::rope::{self, RotaryTables};
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Which kernels a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// candle's fused kernels: fastest, no gradient.
    Inference,
    /// Our fused kernels with a backward pass (training).
    Trainable,
    /// candle's elementary ops only: the backward is itself differentiable when candle
    /// keeps the gradient graph (`CANDLE_GRAD_DO_NOT_DETACH`).
    Composite,
}

impl Kernels {
    fn differentiable(self) -> bool {
        self != Kernels::Inference
    }
}

/// RMSNorm with a learned scale, computed in f32 as transformers does.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        // candle's fused kernel rounds the RMS itself to bf16/f16 before dividing (a
        // per-row error up to 2^-8); transformers divides in f32. So the fused kernel
        // serves f32 inference only.
        if kernels == Kernels::Inference && x.dtype() == DType::F32 {
            return candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32);
        }
        if kernels == Kernels::Trainable {
            super::fused::rms_norm(x, &self.weight, self.eps)
        } else {
            super::fused::rms_norm_composed(x, &self.weight, self.eps)
        }
    }
}

/// A dense layer `x W^T + b` with HF's `[out, in]` weight layout.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `x`: `[batch, seq, in]`. Runs as one `[batch * seq, in]` GEMM: candle's own
    /// `Linear` broadcasts the weight into a batched matmul, which is slower on CPU.
    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let fused = if kernels == Kernels::Trainable {
            super::fused::linear(x, &self.weight)?
        } else {
            None
        };
        let y = match fused {
            Some(y) => y,
            None => {
                let (b, t, d) = x.dims3()?;
                let y = x.reshape((b * t, d))?.matmul(&self.weight.t()?)?;
                y.reshape((b, t, ()))?
            }
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Ok(Linear { weight, bias })
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_attention_heads * d;
        let kv = cfg.num_key_value_heads * d;
        Ok(Self {
            q_proj: linear(h, q, cfg.qkv_bias, vb.pp("q_proj"))?,
            k_proj: linear(h, kv, cfg.qkv_bias, vb.pp("k_proj"))?,
            v_proj: linear(h, kv, cfg.qkv_bias, vb.pp("v_proj"))?,
            o_proj: linear(q, h, cfg.o_bias, vb.pp("o_proj"))?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// `x`: `[batch, seq, hidden]`; `mask`: `[seq, cached + seq]` of 0 / -inf.
    fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        layer: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let q = self.heads_of(&self.q_proj, x, self.num_heads, step, true)?;
        let k = self.heads_of(&self.k_proj, x, self.num_kv_heads, step, true)?;
        let v = self.heads_of(&self.v_proj, x, self.num_kv_heads, step, false)?;
        let (k, v) = cache.append(layer, k, v)?;
        let s = k.dim(2)?;

        // Long sequences: attend in blocks of query rows so the [t, s] scores of all
        // heads stay under `max_score_floats` (an 8k-token window of a 32-head
        // model would otherwise need 8.6 GB per layer).
        let rows = (step.max_score_floats / (b * self.num_heads * s).max(1)).max(1);
        let mask = step.mask_for(layer);
        let out = if rows >= t {
            self.attend_merged(&q, &k, &v, mask, step.kernels)?
        } else {
            let blocks = (0..t)
                .step_by(rows)
                .map(|i| {
                    let n = rows.min(t - i);
                    self.attend_merged(
                        &q.narrow(2, i, n)?,
                        &k,
                        &v,
                        &mask.narrow(0, i, n)?,
                        step.kernels,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&blocks, 1)?
        };
        self.o_proj.forward(&out, step.kernels)
    }

    /// `proj(x)` as `n` heads `[batch, n, seq, head_dim]`, rotated if `rotate`.
    fn heads_of(
        &self,
        proj: &Linear,
        x: &Tensor,
        n: usize,
        step: &Step,
        rotate: bool,
    ) -> Result<Tensor> {
        let p = proj.forward(x, step.kernels)?;
        if step.kernels == Kernels::Trainable {
            // One pass splits into heads (and rotates), where a fused kernel exists.
            let fused = if rotate {
                super::fused::rotate_into_heads(&p, n, &step.cos, &step.sin)?
            } else {
                super::fused::split_heads(&p, n)?
            };
            if let Some(heads) = fused {
                return Ok(heads);
            }
        }
        let (b, t, _) = p.dims3()?;
        let heads = p
            .reshape((b, t, n, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        if rotate {
            rope::apply(&heads, &step.cos, &step.sin, step.kernels.differentiable())
        } else {
            Ok(heads)
        }
    }

    /// [`Self::attend`] with the heads merged: `[b, t, heads * d]`.
    fn attend_merged(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        kernels: Kernels,
    ) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let (heads, d) = (self.num_heads, self.head_dim);
        if kernels == Kernels::Trainable {
            // Scores and probabilities stay inside one op, where a fused kernel exists.
            if let Some(out) = super::fused::attention(q, k, v, mask, self.scale())? {
                return Ok(out);
            }
        }
        self.attend(q, k, v, mask, kernels)?
            .transpose(1, 2)?
            .reshape((b, t, heads * d))
    }

    /// `1 / sqrt(head_dim)`.
    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// Softmax attention of `q` `[b, heads, t, d]` over `k`, `v` `[b, kv_heads, s, d]`
    /// with `mask` `[t, s]`; returns `[b, heads, t, d]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        kernels: Kernels,
    ) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let s = k.dim(2)?;
        // Group the query heads that share a key/value head instead of copying K and V:
        // q [b, kv, rep * t, d] against k [b, kv, s, d].
        let rep = self.num_heads / self.num_kv_heads;
        let grouped = (b, self.num_kv_heads, rep * t, self.head_dim);
        let scale = self.scale();
        let probs = if kernels == Kernels::Trainable {
            // Scaling and masking happen inside the softmax kernel, which saves passes
            // over the scores and their gradient.
            let scores = q
                .reshape(grouped)?
                .matmul(&k.t()?)?
                .to_dtype(compute_dtype(q.dtype()))?;
            super::fused::masked_softmax(&scores, mask, scale)?
        } else {
            // Scaling q (t rows) is cheaper than scaling the scores (t x s).
            let q = (q * scale)?.contiguous()?.reshape(grouped)?;
            let scores = q
                .matmul(&k.t()?)?
                .to_dtype(compute_dtype(q.dtype()))?
                .reshape((b, self.num_kv_heads, rep, t, s))?
                .broadcast_add(mask)?;
            let probs = if kernels == Kernels::Composite {
                candle_nn::ops::softmax(&scores, D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            };
            probs.reshape((b, self.num_kv_heads, rep * t, s))?
        };
        probs
            .to_dtype(v.dtype())?
            .matmul(v)?
            .reshape((b, self.num_heads, t, self.head_dim))
    }
}

/// Default bound on the attention scores held at once (f32 elements, all heads): 256 MB.
const MAX_SCORE_FLOATS: usize = 64 << 20;

/// SwiGLU feed-forward block.
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: linear(h, i, bias, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, bias, vb.pp("up_proj"))?,
            down_proj: linear(i, h, bias, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, kernels)?;
        let up = self.up_proj.forward(x, kernels)?;
        let product = if kernels == Kernels::Trainable {
            super::fused::swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        self.down_proj.forward(&product, kernels)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// What every layer of one forward step shares: rotary angles, masks, the op flavour.
struct Step {
    cos: Tensor,
    sin: Tensor,
    /// One mask per distinct sliding window (`masks[window_of[layer]]`).
    masks: Vec<Tensor>,
    window_of: Vec<usize>,
    kernels: Kernels,
    max_score_floats: usize,
}

impl Step {
    fn mask_for(&self, layer: usize) -> &Tensor {
        &self.masks[self.window_of[layer]]
    }
}

/// Softmax and normalisation run in f32 (f64 for f64 models), as transformers does.
fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Causal mask `[t, cached + t]` (0 where attended, -inf elsewhere), optionally limited
/// to a sliding window: query `i` (absolute `cached + i`) sees key `j` iff
/// `j <= cached + i` and `cached + i - j < window`.
fn causal_mask(
    t: usize,
    cached: usize,
    window: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let s = cached + t;
    let mut data = vec![0f32; t * s];
    for i in 0..t {
        let q = cached + i;
        for j in 0..s {
            let visible = j <= q && window.is_none_or(|w| q - j < w);
            if !visible {
                data[i * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(data, (t, s), dev)?.to_dtype(dtype)
}

/// The Llama-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: RotaryTables,
    cfg: LlamaConfig,
    kernels: Kernels,
    max_score_floats: usize,
}

impl Llama {
    /// Builds the model from Hugging Face tensor names under `vb` (`model.*`, `lm_head`).
    pub fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = m.pp(format!("layers.{i}"));
                Ok(DecoderLayer {
                    input_layernorm: RmsNorm::load(
                        cfg.hidden_size,
                        cfg.rms_norm_eps,
                        l.pp("input_layernorm"),
                    )?,
                    self_attn: Attention::load(cfg, l.pp("self_attn"))?,
                    post_attention_layernorm: RmsNorm::load(
                        cfg.hidden_size,
                        cfg.rms_norm_eps,
                        l.pp("post_attention_layernorm"),
                    )?,
                    mlp: Mlp::load(cfg, l.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        // Tied models store no lm_head; transformers ties it to the embedding even when
        // a stale copy is present.
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?
        };
        // Tables past 8k positions are computed when a window needs them (Llama 3.1
        // declares 131k positions; precomputing them all costs 67 MB and a second).
        let table_len = cfg.max_position_embeddings.min(8192);
        let rope = RotaryTables::new(cfg, table_len, vb.dtype(), vb.device())?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            cfg: cfg.clone(),
            kernels: Kernels::Inference,
            max_score_floats: MAX_SCORE_FLOATS,
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// `true`: only ops with a backward pass (training, sharpness); `false` (default):
    /// candle's fused kernels, which are faster but pass no gradient.
    pub fn set_differentiable(&mut self, differentiable: bool) {
        self.kernels = if differentiable {
            Kernels::Trainable
        } else {
            Kernels::Inference
        };
    }

    /// `true`: candle's elementary ops only (no fused kernel), so the backward pass can
    /// itself be differentiated: exact Hessian-vector products by double backward, when
    /// candle keeps the gradient graph. Several times slower than
    /// [`Self::set_differentiable`]; `false` goes back to inference kernels.
    pub fn set_twice_differentiable(&mut self, twice: bool) {
        self.kernels = if twice {
            Kernels::Composite
        } else {
            Kernels::Inference
        };
    }

    /// Bounds the attention scores held at once (elements over all heads and rows);
    /// longer sequences are attended in blocks of query rows. Results do not change.
    pub fn set_max_score_floats(&mut self, n: usize) {
        self.max_score_floats = n.max(1);
    }

    /// Final (normed) hidden states `[batch, seq, hidden]` of `input_ids` `[batch, seq]`
    /// (u32), continuing from whatever `cache` holds and appending to it.
    pub fn hidden_states(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let cached = cache.len();
        if cached > 0 && cache.batch_size() != b {
            candle_core::bail!(
                "cache holds batch {} but input has batch {b}",
                cache.batch_size()
            );
        }
        let step = self.step(t, cached)?;
        let mut x = self
            .embed_tokens
            .embedding(&input_ids.flatten_all()?)?
            .reshape((b, t, ()))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x, self.kernels)?;
            x = (x + layer.self_attn.forward(&h, &step, i, cache)?)?;
            let h = layer.post_attention_layernorm.forward(&x, self.kernels)?;
            x = (&x + layer.mlp.forward(&h, self.kernels)?)?;
        }
        self.norm.forward(&x, self.kernels)
    }

    /// Logits `[rows, vocab]` of hidden-state rows `[rows, hidden]`. Callers pick the
    /// rows they need first, so the vocabulary projection runs on those only.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        if self.kernels == Kernels::Trainable {
            if let Some(logits) = super::fused::linear(hidden_rows, &self.lm_head)? {
                return Ok(logits);
            }
        }
        hidden_rows.matmul(&self.lm_head.t()?)
    }

    /// Logits at the given `(batch, position)` pairs of `input_ids`: `[pairs, vocab]`.
    pub fn logits_at(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        positions: &[(usize, usize)],
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache)?;
        let rows = select_rows(&hidden, positions)?;
        self.logits(&rows)
    }

    /// Mean next-token cross-entropy of `input_ids` `[batch, seq]`: position `i`
    /// predicts token `i + 1`. The training and sharpness objective.
    pub fn next_token_loss(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.next_token_losses(input_ids)?.mean_all()
    }

    /// Per-token next-token cross-entropy `[batch, seq - 1]` of `input_ids`: entry
    /// `(b, i)` is `-log p(token i + 1 | tokens <= i)`. Callers weight it (SFT masks
    /// everything but the assistant's tokens).
    pub fn next_token_losses(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t < 2 {
            candle_core::bail!("next-token loss needs at least 2 tokens per row, got {t}");
        }
        let hidden = self.hidden_states(input_ids, &mut KvCache::new(self.layers.len()))?;
        let rows = hidden.narrow(1, 0, t - 1)?.reshape((b * (t - 1), ()))?;
        let targets = input_ids.narrow(1, 1, t - 1)?.flatten_all()?;
        let fused = if self.kernels == Kernels::Trainable {
            super::loss::projected_cross_entropy(&rows, &self.lm_head, &targets)?
        } else {
            None
        };
        let losses = match fused {
            Some(losses) => losses,
            None => {
                let logits = self.logits(&rows)?.to_dtype(compute_dtype(self.dtype()))?;
                if self.kernels == Kernels::Composite {
                    super::loss::composed_cross_entropy(&logits, &targets)?
                } else {
                    super::loss::token_cross_entropy(&logits, &targets)?
                }
            }
        };
        losses.reshape((b, t - 1))
    }

    fn step(&self, t: usize, cached: usize) -> Result<Step> {
        let dev = self.device();
        let (cos, sin) = self.rope.cos_sin(cached, t)?;
        let mut windows: Vec<Option<usize>> = Vec::new();
        let window_of = self
            .cfg
            .sliding_window
            .iter()
            .map(|w| match windows.iter().position(|x| x == w) {
                Some(i) => i,
                None => {
                    windows.push(*w);
                    windows.len() - 1
                }
            })
            .collect();
        let masks = windows
            .iter()
            .map(|w| causal_mask(t, cached, *w, compute_dtype(self.dtype()), dev))
            .collect::<Result<_>>()?;
        Ok(Step {
            cos,
            sin,
            masks,
            window_of,
            kernels: self.kernels,
            max_score_floats: self.max_score_floats,
        })
    }
}

/// Rows of `hidden` (`[batch, seq, h]`) at `(batch, position)` pairs: `[pairs, h]`.
pub fn select_rows(hidden: &Tensor, positions: &[(usize, usize)]) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let index: Vec<u32> = positions
        .iter()
        .map(|&(row, pos)| {
            if row >= b || pos >= t {
                candle_core::bail!("position ({row}, {pos}) outside [{b}, {t}]");
            }
            Ok((row * t + pos) as u32)
        })
        .collect::<Result<_>>()?;
    let index = Tensor::from_vec(index, positions.len(), hidden.device())?;
    hidden.reshape((b * t, h))?.index_select(&index, 0)
}
