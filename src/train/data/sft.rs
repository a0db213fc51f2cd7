//! The SFT loader: chat conversations rendered with a chat template, one per row, with
//! the loss on the assistant's tokens only.
//!
//! Data: JSONL/JSON/Parquet records in the Tulu format,
//! `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
//! (other fields ignored). Rendering: the run's chat template ([`crate::chat`]: the
//! parent's own, else `data.chat_template`, else Tulu's) as transformers renders it;
//! the text is tokenized without special tokens added, as `apply_chat_template` does.
//!
//! Masks: a template with `{% generation %}` blocks marks the assistant text itself,
//! as transformers' `return_assistant_tokens_mask` reads it. Otherwise each assistant
//! turn is found as open-instruct's `encode_with_messages_format` finds it: for the
//! assistant message `i`, the text of `messages[..i]` with the generation prompt ends
//! where its content starts, and the text of `messages[..=i]` ends where the turn
//! ends; the turn is cut after its last EOS, so the content and its EOS are learned
//! and the template's separators are not. A token is learned when it overlaps such a
//! span (transformers' rule). The template must render a prefix of the conversation as
//! a prefix of the whole (one that rewrites earlier turns needs generation blocks);
//! one that does not, or that renders none of the assistant's text, is an error naming
//! the file and line, never a wrong mask.
//!
//! Batches: conversations truncated to `seq_len + 1` tokens, padded to the longest row
//! of the batch with the pad token (EOS when there is none); padding is masked out. A
//! batch never spans two epochs: the last batch of an epoch may have fewer rows.
//! Conversations left without any assistant token are dropped when loading.

use super::batch::{check_position, Batch, BatchLoader, DataFingerprint, DataPosition};
use super::config::DataConfig;
use super::corpus::expand_paths;
use super::order::EpochOrder;
use super::tokenizer::TrainTokenizer;
use crate::chat::{assistant_mask, ChatTemplate, Rendered, ASSISTANT};
use crate::error::{Error, Result};
use crate::records::{for_each_record, Record};
use rayon::prelude::*;
use serde::Deserialize;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

pub use crate::chat::{Message, TULU_CHAT_TEMPLATE};

/// A chat record: the `messages` field; anything else in the record is ignored.
#[derive(Deserialize)]
struct ChatRecord {
    messages: Vec<Message>,
}

/// The byte spans of `full` (the rendered `messages`) that are learned. A template
/// with `{% generation %}` blocks marks them itself, as transformers'
/// `return_assistant_tokens_mask` reads them. Otherwise each assistant turn is found
/// incrementally: the text of `messages[..i]` with the generation prompt ends where
/// its content starts, and the text of `messages[..=i]` ends where the turn ends; the
/// turn is cut after its last EOS.
fn assistant_spans(
    template: &ChatTemplate,
    eos: &str,
    messages: &[Message],
    rendered: &Rendered,
) -> Result<Vec<Range<usize>>> {
    if template.has_generation_blocks {
        return Ok(rendered.generation_spans.clone());
    }
    let full = &rendered.text;
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message.role != ASSISTANT {
            continue;
        }
        let before = template.render(&messages[..i], true)?;
        let through = template.render(&messages[..=i], false)?;
        if !through.starts_with(&before) || !full.starts_with(&through) {
            return Err(Error::bad_value(
                "data.chat_template",
                format!(
                    "the chat template does not render message {i}'s prefix as a prefix of \
                 the conversation, so the assistant's tokens cannot be located (give it \
                 {{% generation %}} blocks, or choose another with data.chat_template)"
                ),
            ));
        }
        let turn = &through[before.len()..];
        let end = match turn.rfind(eos) {
            Some(at) if !eos.is_empty() => before.len() + at + eos.len(),
            _ => through.len(),
        };
        spans.push(before.len()..end);
    }
    Ok(spans)
}

/// One tokenized conversation and its loss mask (see [`Batch`] for the convention).
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub(crate) tokens: Vec<u32>,
    pub(crate) loss_mask: Vec<f32>,
}

/// Renders and tokenizes `messages` (no special tokens added: the template spells
/// them, as `apply_chat_template` tokenizes), marking the assistant's tokens with 1: a
/// token is learned when it overlaps an assistant span. Position 0 is never a target,
/// so its mask is 0. A conversation with assistant text that the template renders
/// nothing of to learn is an error.
pub(crate) fn encode_conversation(
    messages: &[Message],
    template: &ChatTemplate,
    tok: &TrainTokenizer,
) -> Result<SftExample> {
    let rendered = template.render_spans(messages, false)?;
    let spans = assistant_spans(template, &tok.eos.text, messages, &rendered)?;
    let encoded = tok.encode_with_offsets(&rendered.text)?;
    let loss_mask: Vec<f32> = assistant_mask(&encoded.offsets, &spans)
        .into_iter()
        .enumerate()
        .map(|(i, learned)| if learned && i > 0 { 1.0 } else { 0.0 })
        .collect();
    let has_assistant_text = messages
        .iter()
        .any(|m| m.role == ASSISTANT && !m.content.is_empty());
    if has_assistant_text && !loss_mask.iter().any(|&m| m > 0.0) {
        return Err(Error::bad_value(
            "data.chat_template",
            "the chat template renders no assistant text to learn from this conversation",
        ));
    }
    Ok(SftExample {
        tokens: encoded.ids,
        loss_mask,
    })
}

/// A conversation and where it was read, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub(crate) file: PathBuf,
    /// "line 3", "row 3"...: see [`Record::location`].
    pub(crate) location: String,
    pub(crate) messages: Vec<Message>,
}

/// The conversations in `files`, at most `max` of them.
pub fn read_conversations(files: &[PathBuf], max: Option<usize>) -> Result<Vec<Conversation>> {
    let limit = max.unwrap_or(usize::MAX);
    let mut found = Vec::new();
    for file in files {
        if found.len() >= limit {
            break;
        }
        for_each_record(file, None, &mut |record| {
            found.push(Conversation {
                messages: parse_messages(file, &record)?,
                file: file.clone(),
                location: record.location,
            });
            Ok(if found.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
    }
    Ok(found)
}

fn parse_messages(file: &Path, record: &Record) -> Result<Vec<Message>> {
    let chat = ChatRecord::deserialize(&record.value).map_err(|e| {
        Error::bad_file(
            file,
            format!(
                "{}: not a chat record {{\"messages\": [{{\"role\", \"content\"}}]}}: {e}",
                record.location
            ),
        )
    })?;
    Ok(chat.messages)
}

/// `tok`'s chat template compiled with its special tokens.
pub fn template_for(tok: &TrainTokenizer) -> Result<ChatTemplate> {
    ChatTemplate::with_variables(&tok.chat_template.text, tok.template_variables())
}

/// Serves batches of conversations, forever: epochs wrap around.
pub struct SftLoader {
    examples: Vec<SftExample>,
    seq_len: usize,
    pad_id: u32,
    fingerprint: DataFingerprint,
    epoch: u64,
    /// Conversations of this epoch already handed out.
    cursor: u64,
    order: EpochOrder,
}

impl SftLoader {
    /// Reads the conversations of `cfg` and renders them with `tok`'s template (the
    /// one `data.chat_template` chose: the parent's own, else Tulu's).
    pub fn open(cfg: &DataConfig, tok: &TrainTokenizer, seq_len: usize, seed: u64) -> Result<Self> {
        let files = expand_paths(&cfg.paths)?;
        let conversations = read_conversations(&files, cfg.max_docs)?;
        let origin = &tok.chat_template.origin;
        let template = template_for(tok).map_err(|e| Error::bad_file(origin, e.to_string()))?;
        let examples = conversations
            .par_iter()
            .map(|c| {
                encode_conversation(&c.messages, &template, tok).map_err(|e| {
                    Error::bad_file(
                        &c.file,
                        format!("{}: {e} (template: {})", c.location, origin.display()),
                    )
                })
            })
            .collect::<Vec<Result<SftExample>>>()
            .into_iter()
            // The first bad conversation in file order, whatever thread met it first.
            .collect::<Result<Vec<_>>>()?;
        Self::new(examples, seq_len, tok.pad_id(), cfg.shuffle, seed)
    }

    /// A loader over `examples`, truncated to `seq_len + 1` tokens; those left without
    /// an assistant token are dropped.
    pub fn new(
        examples: Vec<SftExample>,
        seq_len: usize,
        pad_id: u32,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self> {
        let total = examples.len();
        let examples: Vec<SftExample> = examples
            .into_iter()
            .map(|e| truncate(e, seq_len + 1))
            .filter(|e| e.loss_mask.iter().any(|&m| m > 0.0))
            .collect();
        if examples.len() < total {
            tracing::warn!(
                "{} of {total} conversations have no assistant token within {} tokens; dropped",
                total - examples.len(),
                seq_len + 1
            );
        }
        if examples.is_empty() {
            return Err(Error::bad_value(
                "data",
                "no SFT conversation has an assistant token to learn",
            ));
        }
        let n = examples.len() as u64;
        let fingerprint = DataFingerprint {
            kind: "sft".into(),
            seq_len,
            num_tokens: examples.iter().map(|e| e.tokens.len() as u64).sum(),
            num_items: n,
            shuffle,
            seed,
            content_hash: content_hash(&examples, pad_id),
        };
        Ok(Self {
            examples,
            seq_len,
            pad_id,
            fingerprint,
            epoch: 0,
            cursor: 0,
            order: EpochOrder::new(n, shuffle, seed, 0),
        })
    }

    /// Conversations per epoch.
    pub fn num_examples(&self) -> u64 {
        self.examples.len() as u64
    }

    /// Batches of `rows` in one epoch, the last (shorter) one included.
    pub fn num_batches_per_epoch(&self, rows: usize) -> u64 {
        self.num_examples().div_ceil(rows.max(1) as u64)
    }

    /// Model context length: rows hold at most `seq_len + 1` tokens.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn set_position(&mut self, epoch: u64, cursor: u64) {
        let f = &self.fingerprint;
        self.order = EpochOrder::new(self.num_examples(), f.shuffle, f.seed, epoch);
        self.epoch = epoch;
        self.cursor = cursor;
    }
}

impl BatchLoader for SftLoader {
    /// `rows` conversations, fewer at the end of an epoch; padded to the longest.
    fn next_batch(&mut self, rows: usize) -> Batch {
        let take = (rows as u64).min(self.num_examples() - self.cursor);
        let picked: Vec<&SftExample> = (self.cursor..self.cursor + take)
            .map(|i| &self.examples[self.order.get(i) as usize])
            .collect();
        let batch = pad_rows(&picked, self.pad_id);
        self.cursor += take;
        if self.cursor == self.num_examples() {
            self.set_position(self.epoch + 1, 0);
        }
        batch
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
        if pos.cursor == self.num_examples() {
            self.set_position(pos.epoch + 1, 0);
        } else {
            self.set_position(pos.epoch, pos.cursor);
        }
        Ok(())
    }
}

/// `examples` as rows padded with `pad_id` to the longest; padding is masked out.
fn pad_rows(examples: &[&SftExample], pad_id: u32) -> Batch {
    let len = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let mut tokens = vec![pad_id; examples.len() * len];
    let mut loss_mask = vec![0.0; examples.len() * len];
    for (r, example) in examples.iter().enumerate() {
        let n = example.tokens.len();
        tokens[r * len..r * len + n].copy_from_slice(&example.tokens);
        loss_mask[r * len..r * len + n].copy_from_slice(&example.loss_mask);
    }
    Batch {
        rows: examples.len(),
        len,
        tokens,
        loss_mask: Some(loss_mask),
    }
}

fn truncate(mut e: SftExample, len: usize) -> SftExample {
    e.tokens.truncate(len);
    e.loss_mask.truncate(len);
    e
}

fn content_hash(examples: &[SftExample], pad_id: u32) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&pad_id.to_le_bytes());
    for e in examples {
        hasher.update(&(e.tokens.len() as u64).to_le_bytes());
        for (t, m) in e.tokens.iter().zip(&e.loss_mask) {
            hasher.update(&t.to_le_bytes());
            hasher.update(&m.to_le_bytes());
        }
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::tokenizer::tests::test_tokenizer;

    fn chat(turns: &[(&str, &str)]) -> Vec<Message> {
        turns
            .iter()
            .map(|(role, content)| Message {
                role: role.to_string(),
                content: content.to_string(),
            })
            .collect()
    }

    fn two_turns() -> Vec<Message> {
        chat(&[
            ("system", "Be brief."),
            ("user", "Hello world?"),
            ("assistant", "The quick brown fox."),
            ("user", "And the dog?"),
            ("assistant", "Lazy dog!"),
        ])
    }

    /// The decoded text of each run of consecutive learned tokens.
    fn learned_runs(tok: &TrainTokenizer, e: &SftExample) -> Vec<String> {
        let mut runs = Vec::new();
        let mut current = Vec::new();
        for (t, m) in e.tokens.iter().zip(&e.loss_mask) {
            if *m > 0.0 {
                current.push(*t);
            } else if !current.is_empty() {
                runs.push(tok.decode(&std::mem::take(&mut current)).unwrap());
            }
        }
        if !current.is_empty() {
            runs.push(tok.decode(&current).unwrap());
        }
        runs
    }

    #[test]
    fn tulu_template_renders_as_open_instruct_does() {
        let t = ChatTemplate::new(TULU_CHAT_TEMPLATE, "<s>", "</s>").unwrap();
        let msgs = two_turns();
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|system|>\nBe brief.\n<|user|>\nHello world?\n<|assistant|>\nThe quick brown fox.</s>\n\
             <|user|>\nAnd the dog?\n<|assistant|>\nLazy dog!</s>"
        );
        assert_eq!(
            t.render(&msgs[..2], true).unwrap(),
            "<|system|>\nBe brief.\n<|user|>\nHello world?\n<|assistant|>\n"
        );
    }

    #[test]
    fn masks_cover_exactly_the_assistant_contents_and_their_eos() {
        let tok = test_tokenizer();
        let template = template_for(&tok).unwrap();
        let msgs = two_turns();
        let e = encode_conversation(&msgs, &template, &tok).unwrap();
        assert_eq!(e.tokens.len(), e.loss_mask.len());
        assert_eq!(
            tok.decode(&e.tokens).unwrap(),
            template.render(&msgs, false).unwrap()
        );
        assert_eq!(
            learned_runs(&tok, &e),
            [
                "The quick brown fox.<|endoftext|>",
                "Lazy dog!<|endoftext|>"
            ]
        );
        // Role markers are single special tokens and never learned.
        let user = tok.inner().token_to_id("<|user|>").unwrap();
        let at = e.tokens.iter().position(|&t| t == user).unwrap();
        assert_eq!(e.loss_mask[at], 0.0);
    }

    #[test]
    fn hugging_face_style_templates_work_and_non_incremental_ones_are_refused() {
        let tok = test_tokenizer();
        let zephyr = "{{ bos_token }}{% for message in messages %}\n\
            {% if message['role'] not in ['system', 'user', 'assistant'] %}\
            {{ raise_exception('unknown role ' + message['role']) }}{% endif %}\n\
            {{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}\n\
            {% endfor %}\n\
            {% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
        let t = ChatTemplate::new(zephyr, "<|endoftext|>", "<|endoftext|>").unwrap();
        let msgs = chat(&[("user", "Hello?"), ("assistant", "Hello world!")]);
        // As Jinja2 renders it: `trim_blocks` eats newlines after blocks, not after `}}`.
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|endoftext|><|user|>\nHello?<|endoftext|>\n\n<|assistant|>\nHello world!<|endoftext|>\n\n"
        );
        let e = encode_conversation(&msgs, &t, &tok).unwrap();
        assert_eq!(learned_runs(&tok, &e), ["Hello world!<|endoftext|>"]);
        let err = t
            .render(&chat(&[("tool", "x")]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown role tool"), "{err}");

        let counting = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
        let t = ChatTemplate::new(counting, "", "<|endoftext|>").unwrap();
        let err = encode_conversation(&msgs, &t, &tok)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    /// Example `i`: `len` tokens all `100 + i`, learned from position 1 on.
    fn example(i: u32, len: usize) -> SftExample {
        let mut loss_mask = vec![1.0; len];
        loss_mask[0] = 0.0;
        SftExample {
            tokens: vec![100 + i; len],
            loss_mask,
        }
    }

    fn ids(batch: &Batch) -> Vec<u32> {
        (0..batch.rows).map(|r| batch.row(r)[0] - 100).collect()
    }

    #[test]
    fn rows_are_truncated_and_padded_with_padding_masked() {
        let mut unlearnable = example(2, 9);
        unlearnable.loss_mask[..7].fill(0.0); // its assistant tokens lie past the cut
        let examples = vec![example(0, 3), example(1, 9), unlearnable];
        let mut l = SftLoader::new(examples, 4, 7, false, 0).unwrap();
        assert_eq!(l.num_examples(), 2);
        let b = l.next_batch(2);
        assert_eq!((b.rows, b.len), (2, 5));
        assert_eq!(b.row(0), [100, 100, 100, 7, 7]);
        assert_eq!(b.row_mask(0).unwrap(), [0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(b.row(1), [101; 5]);
        assert_eq!(b.row_mask(1).unwrap(), [0.0, 1.0, 1.0, 1.0, 1.0]);
        let none = SftLoader::new(vec![example(0, 1)], 4, 7, false, 0);
        assert!(none
            .err()
            .unwrap()
            .to_string()
            .contains("no SFT conversation"));
    }

    fn loader(seed: u64) -> SftLoader {
        let examples = (0..5).map(|i| example(i, 2 + i as usize)).collect();
        SftLoader::new(examples, 16, 0, true, seed).unwrap()
    }

    #[test]
    fn epochs_end_with_a_short_batch_and_shuffle_per_epoch() {
        let mut l = loader(3);
        assert_eq!(l.num_batches_per_epoch(2), 3);
        let mut epochs = Vec::new();
        for _ in 0..3 {
            let batches: Vec<Batch> = (0..3).map(|_| l.next_batch(2)).collect();
            assert_eq!(
                batches.iter().map(|b| b.rows).collect::<Vec<_>>(),
                [2, 2, 1]
            );
            let order: Vec<u32> = batches.iter().flat_map(ids).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            epochs.push(order);
        }
        assert_eq!((l.position().epoch, l.position().cursor), (3, 0));
        assert!(epochs[0] != epochs[1] || epochs[1] != epochs[2]);
        let mut again = loader(3);
        let first: Vec<u32> = (0..3).flat_map(|_| ids(&again.next_batch(2))).collect();
        assert_eq!(first, epochs[0]);
    }

    #[test]
    fn resuming_is_exact_and_other_data_is_refused() {
        for before in 0..5 {
            let mut a = loader(9);
            for _ in 0..before {
                a.next_batch(2);
            }
            let pos: DataPosition =
                serde_json::from_str(&serde_json::to_string(&a.position()).unwrap()).unwrap();
            let expected: Vec<Batch> = (0..4).map(|_| a.next_batch(2)).collect();
            let mut b = loader(9);
            b.seek(&pos).unwrap();
            let got: Vec<Batch> = (0..4).map(|_| b.next_batch(2)).collect();
            assert_eq!(got, expected, "after {before} batches");
        }
        let pos = loader(9).position();
        assert!(loader(10).seek(&pos).is_err());
        let fewer = (0..4).map(|i| example(i, 2 + i as usize)).collect();
        let mut fewer = SftLoader::new(fewer, 16, 0, true, 9).unwrap();
        let err = fewer.seek(&pos).unwrap_err().to_string();
        assert!(err.contains("cannot resume"), "{err}");
    }

    #[test]
    fn open_reads_chat_records_and_names_bad_ones() {
        let tok = test_tokenizer();
        let dir = tempfile::tempdir().unwrap();
        let record = |q: &str, a: &str| {
            serde_json::json!({"id": q, "messages": [
                {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            .to_string()
        };
        let good = dir.path().join("chat.jsonl");
        let lines = [
            record("Hello?", "Hello world!"),
            record("Fox?", "Quick brown fox."),
        ];
        std::fs::write(&good, lines.join("\n")).unwrap();
        let cfg = DataConfig {
            paths: vec![good.clone()],
            text_column: "text".into(),
            shuffle: false,
            token_dtype: None,
            chat_template: None,
            max_docs: None,
        };
        let mut l = SftLoader::open(&cfg, &tok, 64, 0).unwrap();
        assert_eq!(l.num_examples(), 2);
        let b = l.next_batch(2);
        let text = tok.decode(b.row(1)).unwrap();
        assert!(text.starts_with("<|user|>\nFox?\n<|assistant|>\nQuick brown fox.<|endoftext|>"));
        let limited = DataConfig {
            max_docs: Some(1),
            ..cfg.clone()
        };
        assert_eq!(
            SftLoader::open(&limited, &tok, 64, 0)
                .unwrap()
                .num_examples(),
            1
        );

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, format!("{}\n{{\"text\": \"plain\"}}\n", lines[0])).unwrap();
        let cfg = DataConfig {
            paths: vec![bad],
            ..cfg
        };
        let err = SftLoader::open(&cfg, &tok, 64, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad.jsonl: line 2: not a chat record"),
            "{err}"
        );
    }
}
