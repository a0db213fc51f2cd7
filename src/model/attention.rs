//! Self-attention for every architecture: grouped-query heads, optional q/k norms,
//! full or partial RoPE, optional score soft-capping, causal and sliding masks, a KV
//! cache, and attention in blocks of query rows for long windows.

use super::arch::{Names, QkNorm, QkvNames, Spec};
use super::cache::KvCache;
use super::config::ModelConfig;
use super::kernels::Kernels;
use super::linear::{Linear, Weight};
use super::norm::{apply, compute_dtype, Norm};
use super::rope;
use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

/// The query, key and value projections, as the architecture stores them.
#[derive(Debug, Clone)]
enum Projections {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// GPT-NeoX's `[heads, (q, k, v), head_dim]` rows in one matrix.
    FusedPerHead(Linear),
}

/// What every layer of one forward step shares: rotary angles, masks, the op flavour.
pub(crate) struct Step {
    /// One `(cos, sin)` per distinct RoPE of the model; `rope_of[layer]` picks it.
    pub(crate) ropes: Vec<(Tensor, Tensor)>,
    pub(crate) rope_of: Vec<Option<usize>>,
    /// One mask per distinct sliding window (`masks[window_of[layer]]`).
    pub(crate) masks: Vec<Tensor>,
    pub(crate) window_of: Vec<usize>,
    pub(crate) kernels: Kernels,
    pub(crate) max_score_floats: usize,
}

impl Step {
    fn mask_for(&self, layer: usize) -> &Tensor {
        &self.masks[self.window_of[layer]]
    }

    fn rope_for(&self, layer: usize) -> Option<&(Tensor, Tensor)> {
        self.rope_of[layer].map(|i| &self.ropes[i])
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    projections: Projections,
    o_proj: Linear,
    qk_norm: QkNorm,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    pub(crate) fn load(cfg: &ModelConfig, spec: &Spec, vb: &VarBuilder) -> Result<Self> {
        let names: &Names = &spec.names;
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_attention_heads * d;
        let kv = cfg.num_key_value_heads * d;
        let projections = match names.qkv {
            QkvNames::Separate {
                q: qn,
                k: kn,
                v: vn,
            } => Projections::Separate {
                q: Linear::load(h, q, cfg.qkv_bias, vb.pp(qn))?,
                k: Linear::load(h, kv, cfg.qkv_bias, vb.pp(kn))?,
                v: Linear::load(h, kv, cfg.qkv_bias, vb.pp(vn))?,
            },
            QkvNames::FusedPerHead(name) => {
                Projections::FusedPerHead(Linear::load(h, q + 2 * kv, cfg.qkv_bias, vb.pp(name))?)
            }
        };
        let (q_size, k_size) = match spec.qk_norm {
            QkNorm::PerHead => (d, d),
            _ => (q, kv),
        };
        let norm = |name: Option<&str>, size| -> Result<Option<Norm>> {
            match (spec.qk_norm, name) {
                (QkNorm::None, _) | (_, None) => Ok(None),
                (_, Some(name)) => Norm::load(spec.norm, size, cfg.norm_eps, vb.pp(name)).map(Some),
            }
        };
        Ok(Self {
            projections,
            o_proj: Linear::load(q, h, cfg.o_bias, vb.pp(names.o))?,
            qk_norm: spec.qk_norm,
            q_norm: norm(names.q_norm, q_size)?,
            k_norm: norm(names.k_norm, k_size)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            rotary_dim: cfg.rotary_dim,
            scale: cfg.attention_scale(),
            softcap: cfg.attn_softcap,
        })
    }

    pub(crate) fn weights_mut(&mut self) -> impl Iterator<Item = &mut Weight> {
        let projections: Vec<&mut Linear> = match &mut self.projections {
            Projections::Separate { q, k, v } => vec![q, k, v],
            Projections::FusedPerHead(qkv) => vec![qkv],
        };
        projections
            .into_iter()
            .chain([&mut self.o_proj])
            .map(Linear::weight_mut)
    }

    /// `x`: `[batch, seq, hidden]`; attends over whatever `cache` holds plus `x`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        layer: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let b = x.dim(0)?;
        let (q, k, v) = self.heads(x, step, layer)?;
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
                        &mask.narrow(mask.rank() - 2, i, n)?,
                        step.kernels,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&blocks, 1)?
        };
        self.o_proj.forward(&out, step.kernels)
    }

    /// Queries, keys and values as heads `[batch, n, seq, head_dim]`, normalised and
    /// rotated as the architecture does.
    fn heads(&self, x: &Tensor, step: &Step, layer: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let rope = step.rope_for(layer);
        match &self.projections {
            Projections::Separate { q, k, v } => {
                let mut qp = q.forward(x, step.kernels)?;
                let mut kp = k.forward(x, step.kernels)?;
                if self.qk_norm == QkNorm::Whole {
                    qp = apply(&self.q_norm, &qp, step.kernels)?;
                    kp = apply(&self.k_norm, &kp, step.kernels)?;
                }
                let vp = v.forward(x, step.kernels)?;
                Ok((
                    self.query_or_key_heads(&qp, self.num_heads, step, rope, true)?,
                    self.query_or_key_heads(&kp, self.num_kv_heads, step, rope, false)?,
                    self.split(&vp, self.num_kv_heads, step)?,
                ))
            }
            Projections::FusedPerHead(qkv) => {
                let (b, t, _) = x.dims3()?;
                let d = self.head_dim;
                let all = qkv
                    .forward(x, step.kernels)?
                    .reshape((b, t, self.num_heads, 3 * d))?;
                let part = |i: usize| {
                    all.narrow(D::Minus1, i * d, d)?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let (q, k, v) = (part(0)?, part(1)?, part(2)?);
                Ok((
                    self.rotate(&q, rope, step.kernels)?,
                    self.rotate(&k, rope, step.kernels)?,
                    v,
                ))
            }
        }
    }

    /// A query or key projection as heads, per-head normalised and rotated.
    fn query_or_key_heads(
        &self,
        p: &Tensor,
        n: usize,
        step: &Step,
        rope: Option<&(Tensor, Tensor)>,
        is_query: bool,
    ) -> Result<Tensor> {
        let whole_rotation = self.rotary_dim == self.head_dim;
        // The fused kernels take one set of angles for all rows.
        let shared_angles = rope.is_none_or(|(cos, _)| cos.rank() == 2);
        if step.kernels == Kernels::Trainable
            && self.qk_norm != QkNorm::PerHead
            && whole_rotation
            && shared_angles
        {
            // One pass splits into heads (and rotates), where a fused kernel exists.
            let fused = match rope {
                Some((cos, sin)) => super::fused::rotate_into_heads(p, n, cos, sin)?,
                None => super::fused::split_heads(p, n)?,
            };
            if let Some(heads) = fused {
                return Ok(heads);
            }
        }
        let mut heads = self.to_heads(p, n)?;
        if self.qk_norm == QkNorm::PerHead {
            let norm = if is_query { &self.q_norm } else { &self.k_norm };
            heads = apply(norm, &heads, step.kernels)?;
        }
        self.rotate(&heads, rope, step.kernels)
    }

    /// Values as heads.
    fn split(&self, p: &Tensor, n: usize, step: &Step) -> Result<Tensor> {
        if step.kernels == Kernels::Trainable {
            if let Some(heads) = super::fused::split_heads(p, n)? {
                return Ok(heads);
            }
        }
        self.to_heads(p, n)
    }

    fn to_heads(&self, p: &Tensor, n: usize) -> Result<Tensor> {
        let (b, t, _) = p.dims3()?;
        p.reshape((b, t, n, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// RoPE on the first `rotary_dim` of each head; the rest passes through.
    fn rotate(
        &self,
        heads: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        kernels: Kernels,
    ) -> Result<Tensor> {
        let Some((cos, sin)) = rope else {
            return Ok(heads.clone());
        };
        let differentiable = kernels.differentiable();
        if self.rotary_dim == self.head_dim {
            return rope::apply(heads, cos, sin, differentiable);
        }
        let r = self.rotary_dim;
        let rotated = rope::apply(&heads.narrow(D::Minus1, 0, r)?, cos, sin, differentiable)?;
        let pass = heads.narrow(D::Minus1, r, self.head_dim - r)?;
        Tensor::cat(&[&rotated, &pass], D::Minus1)
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
        if kernels == Kernels::Inference && self.softcap.is_none() {
            if let Some(out) = super::cpu_attention::attend(q, k, v, mask, self.scale)? {
                return Ok(out);
            }
        }
        if kernels == Kernels::Trainable && self.softcap.is_none() && mask.rank() == 2 {
            // Scores and probabilities stay inside one op, where a fused kernel exists.
            if let Some(out) = super::fused::attention(q, k, v, mask, self.scale)? {
                return Ok(out);
            }
        }
        self.attend(q, k, v, mask, kernels)?
            .transpose(1, 2)?
            .reshape((b, t, heads * d))
    }

    /// Softmax attention of `q` `[b, heads, t, d]` over `k`, `v` `[b, kv_heads, s, d]`
    /// with `mask` `[t, s]` (or per row, `[b, 1, 1, t, s]`); returns `[b, heads, t, d]`.
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
        let probs = if kernels == Kernels::Trainable && self.softcap.is_none() && mask.rank() == 2 {
            // Scaling and masking happen inside the softmax kernel, which saves passes
            // over the scores and their gradient.
            let scores = q
                .reshape(grouped)?
                .matmul(&k.t()?)?
                .to_dtype(compute_dtype(q.dtype()))?;
            super::fused::masked_softmax(&scores, mask, self.scale)?
        } else {
            // Scaling q (t rows) is cheaper than scaling the scores (t x s).
            let q = (q * self.scale)?.contiguous()?.reshape(grouped)?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(cap) = self.softcap {
                // Gemma 2: capped before the mask, in the model's dtype.
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
            let scores = scores
                .to_dtype(compute_dtype(q.dtype()))?
                .reshape((b, self.num_kv_heads, rep, t, s))?
                .broadcast_add(mask)?;
            let probs = if kernels == Kernels::Inference {
                candle_nn::ops::softmax_last_dim(&scores)?
            } else {
                candle_nn::ops::softmax(&scores, D::Minus1)?
            };
            probs.reshape((b, self.num_kv_heads, rep * t, s))?
        };
        probs
            .to_dtype(v.dtype())?
            .matmul(v)?
            .reshape((b, self.num_heads, t, self.head_dim))
    }
}
