//! The decoder every architecture runs: embeddings, blocks, final norm, head.
//!
//! Unlike candle-transformers' models, this one returns logits at any positions asked
//! for (never `[batch, seq, vocab]` when a few rows are needed), keeps a [`KvCache`]
//! that can be shared by several continuations, and trains: with
//! [`Model::set_differentiable`] every op on the path has a backward pass, and with
//! [`Model::set_twice_differentiable`] every op is a composite of candle's own ops, whose
//! backward can itself be differentiated (exact Hessian-vector products).
//!
//! A block is the same for every architecture, up to which norms it has: Llama
//! normalises each sublayer's input, OLMo 2 each output, Gemma both, and GPT-NeoX may
//! run attention and MLP side by side ([`super::arch`] says which).
//!
//! ```no_run
//! # use ckpt::model::{Model, KvCache};
//! # fn run(model: &Model, ids: &candle_core::Tensor) -> candle_core::Result<()> {
//! let mut cache = KvCache::new(model.config().num_hidden_layers);
//! let hidden = model.hidden_states(ids, &mut cache)?;      // [batch, seq, hidden]
//! let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?;
//! let logits = model.logits(&last)?;                        // [batch, vocab]
//! # Ok(()) }
//! ```

use super::arch::{Spec, WeightLayout};
use super::attention::{Attention, Step};
use super::cache::KvCache;
use super::config::ModelConfig;
use super::kernels::Kernels;
use super::linear::Weight;
use super::mlp::Mlp;
use super::norm::{apply, compute_dtype, Norm};
use super::rope::RotaryTables;
use super::tree::{TokenTree, TreeBatch};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// Default bound on the attention scores held at once (f32 elements, all heads): 256 MB.
const MAX_SCORE_FLOATS: usize = 64 << 20;

/// One transformer block: attention and MLP, each with up to two norms.
#[derive(Debug, Clone)]
struct Block {
    attn_in_norm: Option<Norm>,
    attn: Attention,
    attn_out_norm: Option<Norm>,
    mlp_in_norm: Option<Norm>,
    mlp: Mlp,
    mlp_out_norm: Option<Norm>,
    /// GPT-NeoX: `x + attn(norm(x)) + mlp(norm(x))`, both from the same `x`.
    parallel: bool,
}

impl Block {
    fn load(cfg: &ModelConfig, spec: &Spec, vb: VarBuilder) -> Result<Self> {
        let names = &spec.names;
        let norm = |name: Option<&str>| -> Result<Option<Norm>> {
            name.map(|n| Norm::load(spec.norm, cfg.hidden_size, cfg.norm_eps, vb.pp(n)))
                .transpose()
        };
        Ok(Self {
            attn_in_norm: norm(names.attn_in_norm)?,
            attn: Attention::load(cfg, spec, &vb)?,
            attn_out_norm: norm(names.attn_out_norm)?,
            mlp_in_norm: norm(names.mlp_in_norm)?,
            mlp: Mlp::load(cfg, names, &vb)?,
            mlp_out_norm: norm(names.mlp_out_norm)?,
            parallel: cfg.parallel_residual,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        step: &Step,
        layer: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let kernels = step.kernels;
        let h = apply(&self.attn_in_norm, x, kernels)?;
        let attn = self.attn.forward(&h, step, layer, cache)?;
        let attn = apply(&self.attn_out_norm, &attn, kernels)?;
        if self.parallel {
            let mlp = self.mlp_of(x, kernels)?;
            // transformers adds in this order: mlp + attn + x.
            return (mlp + attn)? + x;
        }
        let x = (x + attn)?;
        let mlp = self.mlp_of(&x, kernels)?;
        &x + mlp
    }

    fn weights_mut(&mut self) -> impl Iterator<Item = &mut Weight> {
        self.attn.weights_mut().chain(self.mlp.weights_mut())
    }

    fn mlp_of(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let h = apply(&self.mlp_in_norm, x, kernels)?;
        let out = self.mlp.forward(&h, kernels)?;
        apply(&self.mlp_out_norm, &out, kernels)
    }
}

/// A causal language model of any supported architecture.
#[derive(Debug, Clone)]
pub struct Model {
    embed_tokens: Tensor,
    /// Gemma multiplies embeddings by `sqrt(hidden)`, rounded to the model's dtype.
    embed_scale: Option<f64>,
    layers: Vec<Block>,
    norm: Norm,
    lm_head: Weight,
    /// One table per distinct RoPE (Gemma 3's sliding layers have their own base).
    ropes: Vec<RotaryTables>,
    rope_of: Vec<Option<usize>>,
    cfg: ModelConfig,
    kernels: Kernels,
    max_score_floats: usize,
}

impl Model {
    /// Builds the model from Hugging Face tensor names under `vb` (for Llama:
    /// `model.*`, `lm_head`), as the config's architecture names them.
    pub fn load(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let spec = cfg.arch.spec();
        let vb = match WeightLayout::detect(cfg.arch, |n| vb.contains_tensor(n)) {
            WeightLayout::Plain => vb,
            nested => vb.rename_f(move |name| nested.stored(name)),
        };
        let names = &spec.names;
        let embed_tokens = vb
            .pp(names.embed)
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(cfg, spec, vb.pp(format!("{}.{i}", names.layers))))
            .collect::<Result<Vec<_>>>()?;
        let norm = Norm::load(
            spec.norm,
            cfg.hidden_size,
            cfg.norm_eps,
            vb.pp(names.final_norm),
        )?;
        // Tied models store no head; transformers ties it to the embedding even when
        // a stale copy is present.
        let lm_head = Weight::new(if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp(names.head)
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?
        });
        let (ropes, rope_of) = rotary_tables(cfg, vb.dtype(), vb.device())?;
        let embed_scale = if spec.scale_embeddings {
            Some(rounded(
                (cfg.hidden_size as f64).sqrt(),
                vb.dtype(),
                vb.device(),
            )?)
        } else {
            None
        };
        Ok(Self {
            embed_tokens,
            embed_scale,
            layers,
            norm,
            lm_head,
            ropes,
            rope_of,
            cfg: cfg.clone(),
            kernels: Kernels::Inference,
            max_score_floats: MAX_SCORE_FLOATS,
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The dtype of the weights.
    pub(crate) fn dtype(&self) -> DType {
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

    /// Packs every weight for this CPU's inference kernels now and drops the copies as
    /// loaded, so that a model that only infers (eval, score, serve) holds its weights
    /// once instead of twice. Weights with no packed kernel here stay as loaded. A
    /// kernel that needs a dropped weight later (training, sharpness) rebuilds it from
    /// the packed copy, bit for bit.
    pub fn keep_packed_weights_only(&mut self) {
        for layer in &mut self.layers {
            for weight in layer.weights_mut() {
                weight.keep_packed_only();
            }
        }
        self.lm_head.keep_packed_only();
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
        let step = self.step(t, cached, cache.pads())?;
        self.run_layers(input_ids, &step, cache)
    }

    /// Final hidden states `[rows, len, hidden]` of token trees, one per row, padded to
    /// the longest ([`super::tree`]): each node at the position of its depth, seeing
    /// only itself and its ancestors.
    pub fn tree_hidden_states(&self, trees: &[&TokenTree]) -> Result<Tensor> {
        let batch = TreeBatch::new(trees);
        let positions = batch.positions();
        let ropes = self
            .ropes
            .iter()
            .map(|r| r.at(&positions, batch.rows()))
            .collect::<Result<_>>()?;
        let step = self.step_of(ropes, |window| {
            batch.mask(window, compute_dtype(self.dtype()), self.device())
        })?;
        let mut cache = KvCache::new(self.layers.len());
        self.run_layers(&batch.ids(self.device())?, &step, &mut cache)
    }

    /// Embeddings, every block, the final norm.
    fn run_layers(&self, input_ids: &Tensor, step: &Step, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let mut x = self
            .embed_tokens
            .embedding(&input_ids.flatten_all()?)?
            .reshape((b, t, ()))?;
        if let Some(scale) = self.embed_scale {
            x = (x * scale)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, step, i, cache)?;
        }
        self.norm.forward(&x, self.kernels)
    }

    /// Logits `[rows, vocab]` of hidden-state rows `[rows, hidden]`. Callers pick the
    /// rows they need first, so the vocabulary projection runs on those only.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.product(hidden_rows, self.kernels)?;
        match self.cfg.final_softcap {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
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
    pub(crate) fn next_token_losses(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t < 2 {
            candle_core::bail!("next-token loss needs at least 2 tokens per row, got {t}");
        }
        let hidden = self.hidden_states(input_ids, &mut KvCache::new(self.layers.len()))?;
        let rows = hidden.narrow(1, 0, t - 1)?.reshape((b * (t - 1), ()))?;
        let targets = input_ids.narrow(1, 1, t - 1)?.flatten_all()?;
        // The fused projection + cross-entropy has no room for a logit soft-cap.
        let fused = if self.kernels == Kernels::Trainable && self.cfg.final_softcap.is_none() {
            super::loss::projected_cross_entropy(&rows, self.lm_head.tensor()?, &targets)?
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

    /// What the layers of one forward share; `pads` (left padding per row of the
    /// cache) gives each row its own positions and hides its padding.
    fn step(&self, t: usize, cached: usize, pads: Option<&[usize]>) -> Result<Step> {
        let dev = self.device();
        let ropes = self
            .ropes
            .iter()
            .map(|r| match pads {
                None => r.cos_sin(cached, t),
                Some(pads) => {
                    let rows = pads
                        .iter()
                        .map(|&p| r.cos_sin(cached - p, t))
                        .collect::<Result<Vec<_>>>()?;
                    let (cos, sin): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                    Ok((Tensor::stack(&cos, 0)?, Tensor::stack(&sin, 0)?))
                }
            })
            .collect::<Result<_>>()?;
        self.step_of(ropes, |window| {
            let mask = causal_mask(t, cached, window, compute_dtype(self.dtype()), dev)?;
            match pads {
                None => Ok(mask),
                Some(pads) => hide_padding(&mask, pads),
            }
        })
    }

    /// A step of these rotary angles, with one mask per distinct sliding window
    /// (`mask_of(window)`), shared by the layers that have that window.
    fn step_of(
        &self,
        ropes: Vec<(Tensor, Tensor)>,
        mask_of: impl Fn(Option<usize>) -> Result<Tensor>,
    ) -> Result<Step> {
        let (windows, window_of) = self.distinct_windows();
        Ok(Step {
            ropes,
            rope_of: self.rope_of.clone(),
            masks: windows.into_iter().map(mask_of).collect::<Result<_>>()?,
            window_of,
            kernels: self.kernels,
            max_score_floats: self.max_score_floats,
        })
    }

    /// The distinct sliding windows of the layers (`None`: full attention), and which
    /// one each layer has: one mask per window serves every layer that shares it.
    fn distinct_windows(&self) -> (Vec<Option<usize>>, Vec<usize>) {
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
        (windows, window_of)
    }
}

/// The rotary tables of the model and, per layer, which one it uses (`None`: no RoPE).
fn rotary_tables(
    cfg: &ModelConfig,
    dtype: DType,
    dev: &Device,
) -> Result<(Vec<RotaryTables>, Vec<Option<usize>>)> {
    // Tables past 8k positions are computed when a window needs them (Llama 3.1
    // declares 131k positions; precomputing them all costs 67 MB and a second).
    let len = cfg.max_position_embeddings.min(8192);
    let mut tables = vec![RotaryTables::new(
        &super::rope::inverse_frequencies(cfg),
        len,
        dtype,
        dev,
    )?];
    let local = match cfg.local_rope_theta {
        Some(theta) => {
            tables.push(RotaryTables::new(
                &super::rope::plain_frequencies(cfg.rotary_dim, theta),
                len,
                dtype,
                dev,
            )?);
            Some(1)
        }
        None => None,
    };
    let rope_of = (0..cfg.num_hidden_layers)
        .map(
            |i| match (cfg.rope_layers[i], cfg.sliding_window[i], local) {
                (false, _, _) => None,
                (true, Some(_), Some(l)) => Some(l),
                (true, _, _) => Some(0),
            },
        )
        .collect();
    Ok((tables, rope_of))
}

/// `value` as the model's dtype holds it (transformers builds Gemma's embedding scale
/// as an f32 tensor and casts it to the weights' dtype).
fn rounded(value: f64, dtype: DType, dev: &Device) -> Result<f64> {
    Tensor::new(value as f32, dev)?
        .to_dtype(dtype)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
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

/// Per-row masks `[batch, 1, 1, t, s]`: `mask` (`[t, s]`) with each row's first
/// `pads[row]` keys hidden (its padding).
fn hide_padding(mask: &Tensor, pads: &[usize]) -> Result<Tensor> {
    let (t, s) = mask.dims2()?;
    let mut hidden = vec![0f32; pads.len() * s];
    for (row, &pad) in pads.iter().enumerate() {
        hidden[row * s..row * s + pad.min(s)].fill(f32::NEG_INFINITY);
    }
    let hidden = Tensor::from_vec(hidden, (pads.len(), 1, 1, 1, s), mask.device())?
        .to_dtype(mask.dtype())?;
    hidden.broadcast_add(&mask.reshape((1, 1, 1, t, s))?)
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
