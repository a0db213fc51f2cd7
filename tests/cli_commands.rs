//! End-to-end happy paths of `ckpt inspect` and `ckpt score` through the real binary,
//! checked against what the tests read independently: safetensors headers parsed
//! here, and the transformers reference log-likelihoods in `reference.json`.

mod common;

use common::{arg, fixture, parity_dir, parity_texts, reference, texts_jsonl, Sandbox, FIXTURES};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

// ----- help -----

#[test]
fn help_succeeds() {
    let sb = Sandbox::new();
    for (args, expected) in [
        (&["--help"][..], "score"),
        (&["score", "--help"][..], "--text"),
        (&["inspect", "--help"][..], "--json"),
    ] {
        let out = sb.ckpt(args).assert().success();
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(
            stdout.contains(expected),
            "ckpt {args:?}: no {expected:?} in\n{stdout}"
        );
    }
}

// ----- inspect -----

/// The safetensors header of `path` (8-byte little-endian length, then JSON) and the
/// offset where the tensor data starts.
fn safetensors_header(path: &Path) -> (serde_json::Map<String, Value>, u64) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (header.as_object().unwrap().clone(), 8 + len as u64)
}

/// Parameters stored in the `*.safetensors` files of `dir`, summed from their headers.
fn stored_parameters(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let (header, _) = safetensors_header(&path);
            for (name, tensor) in &header {
                if name != "__metadata__" {
                    let shape = tensor["shape"].as_array().unwrap();
                    total += shape.iter().map(|d| d.as_u64().unwrap()).product::<u64>();
                }
            }
        }
    }
    total
}

/// The first `architectures` entry of `dir/config.json`.
fn config_architecture(dir: &Path) -> String {
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["architectures"][0].as_str().unwrap().to_string()
}

/// Last component of an inspect row's `path`.
fn row_name(row: &Value) -> String {
    let path = Path::new(row["path"].as_str().unwrap());
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// `ckpt inspect PATHS... --json`.
fn inspect_json(sb: &Sandbox, paths: &[&Path]) -> Vec<Value> {
    let mut args = vec!["inspect", "--json"];
    args.extend(paths.iter().map(|p| arg(p)));
    sb.run_json(args).as_array().expect("a JSON array").clone()
}

/// Fingerprint by checkpoint directory name, from `ckpt inspect PATHS... --json`.
fn fingerprints(sb: &Sandbox, paths: &[&Path]) -> BTreeMap<String, String> {
    inspect_json(sb, paths)
        .iter()
        .map(|r| (row_name(r), r["fingerprint"].as_str().unwrap().to_string()))
        .collect()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn inspect_reports_every_fixture() {
    let sb = Sandbox::new();
    let rows = inspect_json(&sb, &[&parity_dir()]);
    let names: BTreeSet<String> = rows.iter().map(row_name).collect();
    assert_eq!(
        names,
        FIXTURES.iter().map(|s| s.to_string()).collect(),
        "one row per fixture"
    );
    assert_eq!(rows.len(), FIXTURES.len());

    for row in &rows {
        let name = row_name(row);
        let dir = fixture(&name);
        assert_eq!(
            row["architecture"],
            config_architecture(&dir).as_str(),
            "{name}"
        );
        assert_eq!(
            row["parameters"].as_u64(),
            Some(stored_parameters(&dir)),
            "{name}"
        );
        assert_eq!(row["dtype"], "f32", "{name}");
        let fp = row["fingerprint"].as_str().unwrap();
        assert!(is_hex64(fp), "{name}: fingerprint {fp:?}");
    }
    let distinct: BTreeSet<_> = rows.iter().map(|r| r["fingerprint"].as_str()).collect();
    assert_eq!(
        distinct.len(),
        rows.len(),
        "fingerprints must differ between checkpoints"
    );
}

#[test]
fn fingerprints_are_stable_and_follow_content_not_paths() {
    let sb = Sandbox::new();
    let first = fingerprints(&sb, &[&parity_dir()]);

    // The cache lives in CKPT_CACHE_DIR and holds what was computed.
    let cache_file = sb.cache_dir().join("fingerprints.json");
    let cache = std::fs::read_to_string(&cache_file)
        .unwrap_or_else(|e| panic!("{}: {e}", cache_file.display()));
    serde_json::from_str::<Value>(&cache).expect("the cache is JSON");
    for fp in first.values() {
        assert!(
            cache.contains(fp.as_str()),
            "{fp} not cached in {}",
            cache_file.display()
        );
    }

    // A second run (served from the cache) agrees.
    assert_eq!(fingerprints(&sb, &[&parity_dir()]), first, "second run");

    // Copies elsewhere keep their identity (single-file and sharded).
    let single = sb.copy_fixture_to("llama_gqa", "elsewhere/llama_gqa");
    let sharded = sb.copy_fixture_to("mistral_sharded", "elsewhere/mistral_sharded");
    let copied = fingerprints(&sb, &[&single, &sharded]);
    assert_eq!(copied["llama_gqa"], first["llama_gqa"]);
    assert_eq!(copied["mistral_sharded"], first["mistral_sharded"]);

    // One changed weight byte changes it, although this directory is in the cache.
    let weights = single.join("model.safetensors");
    let (_, data_start) = safetensors_header(&weights);
    flip_byte(&weights, data_start + 101);
    let changed = fingerprints(&sb, &[&single]);
    assert_ne!(
        changed["llama_gqa"], first["llama_gqa"],
        "a weight byte changed"
    );
    assert!(is_hex64(&changed["llama_gqa"]));
}

/// Inverts one byte of `path`, then moves its modification time on by a second, as
/// any later write would (so that a coarse file-system clock cannot make this flaky).
fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[!b[0]]).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.set_modified(mtime + std::time::Duration::from_secs(1))
        .unwrap();
}

#[test]
fn inspect_orders_a_run_by_step_with_sidecar_metadata() {
    let sb = Sandbox::new();
    sb.copy_fixture_to("llama_gqa", "run/step-100");
    sb.copy_fixture_to("llama_gqa", "run/step-20");
    sb.copy_fixture_to("llama_gqa", "run/final");
    sb.write(
        "run/final/ckpt.json",
        r#"{"step": 300, "stage": "pre", "schedule": {"kind": "wso"}}"#,
    );
    let run = sb.path().join("run");

    let rows = inspect_json(&sb, &[&run]);
    let summary: Vec<(String, Option<u64>, Value, Value)> = rows
        .iter()
        .map(|r| {
            (
                row_name(r),
                r["step"].as_u64(),
                r["stage"].clone(),
                r["schedule"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("step-20".into(), Some(20), Value::Null, Value::Null),
            ("step-100".into(), Some(100), Value::Null, Value::Null),
            ("final".into(), Some(300), "pre".into(), "wso".into()),
        ]
    );

    // The table shows the same order, with stage and schedule on the final row.
    let out = sb.ckpt(["inspect", arg(&run)]).assert().success();
    let table = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let row_of = |name: &str| {
        table
            .lines()
            .position(|l| l.contains(&format!("{}{name} ", std::path::MAIN_SEPARATOR)))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
    };
    assert!(
        row_of("step-20") < row_of("step-100") && row_of("step-100") < row_of("final"),
        "{table}"
    );
    let final_row = table.lines().nth(row_of("final")).unwrap();
    for cell in ["300", "pre", "wso"] {
        assert!(final_row.contains(cell), "no {cell:?} in {final_row}");
    }
}

// ----- score -----

/// `ckpt score DIR --text TEXT --json EXTRA...`.
fn score_json(sb: &Sandbox, dir: &Path, text: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["score", arg(dir), "--text", arg(text), "--json"];
    args.extend_from_slice(extra);
    sb.run_json(args)
}

/// Per-text results of a score run.
fn texts_of(out: &Value) -> &Vec<Value> {
    out["texts"].as_array().expect("texts")
}

/// The reference records of fixture `name` in precision `dtype` ("f32" / "bf16").
fn reference_of(name: &str, dtype: &str) -> Vec<Value> {
    reference()["models"][name][dtype]
        .as_array()
        .unwrap()
        .clone()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[track_caller]
fn assert_rel_close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * a.abs().max(b.abs()),
        "{what}: {a} vs {b}"
    );
}

/// f32 scores of fixture `name` match transformers': totals within 1e-4 per token,
/// every token within 1e-4, and the aggregate bits per byte follows from them.
fn check_f32_parity(name: &str) {
    let sb = Sandbox::new();
    let refs = reference_of(name, "f32");
    let texts = parity_texts();
    assert_eq!(refs.len(), texts.len());

    let totals = score_json(&sb, &fixture(name), &texts_jsonl(), &[]);
    let per_token = score_json(&sb, &fixture(name), &texts_jsonl(), &["--per-token"]);
    assert_eq!(texts_of(&totals).len(), texts.len());
    assert_eq!(texts_of(&per_token).len(), texts.len());

    for (i, r) in refs.iter().enumerate() {
        let n = r["num_tokens"].as_u64().unwrap();
        let expected = r["total_logprob"].as_f64().unwrap();
        for out in [&totals, &per_token] {
            let t = &texts_of(out)[i];
            assert_eq!(t["tokens"].as_u64(), Some(n), "{name} text {i}: tokens");
            assert_eq!(
                t["bytes"].as_u64(),
                Some(texts[i].len() as u64),
                "{name} text {i}: bytes"
            );
            let ll = t["loglikelihood"].as_f64().unwrap();
            assert!(
                (ll - expected).abs() <= 1e-4 * n as f64,
                "{name} text {i}: {ll} vs {expected}"
            );
        }
        assert!(
            texts_of(&totals)[i].get("token_logprobs").is_none(),
            "only with --per-token"
        );
        let ours = f64s(&texts_of(&per_token)[i]["token_logprobs"]);
        let diff = max_abs_diff(&ours, &f64s(&r["token_logprobs"]));
        assert!(
            diff <= 1e-4,
            "{name} text {i}: a token logprob is off by {diff}"
        );
    }

    let ll: f64 = texts_of(&totals)
        .iter()
        .map(|t| t["loglikelihood"].as_f64().unwrap())
        .sum();
    let bytes: usize = texts.iter().map(String::len).sum();
    let agg = &totals["aggregate"];
    assert_eq!(agg["bytes"].as_u64(), Some(bytes as u64), "{name}");
    let expected_bpb = -ll / bytes as f64 / std::f64::consts::LN_2;
    assert_rel_close(
        agg["bits_per_byte"].as_f64().unwrap(),
        expected_bpb,
        1e-9,
        "bits per byte",
    );
    let ref_ll: f64 = refs
        .iter()
        .map(|r| r["total_logprob"].as_f64().unwrap())
        .sum();
    let tokens: u64 = refs.iter().map(|r| r["num_tokens"].as_u64().unwrap()).sum();
    assert_eq!(agg["tokens"].as_u64(), Some(tokens), "{name}");
    assert!(
        (agg["loglikelihood"].as_f64().unwrap() - ref_ll).abs() <= 1e-4 * tokens as f64,
        "{name}"
    );
}

/// bf16 scores of fixture `name` are close to transformers' bf16 ones (mean per-token
/// difference under 0.02 for every text), and visibly not the f32 ones: how far bf16
/// is from f32 is measured and printed, not assumed.
fn check_bf16_parity(name: &str) {
    let sb = Sandbox::new();
    let refs = reference_of(name, "bf16");
    let refs_f32 = reference_of(name, "f32");
    let out = score_json(
        &sb,
        &fixture(name),
        &texts_jsonl(),
        &["--dtype", "bf16", "--per-token"],
    );
    assert_eq!(out["dtype"], "bf16");
    assert_eq!(texts_of(&out).len(), refs.len());

    let (mut worst_mean, mut refs_mean_apart) = (0f64, 0f64);
    let (mut vs_bf16_ref, mut vs_f32_ref, mut refs_apart) = (0f64, 0f64, 0f64);
    for (i, (t, (r, r32))) in texts_of(&out)
        .iter()
        .zip(refs.iter().zip(&refs_f32))
        .enumerate()
    {
        let n = r["num_tokens"].as_u64().unwrap();
        assert_eq!(t["tokens"].as_u64(), Some(n), "{name} text {i}: tokens");
        let mean_diff = (t["loglikelihood"].as_f64().unwrap()
            - r["total_logprob"].as_f64().unwrap())
            / n as f64;
        assert!(
            mean_diff.abs() < 0.02,
            "{name} text {i}: mean per-token difference {mean_diff}"
        );
        worst_mean = worst_mean.max(mean_diff.abs());
        let refs_mean = (r["total_logprob"].as_f64().unwrap()
            - r32["total_logprob"].as_f64().unwrap())
            / n as f64;
        refs_mean_apart = refs_mean_apart.max(refs_mean.abs());
        let ours = f64s(&t["token_logprobs"]);
        vs_bf16_ref = vs_bf16_ref.max(max_abs_diff(&ours, &f64s(&r["token_logprobs"])));
        vs_f32_ref = vs_f32_ref.max(max_abs_diff(&ours, &f64s(&r32["token_logprobs"])));
        refs_apart = refs_apart.max(max_abs_diff(
            &f64s(&r["token_logprobs"]),
            &f64s(&r32["token_logprobs"]),
        ));
    }
    eprintln!(
        "{name} bf16: worst |mean per-token diff| vs bf16 reference {worst_mean:.2e}; max token diff \
         vs bf16 reference {vs_bf16_ref:.2e}, vs f32 reference {vs_f32_ref:.2e}; \
         references bf16 vs f32: mean {refs_mean_apart:.2e}, token {refs_apart:.2e}"
    );
    // The references' own bf16-f32 mean gap is below 0.02, so the mean check alone would
    // pass an f32 run; a run that silently stayed in f32 matches f32 tokens to 1e-4.
    assert!(
        vs_f32_ref > 1e-3,
        "{name}: --dtype bf16 scores match f32 ({vs_f32_ref:.2e}); was bf16 used?"
    );
}

/// One pair of parity tests per fixture, so that each model fails on its own.
macro_rules! parity_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn f32_matches_reference() {
                super::check_f32_parity(stringify!($name));
            }

            #[test]
            fn bf16_close_to_reference() {
                super::check_bf16_parity(stringify!($name));
            }
        }
    )*};
}

parity_tests!(
    llama_gqa,
    llama3_rope,
    qwen2_bias,
    llama_tied,
    mistral_sharded
);

#[test]
fn parity_tests_cover_every_fixture() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(parity_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, FIXTURES.iter().map(|s| s.to_string()).collect());
}

#[test]
fn txt_input_scores_like_jsonl() {
    let sb = Sandbox::new();
    let texts = parity_texts();
    let single_line: Vec<usize> = (0..texts.len())
        .filter(|&i| !texts[i].contains('\n'))
        .collect();
    assert!(single_line.len() >= 5, "the fixture texts changed");
    let lines: Vec<&str> = single_line.iter().map(|&i| texts[i].as_str()).collect();
    let txt = sb.write("texts.txt", lines.join("\n") + "\n");

    let model = fixture("llama_gqa");
    let from_jsonl = score_json(&sb, &model, &texts_jsonl(), &[]);
    let from_txt = score_json(&sb, &model, &txt, &[]);
    assert_eq!(texts_of(&from_txt).len(), single_line.len());
    for (t, &i) in texts_of(&from_txt).iter().zip(&single_line) {
        let j = &texts_of(&from_jsonl)[i];
        assert_eq!(t["tokens"], j["tokens"], "text {i}");
        assert_eq!(t["bytes"], j["bytes"], "text {i}");
        let what = format!("text {i} loglikelihood");
        assert_rel_close(
            t["loglikelihood"].as_f64().unwrap(),
            j["loglikelihood"].as_f64().unwrap(),
            1e-5,
            &what,
        );
    }
}

#[test]
fn batch_composition_does_not_change_results() {
    let sb = Sandbox::new();
    for name in FIXTURES {
        let small = score_json(
            &sb,
            &fixture(name),
            &texts_jsonl(),
            &["--batch-tokens", "64"],
        );
        let large = score_json(
            &sb,
            &fixture(name),
            &texts_jsonl(),
            &["--batch-tokens", "100000"],
        );
        for (i, (s, l)) in texts_of(&small).iter().zip(texts_of(&large)).enumerate() {
            assert_eq!(s["tokens"], l["tokens"], "{name} text {i}");
            let (s, l) = (
                s["loglikelihood"].as_f64().unwrap(),
                l["loglikelihood"].as_f64().unwrap(),
            );
            assert_rel_close(s, l, 1e-5, &format!("{name} text {i}"));
        }
        let total = |o: &Value| o["aggregate"]["loglikelihood"].as_f64().unwrap();
        assert_rel_close(
            total(&small),
            total(&large),
            1e-5,
            &format!("{name} aggregate"),
        );
    }
}

/// The texts of `texts.jsonl` as a Parquet file (a `text` column beside an `id`, as
/// the Hub's datasets store texts) score exactly as the JSONL does.
#[test]
fn score_reads_parquet_texts() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let sb = Sandbox::new();
    let texts = parity_texts();
    let path = sb.path().join("texts.parquet");
    let schema = parquet::schema::parser::parse_message_type(
        "message doc { required int64 id; required binary text (STRING); }",
    )
    .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let props = std::sync::Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, std::sync::Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let ids: Vec<i64> = (0..texts.len() as i64).collect();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(&ids, None, None)
        .unwrap();
    col.close().unwrap();
    let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(t.as_str())).collect();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();

    let dir = fixture(FIXTURES[0]);
    let from_parquet = score_json(&sb, &dir, &path, &[]);
    let from_jsonl = score_json(&sb, &dir, &texts_jsonl(), &[]);
    assert_eq!(texts_of(&from_parquet).len(), texts.len());
    assert_eq!(texts_of(&from_parquet), texts_of(&from_jsonl));
}
