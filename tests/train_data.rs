//! The data pipeline as the trainer drives it: recipe sections in, batches out, the
//! position saved and restored.

use ckpt::chat::TemplateChoice;
use ckpt::train::data::tokens::write_npy_shard;
use ckpt::train::data::*;
use std::path::Path;

fn data_config(paths: Vec<std::path::PathBuf>) -> DataConfig {
    serde_json::from_value(serde_json::json!({ "paths": paths })).unwrap()
}

fn write_corpus(dir: &Path) {
    let lines: Vec<String> = (0..300)
        .map(|i| {
            serde_json::json!({"text": format!("Story {i}: the fox met dog {}.", i % 17)})
                .to_string()
        })
        .collect();
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    std::fs::write(dir.join("corpus/part-0.jsonl"), lines[..150].join("\n")).unwrap();
    std::fs::write(dir.join("corpus/part-1.jsonl"), lines[150..].join("\n")).unwrap();
}

#[test]
fn pretraining_from_text_and_from_shards_yields_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let data = data_config(vec![dir.path().join("corpus")]);
    let tokenizer = TokenizerConfig {
        path: None,
        train_vocab_size: Some(400),
    };
    let run = dir.path().join("run");

    let corpus = Corpus::open(&data).unwrap();
    assert_eq!(corpus.documents().unwrap().len(), 300);
    let tok = open_tokenizer(
        &tokenizer,
        &TemplateChoice::Own,
        corpus.documents(),
        &run,
        32,
    )
    .unwrap();
    assert!(run.join("tokenizer.json").is_file() && run.join("tokenizer_config.json").is_file());
    let packed = pretrain::pack_documents(corpus.documents().unwrap(), &tok).unwrap();
    let mut from_text = PretrainLoader::from_corpus(corpus, &tok, 32, true, 5).unwrap();
    assert_eq!(from_text.num_sequences(), packed.len() as u64 / 33);

    // The same tokens as .npy shards: the same sequences, order and fingerprint.
    let half = packed.len() / 2;
    write_npy_shard(
        &dir.path().join("shards/0.npy"),
        &packed[..half],
        TokenDtype::U16,
    )
    .unwrap();
    write_npy_shard(
        &dir.path().join("shards/1.npy"),
        &packed[half..],
        TokenDtype::U16,
    )
    .unwrap();
    let shards = Corpus::open(&data_config(vec![dir.path().join("shards")])).unwrap();
    let mut from_shards = PretrainLoader::from_corpus(shards, &tok, 32, true, 5).unwrap();
    assert_eq!(from_text.position(), from_shards.position());
    for _ in 0..10 {
        assert_eq!(from_text.next_batch(4), from_shards.next_batch(4));
    }

    // Every row decodes to a window of the documents joined by EOS.
    let batch = from_text.next_batch(2);
    let all_text = tok.decode(&packed).unwrap();
    assert!(all_text.contains(&tok.decode(batch.row(0)).unwrap()));

    // Save the position as the trainer does (JSON in ckpt.json) and resume elsewhere.
    let saved = serde_json::to_string(&from_text.position()).unwrap();
    let expected: Vec<Batch> = (0..30).map(|_| from_text.next_batch(4)).collect();
    let mut resumed =
        PretrainLoader::from_corpus(Corpus::open(&data).unwrap(), &tok, 32, true, 5).unwrap();
    resumed
        .seek(&serde_json::from_str(&saved).unwrap())
        .unwrap();
    let got: Vec<Batch> = (0..30).map(|_| resumed.next_batch(4)).collect();
    assert_eq!(got, expected);
}

#[test]
fn sft_from_chat_records_with_the_run_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let corpus = Corpus::open(&data_config(vec![dir.path().join("corpus")])).unwrap();
    let trained = TokenizerConfig {
        path: None,
        train_vocab_size: Some(400),
    };
    let base = dir.path().join("base");
    open_tokenizer(
        &trained,
        &TemplateChoice::Own,
        corpus.documents(),
        &base,
        64,
    )
    .unwrap();

    let chats: Vec<String> = (0..7)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Where is dog {i}?")},
                {"role": "assistant", "content": format!("The fox met dog {i}.")}]})
            .to_string()
        })
        .collect();
    std::fs::write(dir.path().join("chat.jsonl"), chats.join("\n")).unwrap();
    let data = data_config(vec![dir.path().join("chat.jsonl")]);
    // SFT takes the base model's tokenizer (a checkpoint directory).
    let given = TokenizerConfig {
        path: Some(base),
        train_vocab_size: None,
    };
    let tok = open_tokenizer(
        &given,
        &TemplateChoice::Own,
        None,
        &dir.path().join("sft-run"),
        64,
    )
    .unwrap();
    let mut loader = SftLoader::open(&data, &tok, 63, 1).unwrap();
    assert_eq!(loader.num_batches_per_epoch(3), 3);
    let batch = loader.next_batch(3);
    let mask = batch.loss_mask.as_ref().unwrap();
    for r in 0..batch.rows {
        let row_mask = &mask[r * batch.len..(r + 1) * batch.len];
        let learned: Vec<u32> = batch
            .row(r)
            .iter()
            .zip(row_mask)
            .filter(|(_, &m)| m > 0.0)
            .map(|(&t, _)| t)
            .collect();
        let text = tok.decode(&learned).unwrap();
        assert!(
            text.starts_with("The fox met dog ") && text.ends_with(".<|endoftext|>"),
            "{text}"
        );
        assert_eq!(row_mask[0], 0.0);
    }
}
