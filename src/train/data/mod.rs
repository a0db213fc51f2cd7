//! The trainer's data pipeline: from the recipe's `[data]` and `[tokenizer]` sections to
//! batches of token ids, with exact resumption.
//!
//! ```text
//! DataConfig --Corpus::open--> documents | token shards --PretrainLoader--> Batch
//!            --SftLoader::open--> chat records --chat template--> Batch (+ loss mask)
//! TokenizerConfig --open_tokenizer--> TrainTokenizer (given, or BPE trained on documents)
//! ```
//!
//! The trainer's sequence, pre-training:
//! ```no_run
//! use ckpt::train::data::*;
//! # fn run(data: DataConfig, tokenizer: TokenizerConfig) -> ckpt::Result<()> {
//! # let run_dir = std::path::Path::new("run");
//! let corpus = Corpus::open(&data)?;
//! let template = ckpt::chat::TemplateChoice::Own; // or parse data.chat_template
//! let tok = open_tokenizer(&tokenizer, &template, corpus.documents(), run_dir, 2048)?;
//! let mut loader = PretrainLoader::from_corpus(corpus, &tok, 2048, data.shuffle, 42)?;
//! let batch = loader.next_batch(8);            // 8 rows of 2049 tokens
//! let pos = loader.position();                 // into ckpt.json; later: loader.seek(&pos)
//! # Ok(()) }
//! # fn main() {}
//! ```
//! SFT: `open_tokenizer(...)` (usually `path` = the base checkpoint), then
//! `SftLoader::open(&data, &tok, seq_len, seed)`.
//!
//! A run's tokenizer is saved as `tokenizer.json` + `tokenizer_config.json` (and the
//! parent's `chat_template.jinja`, when it had one) in the run directory; the trainer
//! copies them into each checkpoint. SFT renders with the parent's own chat template
//! unless `data.chat_template` chooses `tulu`, `chatml` or a file.

pub(crate) mod batch;
pub mod bpe;
pub mod config;
pub(crate) mod corpus;
mod order;
pub mod pretrain;
pub mod sft;
pub(crate) mod shards;
pub mod tokenizer;
pub mod tokens;

pub use batch::{Batch, BatchLoader, DataFingerprint, DataPosition};
pub use bpe::train_bpe;
pub use config::{DataConfig, TokenDtype, TokenizerConfig};
pub use corpus::Corpus;
pub use pretrain::PretrainLoader;
pub use sft::{Message, SftLoader};
pub use tokenizer::{open_tokenizer, SpecialToken, TrainTokenizer};
