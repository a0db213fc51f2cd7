//! The pre-training loader: documents tokenized and packed into one stream, cut into
//! fixed-length sequences, visited in a seeded order that changes every epoch.
//!
//! Packing: each document's tokens (no special tokens added, special-token text in a
//! document read as plain text: [`TrainTokenizer::encode_ordinary`]) followed by EOS, all
//! documents in corpus order; the stream is cut into non-overlapping sequences of
//! `seq_len + 1` tokens (inputs are the first `seq_len`, targets the last `seq_len`) and
//! the remainder shorter than a sequence is dropped. A sequence may span documents,
//! as in GPT-2/nanoGPT/OLMo packing; attention is not masked at document boundaries.
//!
//! ```
//! use ckpt::train::data::{BatchLoader, PretrainLoader, tokens::TokenStream};
//! let stream = TokenStream::from_vec((0..23).collect());
//! let mut loader = PretrainLoader::new(stream, 4, false, 0).unwrap();
//! assert_eq!(loader.num_sequences(), 4);             // 23 tokens -> 4 x 5, 3 dropped
//! assert_eq!(loader.next_batch(2).tokens, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
//! ```

use super::batch::{check_position, Batch, BatchLoader, DataFingerprint, DataPosition};
use super::corpus::Corpus;
use super::order::EpochOrder;
use super::tokenizer::TrainTokenizer;
use super::tokens::TokenStream;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Serves batches of packed sequences, forever: epochs wrap around.
pub struct PretrainLoader {
    tokens: TokenStream,
    seq_len: usize,
    num_sequences: u64,
    fingerprint: DataFingerprint,
    epoch: u64,
    /// Sequences of this epoch already handed out.
    cursor: u64,
    order: EpochOrder,
}

/// The token stream of `docs`: each document's tokens then EOS. Empty documents are
/// skipped. Documents are tokenized in parallel; the order is kept.
pub fn pack_documents(docs: &[String], tok: &TrainTokenizer) -> Result<Vec<u32>> {
    let chunks = docs
        .par_chunks(64)
        .map(|chunk| {
            let mut out = Vec::new();
            for doc in chunk.iter().filter(|d| !d.is_empty()) {
                out.extend(tok.encode_ordinary(doc)?);
                out.push(tok.eos.id);
            }
            Ok(out)
        })
        .collect::<Result<Vec<Vec<u32>>>>()?;
    Ok(chunks.concat())
}

impl PretrainLoader {
    /// A loader over `tokens` cut into sequences of `seq_len + 1` tokens; `shuffle`
    /// visits them in an order drawn from `(seed, epoch)`.
    pub fn new(tokens: TokenStream, seq_len: usize, shuffle: bool, seed: u64) -> Result<Self> {
        let len = seq_len as u64 + 1;
        let num_sequences = tokens.len() / len;
        if seq_len == 0 || num_sequences == 0 {
            return Err(Error::bad_value(
                "training.seq_len",
                format!(
                    "the training data has {} tokens: not one sequence of seq_len + 1 = {len}",
                    tokens.len()
                ),
            ));
        }
        let fingerprint = DataFingerprint {
            kind: "pretrain".into(),
            seq_len,
            num_tokens: tokens.len(),
            num_items: num_sequences,
            shuffle,
            seed,
            content_hash: sample_hash(&tokens, len, num_sequences),
        };
        Ok(Self {
            tokens,
            seq_len,
            num_sequences,
            fingerprint,
            epoch: 0,
            cursor: 0,
            order: EpochOrder::new(num_sequences, shuffle, seed, 0),
        })
    }

    /// A loader over `corpus`: documents are packed with `tok`, shards used as they are.
    pub fn from_corpus(
        corpus: Corpus,
        tok: &TrainTokenizer,
        seq_len: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self> {
        let tokens = match corpus {
            Corpus::Documents(docs) => TokenStream::from_vec(pack_documents(&docs, tok)?),
            Corpus::Tokens(stream) => stream,
        };
        Self::new(tokens, seq_len, shuffle, seed)
    }

    /// Sequences per epoch.
    pub fn num_sequences(&self) -> u64 {
        self.num_sequences
    }

    /// Tokens in the stream, the dropped remainder included.
    pub fn num_tokens(&self) -> u64 {
        self.tokens.len()
    }

    /// Model context length: each row holds `seq_len + 1` tokens.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Moves past one sequence, starting the next epoch's order at the end of one.
    fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor == self.num_sequences {
            self.set_position(self.epoch + 1, 0);
        }
    }

    fn set_position(&mut self, epoch: u64, cursor: u64) {
        let f = &self.fingerprint;
        self.order = EpochOrder::new(self.num_sequences, f.shuffle, f.seed, epoch);
        self.epoch = epoch;
        self.cursor = cursor;
    }
}

impl BatchLoader for PretrainLoader {
    /// Always `rows` full rows; a batch may end one epoch and start the next.
    fn next_batch(&mut self, rows: usize) -> Batch {
        let len = self.seq_len + 1;
        let mut tokens = vec![0; rows * len];
        for row in tokens.chunks_exact_mut(len) {
            let seq = self.order.get(self.cursor);
            self.tokens.read(seq * len as u64, row);
            self.advance();
        }
        Batch {
            rows,
            len,
            tokens,
            loss_mask: None,
        }
    }

    fn position(&self) -> DataPosition {
        DataPosition {
            epoch: self.epoch,
            cursor: self.cursor,
            data: self.fingerprint.clone(),
        }
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        check_position(pos, &self.fingerprint)?;
        if pos.cursor == self.num_sequences {
            self.set_position(pos.epoch + 1, 0);
        } else {
            self.set_position(pos.epoch, pos.cursor);
        }
        Ok(())
    }
}

/// A hash of up to 1024 evenly spaced sequences (the first and last included): cheap
/// on a corpus of billions of tokens, yet it changes with any other data or cut.
fn sample_hash(tokens: &TokenStream, len: u64, num_sequences: u64) -> String {
    let samples = num_sequences.min(1024);
    let mut hasher = blake3::Hasher::new();
    let mut seq = vec![0u32; len as usize];
    for k in 0..samples {
        let index = if samples == 1 {
            0
        } else {
            k * (num_sequences - 1) / (samples - 1)
        };
        tokens.read(index * len, &mut seq);
        for t in &seq {
            hasher.update(&t.to_le_bytes());
        }
    }
    hasher.update(&tokens.len().to_le_bytes());
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::tokenizer::tests::test_tokenizer;

    fn loader(n: u32, seq_len: usize, shuffle: bool, seed: u64) -> PretrainLoader {
        PretrainLoader::new(
            TokenStream::from_vec((0..n).collect()),
            seq_len,
            shuffle,
            seed,
        )
        .unwrap()
    }

    /// The sequence index of each row (row tokens are consecutive stream indices).
    fn sequences(batch: &Batch) -> Vec<u32> {
        (0..batch.rows)
            .map(|r| {
                let row = batch.row(r);
                assert!(row.windows(2).all(|w| w[1] == w[0] + 1), "{row:?}");
                row[0] / batch.len as u32
            })
            .collect()
    }

    #[test]
    fn documents_are_joined_with_eos() {
        let tok = test_tokenizer();
        let docs = ["the quick fox", "", "lazy dog!"].map(String::from);
        let mut expected = tok.encode("the quick fox").unwrap();
        expected.push(tok.eos.id);
        expected.extend(tok.encode("lazy dog!").unwrap());
        expected.push(tok.eos.id);
        assert_eq!(pack_documents(&docs, &tok).unwrap(), expected);

        // A document quoting the EOS text does not end there.
        let quoting = ["a<|endoftext|>b".to_string()];
        let packed = pack_documents(&quoting, &tok).unwrap();
        assert_eq!(packed.iter().filter(|&&t| t == tok.eos.id).count(), 1);
        assert_eq!(tok.decode(&packed).unwrap(), "a<|endoftext|>b<|endoftext|>");

        // Parallel chunks keep the corpus order.
        let many: Vec<String> = (0..500).map(|i| format!("Document {i}")).collect();
        let packed = pack_documents(&many, &tok).unwrap();
        let text = tok.decode(&packed).unwrap();
        assert!(text.starts_with("Document 0<|endoftext|>Document 1<|endoftext|>"));
        assert!(text.ends_with("Document 499<|endoftext|>"));
    }

    #[test]
    fn sequences_of_seq_len_plus_one_remainder_dropped() {
        let mut l = loader(23, 4, false, 0);
        assert_eq!((l.num_sequences(), l.num_tokens()), (4, 23));
        let b = l.next_batch(3);
        assert_eq!((b.rows, b.len, b.loss_mask.is_none()), (3, 5, true));
        assert_eq!(b.tokens, (0..15).collect::<Vec<_>>());
        // The epoch ends after sequence 3 (tokens 15..20); 20..23 never appear.
        let b = l.next_batch(2);
        assert_eq!(b.tokens, [15, 16, 17, 18, 19, 0, 1, 2, 3, 4]);
        assert_eq!((l.position().epoch, l.position().cursor), (1, 1));
        let err = PretrainLoader::new(TokenStream::from_vec(vec![1; 4]), 4, false, 0);
        assert!(err.err().unwrap().to_string().contains("4 tokens"));
    }

    #[test]
    fn shuffled_epochs_visit_every_sequence_once_in_a_new_order() {
        let mut l = loader(10 * 9 + 3, 8, true, 7);
        let epoch = |l: &mut PretrainLoader| {
            let mut seen: Vec<u32> = (0..5).flat_map(|_| sequences(&l.next_batch(2))).collect();
            let order = seen.clone();
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>());
            order
        };
        let (first, second) = (epoch(&mut l), epoch(&mut l));
        assert_ne!(first, second);
        assert_ne!(first, (0..10).collect::<Vec<_>>());
        // Same seed, same order; another seed, another order.
        assert_eq!(epoch(&mut loader(93, 8, true, 7)), first);
        assert_ne!(epoch(&mut loader(93, 8, true, 8)), first);
    }

    #[test]
    fn resuming_is_exact_mid_epoch_and_across_the_epoch_boundary() {
        for before in [0, 1, 3, 4, 6] {
            let mut a = loader(7 * 13, 6, true, 3);
            for _ in 0..before {
                a.next_batch(3);
            }
            let pos = a.position();
            let json = serde_json::to_string(&pos).unwrap();
            let expected: Vec<Batch> = (0..5).map(|_| a.next_batch(3)).collect();
            let mut b = loader(7 * 13, 6, true, 3);
            b.next_batch(1); // wherever it was, seek decides
            b.seek(&serde_json::from_str(&json).unwrap()).unwrap();
            let got: Vec<Batch> = (0..5).map(|_| b.next_batch(3)).collect();
            assert_eq!(got, expected, "resumed after {before} batches");
        }
    }

    #[test]
    fn a_position_on_other_data_is_rejected() {
        let mut a = loader(100, 9, true, 1);
        a.next_batch(2);
        let pos = a.position();
        for mut other in [
            loader(110, 9, true, 1),
            loader(100, 8, true, 1),
            loader(100, 9, true, 2),
        ] {
            let err = other.seek(&pos).unwrap_err().to_string();
            assert!(err.contains("cannot resume"), "{err}");
        }
        // Same length and shape, different tokens.
        let mut shifted =
            PretrainLoader::new(TokenStream::from_vec((1..101).collect()), 9, true, 1).unwrap();
        assert!(shifted.seek(&pos).is_err());
        let mut past = pos.clone();
        past.cursor = 11;
        assert!(loader(100, 9, true, 1).seek(&past).is_err());
    }
}
