//! The key/value cache: the attention keys and values of tokens already run, per layer.
//!
//! A multiple-choice context runs once into a cache; each choice continues from it
//! (after [`KvCache::expand_batch`]), and generation appends one token at a time.
//!
//! Rows of different lengths share one cache by left padding: row `r`'s tokens sit at
//! the last `len() - pad(r)` places, the first `pad(r)` hold zeros that attention never
//! sees. Every row's next token then lands in the same column, so one step serves
//! requests that started at different times (`ckpt serve`'s continuous batching:
//! [`KvCache::push_rows`] adds a prefilled request, [`KvCache::keep_rows`] drops
//! finished ones).

use candle_core::{Result, Tensor};

/// Keys and values of every layer, each `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Leading padding per row; empty while no row is padded.
    pads: Vec<usize>,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            pads: vec![],
        }
    }

    /// Number of positions already cached (padding included).
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
    pub(crate) fn batch_size(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(0).unwrap_or(0),
            _ => 0,
        }
    }

    /// The leading padding of each row, when some row is padded.
    pub(crate) fn pads(&self) -> Option<&[usize]> {
        (!self.pads.is_empty()).then_some(self.pads.as_slice())
    }

    /// Positions row `row` holds (its tokens, without padding).
    pub fn row_len(&self, row: usize) -> usize {
        self.len() - self.pads.get(row).copied().unwrap_or(0)
    }

    /// Appends this step's keys and values of `layer`; returns the full keys and values.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
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
        let pads = match self.pads.first() {
            Some(&p) => vec![p; n],
            None => vec![],
        };
        Ok(Self { layers, pads })
    }

    /// Adds the rows of `other` after this cache's rows, left-padding whichever holds
    /// fewer positions so that both end in the same column.
    pub fn push_rows(&mut self, other: &KvCache) -> Result<()> {
        if other.layers.len() != self.layers.len() {
            candle_core::bail!(
                "cannot join caches of {} and {} layers",
                self.layers.len(),
                other.layers.len()
            );
        }
        if other.is_empty() {
            candle_core::bail!("cannot join an empty cache");
        }
        if self.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        let (mine, theirs) = (self.len(), other.len());
        let (b, c) = (self.batch_size(), other.batch_size());
        let mut pads = self.all_pads();
        let mut other_pads = other.all_pads();
        pads.iter_mut()
            .for_each(|p| *p += theirs.saturating_sub(mine));
        other_pads
            .iter_mut()
            .for_each(|p| *p += mine.saturating_sub(theirs));
        for (entry, theirs_entry) in self.layers.iter_mut().zip(&other.layers) {
            let (Some((k, v)), Some((ok, ov))) = (entry.take(), theirs_entry.as_ref()) else {
                candle_core::bail!("cannot join caches filled to different layers");
            };
            let s = mine.max(theirs);
            let join = |a: &Tensor, o: &Tensor| -> Result<Tensor> {
                Tensor::cat(&[&left_pad(a, s)?, &left_pad(o, s)?], 0)
            };
            *entry = Some((join(&k, ok)?, join(&v, ov)?));
        }
        pads.extend(other_pads);
        debug_assert_eq!(pads.len(), b + c);
        self.set_pads(pads);
        Ok(())
    }

    /// Keeps only `rows` (in that order), and drops the padding every kept row shares.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            *self = Self::new(self.layers.len());
            return Ok(());
        }
        let all = self.all_pads();
        let mut pads: Vec<usize> = rows.iter().map(|&r| all[r]).collect();
        let shared = pads.iter().copied().min().unwrap_or(0);
        let keep = self.len() - shared;
        let index = Tensor::new(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            match self.layers.first() {
                Some(Some((k, _))) => k.device(),
                _ => return Ok(()),
            },
        )?;
        for entry in self.layers.iter_mut() {
            if let Some((k, v)) = entry.take() {
                let pick = |t: &Tensor| -> Result<Tensor> {
                    t.index_select(&index, 0)?
                        .narrow(2, shared, keep)?
                        .contiguous()
                };
                *entry = Some((pick(&k)?, pick(&v)?));
            }
        }
        pads.iter_mut().for_each(|p| *p -= shared);
        self.set_pads(pads);
        Ok(())
    }

    fn all_pads(&self) -> Vec<usize> {
        if self.pads.is_empty() {
            vec![0; self.batch_size()]
        } else {
            self.pads.clone()
        }
    }

    fn set_pads(&mut self, pads: Vec<usize>) {
        self.pads = if pads.iter().all(|&p| p == 0) {
            vec![]
        } else {
            pads
        };
    }
}

/// `t` (`[b, h, s, d]`) with zeros in front, to `len` positions.
fn left_pad(t: &Tensor, len: usize) -> Result<Tensor> {
    let (b, h, s, d) = t.dims4()?;
    if s >= len {
        return Ok(t.clone());
    }
    let zeros = Tensor::zeros((b, h, len - s, d), t.dtype(), t.device())?;
    Tensor::cat(&[&zeros, t], 2)
}
