//! Tests of `merge.rs`: exactness, idempotence, atomicity, schemas, sources.

use super::*;
use crate::store::{CheckpointRow, MetricRow, SharpnessRecord, TaskInfo, LEGACY_TOKENIZATION};

fn checkpoint(fp: &str, path: &str) -> CheckpointRow {
    CheckpointRow {
        fingerprint: fp.into(),
        path: path.into(),
        run: "wsd".into(),
        step: Some(100),
        stage: Some("pre".into()),
        schedule: Some("wsd".into()),
        alpha: Some(0.1),
    }
}

fn metric(fp: &str, task: &str, value: f64, created_at: &str) -> MetricRow {
    MetricRow {
        fingerprint: fp.into(),
        task: task.into(),
        spec_hash: "h".into(),
        metric: "acc".into(),
        filter: "none".into(),
        value,
        stderr: Some(0.1),
        n: 4,
        higher_is_better: true,
        num_fewshot: 0,
        regime: "lm-eval".into(),
        ckpt_version: "0.1.0".into(),
        created_at: created_at.into(),
    }
}

fn task_info(task: &str, origin: &str) -> TaskInfo {
    TaskInfo {
        task: task.into(),
        spec_hash: "h".into(),
        dataset_path: "synthetic/arc".into(),
        dataset_name: None,
        split: Some("test".into()),
        data_origin: Some(origin.into()),
        tokenization: Some("policy".into()),
    }
}

/// A store at `dir/name` with checkpoint `fp` scored `value` on `task`.
fn store_with(dir: &Path, name: &str, fp: &str, task: &str, value: f64) -> PathBuf {
    let path = dir.join(name);
    let mut s = Store::open(&path).unwrap();
    s.put_checkpoint(&checkpoint(fp, &format!("runs/wsd/{fp}")), Some("{}"))
        .unwrap();
    s.put_responses(fp, &[(format!("{task}-r"), "{\"logprob\":-1.5}".into())])
        .unwrap();
    s.put_task_info(&task_info(task, "arc.jsonl"), "{\"task\":1}")
        .unwrap();
    let samples = vec![(0, "Q?".to_string(), "{\"acc\":1}".to_string())];
    let metrics = vec![metric(fp, task, value, "2024-01-01T00:00:00Z")];
    s.put_task_result(fp, task, "h", &samples, &metrics)
        .unwrap();
    s.put_judge_answer("judge", &format!("{fp}-p"), "1")
        .unwrap();
    s.put_failure("runs/broken", None, None, "no weights")
        .unwrap();
    path
}

/// Every row of every table, in a fixed order.
fn dump(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for table in RULES.iter().map(|r| r.table).chain(["failures"]) {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let values: Vec<Value> = (0..n)
                    .map(|i| r.get(i))
                    .collect::<std::result::Result<_, _>>()?;
                Ok(format!("{table} {values:?}"))
            })
            .unwrap();
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

fn added(summary: &MergeSummary, table: &str) -> usize {
    summary
        .tables
        .iter()
        .find(|c| c.table == table)
        .unwrap()
        .added
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn the_rules_name_every_column_of_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.sqlite")).unwrap();
    for rule in &RULES {
        let mut stmt = s
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap();
        let mut columns: Vec<String> = stmt
            .query_map([rule.table], |r| r.get(0))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        columns.sort();
        let mut named: Vec<String> = rule.columns().iter().map(|c| c.to_string()).collect();
        named.sort();
        assert_eq!(columns, named, "{}", rule.table);
        assert!(!rule.same.is_empty());
    }
}

#[test]
fn merging_twice_or_into_itself_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fa", "arc", 0.5);
    let b = store_with(dir.path(), "b.sqlite", "fb", "arc", 0.25);
    let m = dir.path().join("m.sqlite");
    let first = merge(&[a.clone(), b.clone()], &m, WAIT).unwrap();
    assert!(first.changed);
    assert_eq!(added(&first, "checkpoints"), 2);
    assert_eq!(added(&first, "metrics"), 2);
    assert_eq!(added(&first, "responses"), 2);
    let rows = dump(&m);
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("checkpoints")).count(),
        2
    );
    let bytes = std::fs::read(&m).unwrap();
    for sources in [
        vec![a.clone(), b.clone()],
        vec![m.clone()],
        vec![b, m.clone(), a],
    ] {
        let again = merge(&sources, &m, WAIT).unwrap();
        assert!(!again.changed, "{again:?}");
        assert!(again
            .tables
            .iter()
            .all(|c| c.added + c.updated + c.differing == 0));
        assert_eq!(dump(&m), rows);
        assert_eq!(std::fs::read(&m).unwrap(), bytes, "rewritten for nothing");
    }
    // Nothing is left beside the store (temporaries, WAL files of the sources).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.sqlite", "b.sqlite", "m.sqlite"]);
}

#[test]
fn the_merged_store_holds_every_row_of_its_sources() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fa", "arc", 0.5);
    let b = store_with(dir.path(), "b.sqlite", "fb", "hellaswag", 0.25);
    let m = dir.path().join("m.sqlite");
    merge(&[a.clone(), b.clone()], &m, WAIT).unwrap();
    let merged = dump(&m);
    for source in [&a, &b] {
        for row in dump(source) {
            assert!(merged.contains(&row), "{row} missing");
        }
    }
    let s = Store::open(&m).unwrap();
    assert_eq!(s.metrics(None).unwrap().len(), 2);
    assert!(s.has_task_result("fb", "hellaswag", "h").unwrap());
}

#[test]
fn a_conflict_names_table_key_column_and_both_files_and_leaves_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fp", "arc", 0.5);
    let b = store_with(dir.path(), "b.sqlite", "fp", "arc", 0.75);
    let m = dir.path().join("m.sqlite");
    let err = merge(&[a.clone(), b.clone()], &m, WAIT).unwrap_err();
    let text = err.to_string();
    for part in [
        "metrics",
        "fingerprint=\"fp\"",
        "task=\"arc\"",
        "value",
        "0.5",
        "0.75",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(matches!(&err, Error::MergeConflict(c) if c.first == a && c.second == b));
    assert!(!m.exists(), "a failed merge created the target");
    // Into an existing target: it stays as it was, byte for byte.
    merge(std::slice::from_ref(&a), &m, WAIT).unwrap();
    let before = std::fs::read(&m).unwrap();
    let err = merge(std::slice::from_ref(&b), &m, WAIT).unwrap_err();
    assert!(
        matches!(&err, Error::MergeConflict(c) if c.first == m),
        "{err}"
    );
    assert_eq!(std::fs::read(&m).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn a_long_value_is_shown_where_it_differs() {
    let a = Value::Text(format!("{{\"doc\":{},\"acc\":1}}", "x".repeat(200)));
    let b = Value::Text(format!("{{\"doc\":{},\"acc\":0}}", "x".repeat(200)));
    let (x, y) = show_pair(&a, &b);
    assert!(
        x.contains("acc\\\":1") && y.contains("acc\\\":0"),
        "{x} {y}"
    );
    assert!(x.len() < 100);
}

#[test]
fn what_may_differ_between_machines_follows_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fp", "arc", 0.5);
    let b = dir.path().join("b.sqlite");
    {
        let mut s = Store::open(&b).unwrap();
        // The same checkpoint found at another path, later.
        s.put_checkpoint(&checkpoint("fp", "/mnt/node7/runs/wsd/fp"), Some("{}"))
            .unwrap();
        s.conn
            .execute(
                "UPDATE checkpoints SET updated_at = '2999-01-01T00:00:00Z'",
                [],
            )
            .unwrap();
        // Its response computed a last bit apart; the task read from another file.
        s.put_responses("fp", &[("arc-r".into(), "{\"logprob\":-1.5000001}".into())])
            .unwrap();
        s.put_task_info(&task_info("arc", "/scratch/arc.jsonl"), "{\"task\":1}")
            .unwrap();
        // The same result, scored earlier by another ckpt version.
        let mut early = metric("fp", "arc", 0.5, "2023-06-01T00:00:00Z");
        early.ckpt_version = "0.0.9".into();
        let samples = vec![(0, "Q?".to_string(), "{\"acc\":1}".to_string())];
        s.put_task_result("fp", "arc", "h", &samples, &[early])
            .unwrap();
        for seconds in ["1.5", "99.25"] {
            let result = format!("{{\"estimate\":3.0,\"seconds\":{seconds}}}");
            let key = format!("k{seconds}");
            s.put_sharpness(&SharpnessRecord {
                fingerprint: "fp",
                config_key: &key,
                checkpoint: "/runs/wsd/fp",
                step: Some(100),
                estimate: 3.0,
                stderr: None,
                result: &result,
            })
            .unwrap();
        }
    }
    let m = dir.path().join("m.sqlite");
    let summary = merge(&[a, b], &m, WAIT).unwrap();
    let count = |t: &str| {
        summary
            .tables
            .iter()
            .find(|c| c.table == t)
            .unwrap()
            .clone()
    };
    assert_eq!(count("checkpoints").updated, 1);
    assert_eq!(count("metrics").updated, 1);
    assert_eq!(count("responses").differing, 1);
    let s = Store::open(&m).unwrap();
    assert_eq!(s.checkpoints().unwrap()[0].path, "/mnt/node7/runs/wsd/fp");
    let m0 = &s.metrics(None).unwrap()[0];
    assert_eq!(
        (m0.created_at.as_str(), m0.ckpt_version.as_str()),
        ("2023-06-01T00:00:00Z", "0.0.9")
    );
    let kept = s.responses("fp", &["arc-r".into()]).unwrap();
    assert_eq!(kept["arc-r"], "{\"logprob\":-1.5}");
    let info = s.task_info("arc", "h").unwrap().unwrap();
    assert_eq!(info.data_origin.as_deref(), Some("arc.jsonl"));
    // A sharpness record measured again (another wall time) is no conflict.
    let dir2 = tempfile::tempdir().unwrap();
    let c = dir2.path().join("c.sqlite");
    {
        let s = Store::open(&c).unwrap();
        s.put_sharpness(&SharpnessRecord {
            fingerprint: "fp",
            config_key: "k1.5",
            checkpoint: "/runs/wsd/fp",
            step: Some(100),
            estimate: 3.0,
            stderr: None,
            result: "{\"estimate\":3.0,\"seconds\":7.0}",
        })
        .unwrap();
    }
    let again = merge(std::slice::from_ref(&c), &m, WAIT).unwrap();
    assert!(!again.changed);
    // ... but another estimate is.
    Store::open(&c)
        .unwrap()
        .conn
        .execute("UPDATE sharpness SET estimate = 4.0", [])
        .unwrap();
    let err = merge(&[c], &m, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("sharpness") && err.contains("estimate"),
        "{err}"
    );
}

#[test]
fn a_differing_checkpoint_place_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fp", "arc", 0.5);
    let b = dir.path().join("b.sqlite");
    let mut row = checkpoint("fp", "runs/wsd/fp");
    row.step = Some(200);
    Store::open(&b).unwrap().put_checkpoint(&row, None).unwrap();
    let err = merge(&[a, b], &dir.path().join("m.sqlite"), WAIT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checkpoints conflict at fingerprint=\"fp\": step is 100"),
        "{err}"
    );
}

#[test]
fn an_older_source_is_migrated_in_a_copy_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let old = store_with(dir.path(), "old.sqlite", "fp", "arc", 0.5);
    {
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch(
            "ALTER TABLE tasks DROP COLUMN tokenization;
             ALTER TABLE tasks DROP COLUMN data_origin;
             PRAGMA user_version=1; PRAGMA journal_mode=DELETE;",
        )
        .unwrap();
    }
    let before = std::fs::read(&old).unwrap();
    let m = dir.path().join("m.sqlite");
    merge(std::slice::from_ref(&old), &m, WAIT).unwrap();
    assert_eq!(
        std::fs::read(&old).unwrap(),
        before,
        "the source was migrated in place"
    );
    let s = Store::open(&m).unwrap();
    let info = s.task_info("arc", "h").unwrap().unwrap();
    assert_eq!(info.tokenization.as_deref(), Some(LEGACY_TOKENIZATION));
    assert!(s.has_task_result("fp", "arc", "h").unwrap());
    // An older target is migrated too (in its copy).
    let old_target = dir.path().join("old2.sqlite");
    std::fs::copy(&old, &old_target).unwrap();
    let b = store_with(dir.path(), "b.sqlite", "fb", "hellaswag", 0.5);
    merge(&[b], &old_target, WAIT).unwrap();
    assert_eq!(
        Store::open(&old_target)
            .unwrap()
            .metrics(None)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_newer_or_foreign_store_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.sqlite");
    let newer = store_with(dir.path(), "newer.sqlite", "fp", "arc", 0.5);
    Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version=99")
        .unwrap();
    let err = merge(&[newer], &m, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("newer.sqlite") && err.contains("newer than"),
        "{err}"
    );
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = merge(&[junk], &m, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("junk.sqlite") && err.contains("corrupt"),
        "{err}"
    );
    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    let err = merge(&[empty], &m, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("empty.sqlite") && err.contains("not a ckpt store"),
        "{err}"
    );
    let err = merge(&[dir.path().join("nope.sqlite")], &m, WAIT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.sqlite") && err.contains("no such store"),
        "{err}"
    );
    let err = merge(&[], &dir.path().join("missing/m.sqlite"), WAIT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("no such directory"),
        "{err}"
    );
    assert!(!m.exists());
}

#[test]
fn a_target_another_process_writes_is_not_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fa", "arc", 0.5);
    let m = store_with(dir.path(), "m.sqlite", "fm", "arc", 0.5);
    let writer = Connection::open(&m).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = merge(std::slice::from_ref(&a), &m, Duration::from_millis(50))
        .unwrap_err()
        .to_string();
    assert!(err.contains("m.sqlite") && err.contains("locked"), "{err}");
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);
    assert!(merge(&[a], &m, WAIT).unwrap().changed);
}

#[test]
fn a_directory_means_its_sqlite_files() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    for name in [
        "ckpt.shard-1-of-2.sqlite",
        "ckpt.shard-0-of-2.sqlite",
        ".ckpt-tmp-x.sqlite",
        "notes.txt",
    ] {
        std::fs::write(shards.join(name), b"").unwrap();
    }
    let files = store_files(&[shards.clone(), shards.join("ckpt.shard-0-of-2.sqlite")]).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["ckpt.shard-0-of-2.sqlite", "ckpt.shard-1-of-2.sqlite"]
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = store_files(&[empty]).unwrap_err().to_string();
    assert!(err.contains("no *.sqlite"), "{err}");
}

#[test]
fn several_stores_read_as_one_without_their_caches() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(dir.path(), "a.sqlite", "fa", "arc", 0.5);
    let b = store_with(dir.path(), "b.sqlite", "fb", "arc", 0.25);
    let set = StoreSet::open(&[a.clone(), b], WAIT).unwrap();
    assert_eq!(set.checkpoints().unwrap().len(), 2);
    assert_eq!(set.metrics(None).unwrap().len(), 2);
    assert!(set.responses("fa", &["arc-r".into()]).unwrap().is_empty());
    assert_eq!(set.path(), Path::new(&format!("{} (+1 more)", a.display())));
    let one = StoreSet::open(std::slice::from_ref(&a), WAIT).unwrap();
    assert_eq!(one.path(), a);
}
