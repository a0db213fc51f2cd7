//! The key/value cache: the attention keys and values of tokens already run, per layer.
//!
//! A multiple-choice context runs once into a cache; each choice continues from it
//! (after [`KvCache::expand_batch`]), and generation appends one token at a time.

use candle_core::{Result, Tensor};

/// Keys and values of every layer, each `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    /// True when nothing has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch size of the cached entries (0 when empty).
    pub fn batch_size(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(0).unwrap_or(0),
            _ => 0,
        }
    }

    /// Appends this step's keys and values of `layer`; returns the full keys and values.
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let kv = match self.layers[layer].take() {
            None => (k, v),
            Some((old_k, old_v)) => (
                Tensor::cat(&[&old_k, &k], 2)?,
                Tensor::cat(&[&old_v, &v], 2)?,
            ),
        };
        self.layers[layer] = Some(kv.clone());
        Ok(kv)
    }

    /// A cache of batch `n` whose every row is this batch-1 cache: a shared prefix that
    /// `n` continuations extend.
    pub fn expand_batch(&self, n: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|entry| match entry {
                None => Ok(None),
                Some((k, v)) => {
                    let grow = |t: &Tensor| -> Result<Tensor> {
                        let (b, h, s, d) = t.dims4()?;
                        if b != 1 {
                            candle_core::bail!("expand_batch needs a batch-1 cache, got batch {b}");
                        }
                        t.broadcast_as((n, h, s, d))?.contiguous()
                    };
                    Ok(Some((grow(k)?, grow(v)?)))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }
}
