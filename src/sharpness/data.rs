//! The token batches sharpness is measured on: texts packed into rows of `seq_len`
//! tokens, `batch_size` rows per batch.
//!
//! Texts are tokenized without special tokens and joined with a separator (EOS) after
//! each, as the trainer packs pre-training documents, then cut into rows; texts shorter
//! than a row are packed with their neighbours, and the tail that fills no whole batch
//! is left out. The batches can be saved (`--save-batches`: JSON or `.npy`) so another
//! tool recomputes the number on exactly the same tokens.

use crate::error::{Error, Result};
use crate::train::data::sft::SftExample;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::path::Path;

/// How texts become batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOptions {
    /// Tokens per row (the model's input length).
    pub(crate) seq_len: usize,
    /// Rows per batch.
    pub(crate) batch_size: usize,
    /// Batches at most.
    pub(crate) max_batches: Option<usize>,
    /// Texts read at most (from the start of the file).
    pub(crate) max_texts: Option<usize>,
}

/// Token batches and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenBatches {
    pub(crate) seq_len: usize,
    pub(crate) batch_size: usize,
    /// Row-major ids of each batch, `batch_size * seq_len` each.
    pub(crate) batches: Vec<Vec<u32>>,
    /// Texts read.
    pub(crate) texts: usize,
    /// Texts shorter than a row (packed with others).
    pub(crate) short_texts: usize,
    /// Tokens read (separators included) that fill no whole batch.
    pub(crate) unused_tokens: usize,
    /// Conversations only: the weight of each target, row-major as `batches`
    /// (`masks[b][r * seq_len + i]` weighs token `i` as a target of row `r`; 1 on the
    /// assistant's tokens, 0 elsewhere and on padding), as SFT trains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) masks: Option<Vec<Vec<f32>>>,
}

impl TokenBatches {
    /// Packs the token ids of texts (in order) joined by `separator`. `source` names
    /// the data in errors.
    pub(crate) fn pack(
        texts: impl IntoIterator<Item = Result<Vec<u32>>>,
        separator: u32,
        opts: &DataOptions,
        source: &Path,
    ) -> Result<Self> {
        check_shape(opts)?;
        let per_batch = opts.seq_len * opts.batch_size;
        let max_batches = opts.max_batches.unwrap_or(usize::MAX);
        let mut out = Self {
            seq_len: opts.seq_len,
            batch_size: opts.batch_size,
            batches: Vec::new(),
            texts: 0,
            short_texts: 0,
            unused_tokens: 0,
            masks: None,
        };
        let mut stream: Vec<u32> = Vec::new();
        for ids in texts.into_iter().take(opts.max_texts.unwrap_or(usize::MAX)) {
            if out.batches.len() >= max_batches {
                break;
            }
            let ids = ids?;
            out.texts += 1;
            if ids.len() < opts.seq_len {
                out.short_texts += 1;
            }
            stream.extend(ids);
            stream.push(separator);
            while stream.len() >= per_batch && out.batches.len() < max_batches {
                let rest = stream.split_off(per_batch);
                out.batches.push(std::mem::replace(&mut stream, rest));
            }
        }
        out.unused_tokens = stream.len();
        if out.batches.is_empty() {
            return Err(Error::bad_file(
                source,
                format!(
                    "{} texts give {} tokens (with separators), fewer than one batch of \
                     {} x {} = {per_batch}; lower --seq-len or --batch-size",
                    out.texts,
                    stream.len(),
                    opts.batch_size,
                    opts.seq_len
                ),
            ));
        }
        Ok(out)
    }

    /// Conversations, one per row of `seq_len` tokens (cut to it, padded with `pad`),
    /// `batch_size` rows per batch; the loss counts the assistant's tokens only. Those
    /// left with no assistant token within the row are counted in `short_texts` and left
    /// out; rows that fill no whole batch are left out.
    pub(crate) fn pack_chats(
        examples: impl IntoIterator<Item = Result<SftExample>>,
        pad: u32,
        opts: &DataOptions,
        source: &Path,
    ) -> Result<Self> {
        check_shape(opts)?;
        let len = opts.seq_len;
        let max_batches = opts.max_batches.unwrap_or(usize::MAX);
        let mut out = Self {
            seq_len: len,
            batch_size: opts.batch_size,
            batches: Vec::new(),
            texts: 0,
            short_texts: 0,
            unused_tokens: 0,
            masks: Some(Vec::new()),
        };
        let (mut ids, mut weights, mut rows) = (Vec::new(), Vec::new(), 0);
        for example in examples
            .into_iter()
            .take(opts.max_texts.unwrap_or(usize::MAX))
        {
            if out.batches.len() >= max_batches {
                break;
            }
            let mut e = example?;
            out.texts += 1;
            e.tokens.truncate(len);
            e.loss_mask.truncate(len);
            if !e.loss_mask.iter().skip(1).any(|&m| m > 0.0) {
                out.short_texts += 1;
                continue;
            }
            let n = e.tokens.len();
            ids.extend(e.tokens);
            ids.resize(ids.len() + len - n, pad);
            weights.extend(e.loss_mask);
            weights.resize(weights.len() + len - n, 0.0);
            rows += 1;
            if rows == opts.batch_size {
                out.batches.push(std::mem::take(&mut ids));
                out.masks
                    .get_or_insert_with(Vec::new)
                    .push(std::mem::take(&mut weights));
                rows = 0;
            }
        }
        out.unused_tokens = ids.len();
        if out.batches.is_empty() {
            return Err(Error::bad_file(
                source,
                format!(
                    "{} conversations ({} without an assistant token in the first {len}) \
                     fill no batch of {} rows; lower --batch-size or raise --seq-len",
                    out.texts, out.short_texts, opts.batch_size
                ),
            ));
        }
        Ok(out)
    }

    /// Number of target tokens over all batches (each row predicts `seq_len - 1`; for
    /// conversations, the assistant's tokens).
    pub(crate) fn target_tokens(&self) -> usize {
        match &self.masks {
            Some(masks) => masks
                .iter()
                .flat_map(|m| m.chunks(self.seq_len))
                .map(|row| row.iter().skip(1).filter(|&&w| w > 0.0).count())
                .sum(),
            None => self.batches.len() * self.batch_size * (self.seq_len - 1),
        }
    }

    /// Content hash (BLAKE3, hex) of the shape and every id: two runs on the same hash
    /// measured the same tokens.
    pub(crate) fn hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(&(self.seq_len as u64).to_le_bytes());
        h.update(&(self.batch_size as u64).to_le_bytes());
        for batch in &self.batches {
            for id in batch {
                h.update(&id.to_le_bytes());
            }
        }
        for mask in self.masks.iter().flatten() {
            for w in mask {
                h.update(&w.to_le_bytes());
            }
        }
        h.finalize().to_hex().to_string()
    }

    /// Writes the ids atomically: `.npy` as u32 `[batches, batch_size, seq_len]`, any
    /// other name as JSON `{seq_len, batch_size, data_hash, batches: [[[id]]]}`.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        if is_npy {
            let flat: Vec<u32> = self.batches.concat();
            let shape = (self.batches.len(), self.batch_size, self.seq_len);
            let tensor = Tensor::from_vec(flat, shape, &Device::Cpu)?;
            let tmp = crate::atomic_file::temp_beside(path, ".npy")?;
            tensor
                .write_npy(tmp.path())
                .map_err(|e| Error::bad_file(path, format!("cannot write: {e}")))?;
            tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
            return Ok(());
        }
        let rows: Vec<Vec<&[u32]>> = self
            .batches
            .iter()
            .map(|b| b.chunks(self.seq_len).collect())
            .collect();
        let mut value = serde_json::json!({
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "data_hash": self.hash(),
            "batches": rows,
        });
        if let Some(masks) = &self.masks {
            let rows: Vec<Vec<&[f32]>> = masks
                .iter()
                .map(|m| m.chunks(self.seq_len).collect())
                .collect();
            value["loss_mask"] = serde_json::json!(rows);
        }
        crate::atomic_file::write_bytes(path, value.to_string().as_bytes())
    }
}

fn check_shape(opts: &DataOptions) -> Result<()> {
    if opts.seq_len < 2 || opts.batch_size == 0 {
        return Err(Error::bad_value(
            "--seq-len",
            format!(
                "sequence length {} and batch size {} must be at least 2 and 1",
                opts.seq_len, opts.batch_size
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seq_len: usize, batch_size: usize) -> DataOptions {
        DataOptions {
            seq_len,
            batch_size,
            max_batches: None,
            max_texts: None,
        }
    }

    fn texts(v: &[&[u32]]) -> Vec<Result<Vec<u32>>> {
        v.iter().map(|t| Ok(t.to_vec())).collect()
    }

    #[test]
    fn packs_texts_with_separators_into_whole_batches() {
        let src = Path::new("t.txt");
        let got = TokenBatches::pack(
            texts(&[&[1, 2, 3], &[4], &[5, 6, 7, 8, 9]]),
            0,
            &opts(3, 2),
            src,
        )
        .unwrap();
        // Stream 1 2 3 0 4 0 5 6 7 8 9 0 (12 tokens): two batches of 2 x 3.
        assert_eq!(
            got.batches,
            [vec![1, 2, 3, 0, 4, 0], vec![5, 6, 7, 8, 9, 0]]
        );
        assert_eq!((got.texts, got.short_texts, got.unused_tokens), (3, 1, 0));
        assert_eq!(got.target_tokens(), 2 * 2 * 2);

        let capped = DataOptions {
            max_batches: Some(1),
            ..opts(3, 2)
        };
        let one = TokenBatches::pack(texts(&[&[1, 2, 3], &[4], &[5, 6]]), 0, &capped, src).unwrap();
        assert_eq!(one.batches.len(), 1);
        assert_eq!(one.texts, 2, "stops reading once the batches are full");
        let few_texts = DataOptions {
            max_texts: Some(1),
            ..opts(2, 1)
        };
        let got = TokenBatches::pack(texts(&[&[1, 2, 3], &[4]]), 0, &few_texts, src).unwrap();
        assert_eq!((got.batches.len(), got.texts, got.unused_tokens), (2, 1, 0));
        assert_ne!(got.hash(), one.hash());
    }

    #[test]
    fn packs_conversations_one_per_row_with_their_masks() {
        let ex = |tokens: &[u32], mask: &[f32]| {
            Ok(SftExample {
                tokens: tokens.to_vec(),
                loss_mask: mask.to_vec(),
            })
        };
        let examples = vec![
            ex(&[5, 6, 7], &[0.0, 0.0, 1.0]),
            // Its assistant token is cut off by the row: left out.
            ex(&[5, 6, 7, 8, 9], &[0.0, 0.0, 0.0, 0.0, 1.0]),
            ex(&[5, 6, 7, 8, 9], &[0.0, 1.0, 1.0, 1.0, 1.0]),
            ex(&[1, 2], &[0.0, 1.0]),
        ];
        let got = TokenBatches::pack_chats(examples, 0, &opts(4, 2), Path::new("c")).unwrap();
        assert_eq!(got.batches, [vec![5, 6, 7, 0, 5, 6, 7, 8]]);
        assert_eq!(
            got.masks,
            Some(vec![vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
        );
        assert_eq!((got.texts, got.short_texts, got.unused_tokens), (4, 1, 4));
        assert_eq!(got.target_tokens(), 4);
        let plain = TokenBatches {
            masks: None,
            ..got.clone()
        };
        assert_ne!(plain.hash(), got.hash(), "the mask is part of the data");
        let err = TokenBatches::pack_chats(
            vec![ex(&[1, 2], &[0.0, 1.0])],
            0,
            &opts(4, 2),
            Path::new("c.jsonl"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c.jsonl") && err.contains("fill no batch"),
            "{err}"
        );
    }

    #[test]
    fn too_little_data_names_the_file() {
        let err = TokenBatches::pack(texts(&[&[1, 2]]), 0, &opts(8, 1), Path::new("v.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("v.jsonl") && err.contains("fewer than one batch"),
            "{err}"
        );
    }

    #[test]
    fn saves_json_and_npy() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            TokenBatches::pack(texts(&[&[1, 2, 3, 4, 5]]), 9, &opts(3, 1), Path::new("x")).unwrap();
        let json = dir.path().join("b.json");
        b.save(&json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(v["batches"], serde_json::json!([[[1, 2, 3]], [[4, 5, 9]]]));
        assert_eq!(v["data_hash"], b.hash());
        let npy = dir.path().join("b.npy");
        b.save(&npy).unwrap();
        let t = Tensor::read_npy(&npy).unwrap();
        assert_eq!(t.dims(), [2, 1, 3]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            [1, 2, 3, 4, 5, 9]
        );
    }
}
