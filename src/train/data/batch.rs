//! What loaders hand the trainer ([`Batch`]) and where they stand ([`DataPosition`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `rows` sequences of `len` tokens, row-major.
///
/// The model reads `tokens[r][..len-1]` and is scored on predicting `tokens[r][1..]`.
/// `loss_mask[r * len + i]` weighs the *target* token `tokens[r * len + i]`, i.e. the
/// loss of predicting token `i` from the tokens before it; position 0 of every row is
/// never a target and is always 0. The trainer multiplies the per-target losses of a
/// row by `loss_mask[row][1..]`. `None` means every target counts (pre-training).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub tokens: Vec<u32>,
    pub loss_mask: Option<Vec<f32>>,
}

impl Batch {
    /// The tokens of row `r`.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.tokens[r * self.len..(r + 1) * self.len]
    }

    /// The loss mask of row `r`, when there is one.
    pub fn row_mask(&self, r: usize) -> Option<&[f32]> {
        self.loss_mask
            .as_ref()
            .map(|m| &m[r * self.len..(r + 1) * self.len])
    }
}

/// A source of training batches that can say where it is and go back there.
pub trait BatchLoader {
    /// The next `rows` rows (fewer only where a loader documents it).
    fn next_batch(&mut self, rows: usize) -> Batch;
    /// Where the loader stands: saved in checkpoints for resuming.
    fn position(&self) -> DataPosition;
    /// Continues from `pos`, after which the loader yields exactly the batches it
    /// yielded after `pos` was taken. Errors when `pos` was taken on other data.
    fn seek(&mut self, pos: &DataPosition) -> Result<()>;
}

/// A loader's place in its data: `cursor` items (sequences or conversations) of epoch
/// `epoch` have been handed out. Stored in `ckpt.json` as
/// `{"epoch": 0, "cursor": 1234, "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub(crate) epoch: u64,
    pub(crate) cursor: u64,
    pub(crate) data: DataFingerprint,
}

/// What the position is a position in: everything that decides the batch sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// `pretrain` or `sft`.
    pub(crate) kind: String,
    pub(crate) seq_len: usize,
    /// Tokens in the data (pre-training: the whole stream; SFT: all rows after truncation).
    pub(crate) num_tokens: u64,
    /// Items per epoch: packed sequences or conversations.
    pub(crate) num_items: u64,
    pub(crate) shuffle: bool,
    pub(crate) seed: u64,
    /// BLAKE3 of sampled tokens (pre-training) or of all rows (SFT).
    pub(crate) content_hash: String,
}

/// Checks that `pos` belongs to the data described by `current` and is inside it.
pub(crate) fn check_position(pos: &DataPosition, current: &DataFingerprint) -> Result<()> {
    let saved = &pos.data;
    if saved != current {
        return Err(Error::bad_value(
            "data",
            format!(
                "cannot resume: the data position was saved for other data or settings \
             (saved: {}; now: {})",
                describe(saved),
                describe(current)
            ),
        ));
    }
    if pos.cursor > current.num_items {
        return Err(Error::bad_value(
            "data",
            format!(
                "cannot resume: data position {} is past the {} items of an epoch",
                pos.cursor, current.num_items
            ),
        ));
    }
    Ok(())
}

fn describe(f: &DataFingerprint) -> String {
    format!(
        "{} data, seq_len {}, {} tokens, {} items, shuffle {}, seed {}, hash {}",
        f.kind,
        f.seq_len,
        f.num_tokens,
        f.num_items,
        f.shuffle,
        f.seed,
        &f.content_hash[..f.content_hash.len().min(12)]
    )
}
