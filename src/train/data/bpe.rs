//! Training a byte-level BPE tokenizer on the corpus, GPT-2 style: bytes mapped to
//! printable characters, the GPT-2 split regex, no normaliser, so every string encodes
//! (no unknown token) and decodes back exactly.
//!
//! The vocabulary starts with the special tokens ([`SPECIAL_TOKENS`]), then the 256
//! byte symbols, then the learned merges.

use crate::error::{Error, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Ends every document, and serves as BOS too (as in GPT-2).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Pads SFT batches.
pub const PAD: &str = "<|pad|>";
/// Special tokens of a trained tokenizer, with ids 0, 1, ...: EOS/BOS, padding, and the
/// role markers of the Tulu chat template, so a role marker is one token.
pub const SPECIAL_TOKENS: [&str; 5] = [END_OF_TEXT, PAD, "<|system|>", "<|user|>", "<|assistant|>"];

/// The largest vocabulary a tokenizer is trained to: 4x the largest in use (Gemma's).
pub const MAX_TRAINED_VOCAB: usize = 1 << 20;

/// Trains a byte-level BPE with `vocab_size` tokens (special tokens and the 256 byte
/// symbols included) on `docs`. Fewer tokens result when the documents allow no more
/// merges.
pub fn train_bpe(docs: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let minimum = SPECIAL_TOKENS.len() + 256;
    if vocab_size < minimum {
        return Err(Error::bad_value(
            "tokenizer.train_vocab_size",
            format!(
            "train_vocab_size {vocab_size} is below the {minimum} tokens every byte-level BPE has"
        ),
        ));
    }
    // The trainer reserves room for the whole vocabulary up front.
    if vocab_size > MAX_TRAINED_VOCAB {
        return Err(Error::bad_value("tokenizer.train_vocab_size", format!(
            "train_vocab_size {vocab_size} is above {MAX_TRAINED_VOCAB} (the largest tokenizers in use have about 260,000 tokens)"
        )));
    }
    if docs.iter().all(|d| d.is_empty()) {
        return Err(Error::bad_value("data", "no text to train a tokenizer on"));
    }
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = Tokenizer::new(BPE::default());
    // No prefix space: a document's first word must not change when it is re-joined,
    // and decode(encode(x)) == x exactly.
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    let mut trainer = TrainerWrapper::from(trainer);
    tokenizer
        .train(&mut trainer, docs.iter())
        .map_err(|e| Error::Invalid(format!("training the tokenizer failed: {e}")))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn corpus() -> Vec<String> {
        let words = [
            "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "fast",
        ];
        (0..200)
            .map(|i| {
                let n = 5 + i % 7;
                let doc: Vec<&str> = (0..n)
                    .map(|j| words[(i * 7 + j * 3) % words.len()])
                    .collect();
                format!("{}.", doc.join(" "))
            })
            .collect()
    }

    #[test]
    fn trained_tokenizer_round_trips_and_keeps_special_tokens_whole() {
        let tokenizer = train_bpe(&corpus(), 300).unwrap();
        assert!(tokenizer.get_vocab_size(true) <= 300);
        assert!(tokenizer.get_vocab_size(true) > 261, "learned some merges");
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tokenizer.token_to_id(token), Some(id as u32));
            let enc = tokenizer.encode(format!("x{token}y"), false).unwrap();
            assert!(enc.get_ids().contains(&(id as u32)), "{token}");
        }
        // Text never seen in training, with bytes of every length.
        let text = "  The cat — naïve café 日本語 🦀\n\ttabs\r\nend <|user|>";
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        // A frequent word is one token.
        assert_eq!(
            tokenizer.encode("the cat", false).unwrap().get_ids().len(),
            2
        );
    }

    #[test]
    fn rejects_tiny_vocabularies_and_empty_text() {
        let err = train_bpe(&corpus(), 100).unwrap_err().to_string();
        assert!(err.contains("261"), "{err}");
        assert!(train_bpe(&[String::new()], 300).is_err());
    }
}
