//! The results store: one SQLite file (`ckpt.sqlite`) holding everything computed about
//! checkpoints, so a rerun computes nothing twice and a killed run loses nothing.
//!
//! - `checkpoints`: what is known about each checkpoint, by fingerprint (path, run,
//!   step, stage, schedule, alpha);
//! - `responses`: the model's answer to each request, keyed by (fingerprint, request
//!   hash); written in a transaction per batch, so a `kill -9` loses at most the batch
//!   in flight;
//! - `samples`: per-doc scores of a task (for per-sample exports and paired tests);
//! - `metrics`: per-task aggregates with stderr, n, spec hash, `ckpt` version, time;
//! - `failures`: checkpoints that could not be scored, with the reason;
//! - `judge_answers`: a judge's answer to each pairwise question, keyed by (judge
//!   model, prompt hash), committed one by one so a killed run never asks twice.
//!
//! The database runs in WAL mode with a busy timeout, so readers (`ckpt report`) and
//! a writer can share it; a store locked by another writer for longer gives a clear
//! error instead of a hang.
//!
//! Stores written apart (the shards of a sweep, one per machine: SQLite must not be
//! shared over NFS) are joined by [`merge()`] (`ckpt store merge`), exactly, or read as
//! one by [`StoreSet::open`]; [`Store::status`] says what is done, failed and missing.

mod hub;
mod job;
mod merge;
mod status;

pub(crate) use hub::HubRevisionRow;
pub(crate) use job::{check_store_timeout, merge_stores, MergeStoresJob};
pub use merge::{merge, open_store, open_stores, store_files, MergeSummary, StoreSet, TableCount};
pub use status::{CheckpointStatus, State, Status, Target};

use crate::error::{Error, Result, StoreFault};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default file name of the store.
pub(crate) const STORE_FILE: &str = "ckpt.sqlite";

/// Schema version: bumped when tables change (older stores are migrated or refused).
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    fingerprint TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    run TEXT NOT NULL,
    step INTEGER,
    stage TEXT,
    schedule TEXT,
    alpha REAL,
    meta TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    fingerprint TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (fingerprint, request_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    doc_id INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    score TEXT NOT NULL,
    PRIMARY KEY (fingerprint, task, spec_hash, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    metric TEXT NOT NULL,
    filter TEXT NOT NULL,
    value REAL NOT NULL,
    stderr REAL,
    n INTEGER NOT NULL,
    higher_is_better INTEGER NOT NULL,
    num_fewshot INTEGER NOT NULL,
    regime TEXT NOT NULL,
    ckpt_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, task, spec_hash, metric, filter)
);
CREATE TABLE IF NOT EXISTS tasks (
    task TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    dataset_path TEXT NOT NULL,
    dataset_name TEXT,
    split TEXT,
    spec TEXT NOT NULL,
    data_origin TEXT,
    tokenization TEXT,
    PRIMARY KEY (task, spec_hash)
);
CREATE TABLE IF NOT EXISTS sharpness (
    fingerprint TEXT NOT NULL,
    config_key TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    step INTEGER,
    estimate REAL NOT NULL,
    stderr REAL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, config_key, checkpoint)
);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT NOT NULL,
    fingerprint TEXT,
    task TEXT,
    message TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_revisions (
    repo TEXT NOT NULL,
    revision TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    weights TEXT,
    step INTEGER,
    tokens INTEGER,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (repo, revision, commit_sha)
);
CREATE INDEX IF NOT EXISTS hub_revisions_by_weights ON hub_revisions (weights);
CREATE TABLE IF NOT EXISTS judge_answers (
    judge_model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (judge_model, prompt_hash)
) WITHOUT ROWID;
";

/// A row of `SELECT fingerprint, path, run, step, stage, schedule, alpha`.
fn checkpoint_row(r: &rusqlite::Row) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        fingerprint: r.get(0)?,
        path: r.get(1)?,
        run: r.get(2)?,
        step: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
        stage: r.get(4)?,
        schedule: r.get(5)?,
        alpha: r.get(6)?,
    })
}

/// A checkpoint as the store knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointRow {
    pub fingerprint: String,
    pub path: String,
    /// The run: the directory holding the checkpoint directories.
    pub run: String,
    pub step: Option<u64>,
    pub stage: Option<String>,
    pub schedule: Option<String>,
    /// Minimum LR factor of the schedule (1 for WSO).
    pub alpha: Option<f64>,
}

/// A task metric as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricRow {
    pub fingerprint: String,
    pub task: String,
    pub spec_hash: String,
    pub metric: String,
    pub filter: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub n: usize,
    pub higher_is_better: bool,
    pub num_fewshot: usize,
    pub regime: String,
    pub ckpt_version: String,
    pub created_at: String,
}

/// Where a task's data comes from (for model cards' `model-index`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskInfo {
    pub task: String,
    pub spec_hash: String,
    pub dataset_path: String,
    pub dataset_name: Option<String>,
    pub split: Option<String>,
    /// Where the scored docs were read: `hub`, or the local file (`--data`,
    /// `--data-dir`); `None` in stores written before ckpt recorded it.
    pub data_origin: Option<String>,
    /// The tokenization policy the results were computed under
    /// ([`crate::tokenizer::EncodePolicy::key`]); [`LEGACY_TOKENIZATION`] for results
    /// of stores written before ckpt followed lm-eval's special tokens.
    pub tokenization: Option<String>,
}

/// What a store migrated from schema 2 or older records as its results' tokenization:
/// texts were encoded without special tokens, whatever the tokenizer adds.
pub(crate) const LEGACY_TOKENIZATION: &str = "ckpt <= 0.1: no special tokens (not lm-eval's)";

/// A sharpness measurement as stored (`result`: its full JSON record).
pub struct SharpnessRecord<'a> {
    pub fingerprint: &'a str,
    pub config_key: &'a str,
    pub checkpoint: &'a str,
    pub step: Option<u64>,
    pub estimate: f64,
    pub stderr: Option<f64>,
    pub result: &'a str,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// How long a command waits for another process's lock on the store by default
/// (`--store-timeout`).
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

impl Store {
    /// Opens (creating if needed) the store at `path`, waiting up to
    /// [`DEFAULT_LOCK_WAIT`] for another process's lock.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_waiting(path, DEFAULT_LOCK_WAIT)
    }

    /// Opens the store at `path`. When another process holds it locked, says so (and
    /// which process, where the system tells) and waits up to `wait` before failing
    /// with the path; later writes wait as long.
    pub(crate) fn open_waiting(path: &Path, wait: Duration) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path).map_err(|e| sql_error(path, e))?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.set_wait(Duration::ZERO)?;
        match store.init() {
            Err(e) if is_locked(&e) => {
                tracing::warn!(
                    "{} is locked by {}; waiting up to {} s (--store-timeout)",
                    path.display(),
                    lock_holders(path),
                    wait.as_secs()
                );
                store.set_wait(wait)?;
                store.init().map_err(|e| {
                    if is_locked(&e) {
                        Error::store(
                            path,
                            StoreFault::Locked,
                            format!(
                                "locked by {} for {} s; try again when it has finished, or raise --store-timeout",
                                lock_holders(path),
                                wait.as_secs()
                            ),
                        )
                    } else {
                        e
                    }
                })?;
            }
            other => other?,
        }
        store.set_wait(wait)?;
        Ok(store)
    }

    fn set_wait(&self, wait: Duration) -> Result<()> {
        self.conn.busy_timeout(wait).map_err(|e| self.err(e))
    }

    fn init(&self) -> Result<()> {
        // `journal_mode` answers with a row; a corrupt file fails here.
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(|e| self.err(e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(&self.path, version));
        }
        self.conn.execute_batch(SCHEMA).map_err(|e| self.err(e))?;
        self.migrate()?;
        self.conn
            .execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
            .map_err(|e| self.err(e))
    }

    /// Brings a store written by an older ckpt to this schema (version 2 added
    /// `tasks.data_origin`; version 3 `tasks.tokenization`, which marks every older
    /// result as computed without special tokens: those results stay, under keys that
    /// the current policy never looks up, so they are never reused for it; version 4
    /// the `hub_revisions` table, which `CREATE TABLE IF NOT EXISTS` adds).
    fn migrate(&self) -> Result<()> {
        self.add_column("tasks", "data_origin", None)?;
        self.add_column("tasks", "tokenization", Some(LEGACY_TOKENIZATION))
    }

    /// Adds `table.column` (TEXT) when an older store lacks it, filling the rows that
    /// store already has with `old_rows`.
    fn add_column(&self, table: &str, column: &str, old_rows: Option<&str>) -> Result<()> {
        let present: bool = self
            .conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if present {
            return Ok(());
        }
        self.conn
            .execute(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"), [])
            .and_then(|_| match old_rows {
                Some(value) => self
                    .conn
                    .execute(&format!("UPDATE {table} SET {column} = ?1"), params![value]),
                None => Ok(0),
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The file this store lives in.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path, e)
    }

    /// Records (or updates) what is known about a checkpoint.
    pub fn put_checkpoint(&self, row: &CheckpointRow, meta: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO checkpoints (fingerprint, path, run, step, stage, schedule, alpha, meta, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(fingerprint) DO UPDATE SET path=?2, run=?3, step=?4, stage=?5,
                    schedule=?6, alpha=?7, meta=?8, updated_at=?9",
                params![
                    row.fingerprint,
                    row.path,
                    row.run,
                    row.step.map(|s| s as i64),
                    row.stage,
                    row.schedule,
                    row.alpha,
                    meta,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every checkpoint known, ordered by run and step.
    pub(crate) fn checkpoints(&self) -> Result<Vec<CheckpointRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT fingerprint, path, run, step, stage, schedule, alpha FROM checkpoints ORDER BY run, step, path")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], checkpoint_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// The checkpoint stored under `fingerprint`.
    pub fn checkpoint(&self, fingerprint: &str) -> Result<Option<CheckpointRow>> {
        self.conn
            .query_row(
                "SELECT fingerprint, path, run, step, stage, schedule, alpha FROM checkpoints WHERE fingerprint = ?1",
                params![fingerprint],
                checkpoint_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every checkpoint's fingerprint and `ckpt.json` (`null` when it had none).
    pub(crate) fn checkpoint_metas(&self) -> Result<Vec<(String, serde_json::Value)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT fingerprint, meta FROM checkpoints")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (fp, meta) = row.map_err(|e| self.err(e))?;
            let meta = meta
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default();
            out.push((fp, meta));
        }
        Ok(out)
    }

    /// Stored responses of `fingerprint` among `hashes` (JSON text by request hash).
    pub fn responses(
        &self,
        fingerprint: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT response FROM responses WHERE fingerprint = ?1 AND request_hash = ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for h in hashes {
            let found: Option<String> = stmt
                .query_row(params![fingerprint, h], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(json) = found {
                out.insert(h.clone(), json);
            }
        }
        Ok(out)
    }

    /// Stores responses of one batch atomically.
    pub fn put_responses(&mut self, fingerprint: &str, items: &[(String, String)]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO responses (fingerprint, request_hash, response) VALUES (?1, ?2, ?3)")
                .map_err(|e| sql_error(&path, e))?;
            for (hash, json) in items {
                stmt.execute(params![fingerprint, hash, json])
                    .map_err(|e| sql_error(&path, e))?;
            }
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Replaces a task's per-doc scores and metrics for a checkpoint, atomically.
    pub fn put_task_result(
        &mut self,
        fingerprint: &str,
        task: &str,
        spec_hash: &str,
        samples: &[(usize, String, String)],
        metrics: &[MetricRow],
    ) -> Result<()> {
        let path = self.path.clone();
        let e = |err| sql_error(&path, err);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "DELETE FROM samples WHERE fingerprint = ?1 AND task = ?2 AND spec_hash = ?3",
            params![fingerprint, task, spec_hash],
        )
        .map_err(e)?;
        tx.execute(
            "DELETE FROM metrics WHERE fingerprint = ?1 AND task = ?2 AND spec_hash = ?3",
            params![fingerprint, task, spec_hash],
        )
        .map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO samples (fingerprint, task, spec_hash, doc_id, prompt, score) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .map_err(e)?;
            for (doc_id, prompt, score) in samples {
                stmt.execute(params![
                    fingerprint,
                    task,
                    spec_hash,
                    *doc_id as i64,
                    prompt,
                    score
                ])
                .map_err(e)?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO metrics (fingerprint, task, spec_hash, metric, filter, value, stderr, n,
                        higher_is_better, num_fewshot, regime, ckpt_version, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(e)?;
            for m in metrics {
                stmt.execute(params![
                    m.fingerprint,
                    m.task,
                    m.spec_hash,
                    m.metric,
                    m.filter,
                    m.value,
                    m.stderr,
                    m.n as i64,
                    m.higher_is_better,
                    m.num_fewshot as i64,
                    m.regime,
                    m.ckpt_version,
                    m.created_at
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Records a task spec (once per spec hash).
    pub fn put_task_info(&self, info: &TaskInfo, spec_json: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO tasks (task, spec_hash, dataset_path, dataset_name, split, spec, data_origin, tokenization)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (task, spec_hash) DO UPDATE SET data_origin = excluded.data_origin,
                    tokenization = excluded.tokenization",
                params![info.task, info.spec_hash, info.dataset_path, info.dataset_name, info.split, spec_json, info.data_origin, info.tokenization],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The spec record of `(task, spec_hash)`, if stored.
    pub fn task_info(&self, task: &str, spec_hash: &str) -> Result<Option<TaskInfo>> {
        self.conn
            .query_row(
                "SELECT task, spec_hash, dataset_path, dataset_name, split, data_origin, tokenization FROM tasks WHERE task = ?1 AND spec_hash = ?2",
                params![task, spec_hash],
                |r| {
                    Ok(TaskInfo {
                        task: r.get(0)?,
                        spec_hash: r.get(1)?,
                        dataset_path: r.get(2)?,
                        dataset_name: r.get(3)?,
                        split: r.get(4)?,
                        data_origin: r.get(5)?,
                        tokenization: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every task spec recorded: `(task, spec hash, spec JSON)`.
    pub(crate) fn task_specs(&self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT task, spec_hash, spec FROM tasks ORDER BY task, spec_hash")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Stores a sharpness measurement.
    pub fn put_sharpness(&self, r: &SharpnessRecord) -> Result<()> {
        let SharpnessRecord {
            fingerprint,
            config_key,
            checkpoint,
            step,
            estimate,
            stderr,
            result,
        } = r;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO sharpness (fingerprint, config_key, checkpoint, step, estimate, stderr, result, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![fingerprint, config_key, checkpoint, step.map(|s| s as i64), estimate, stderr, result, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every sharpness record (JSON), oldest first.
    pub(crate) fn sharpness_results(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT result FROM sharpness ORDER BY created_at, checkpoint")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Whether a task's metrics for a checkpoint under a spec hash are stored.
    pub fn has_task_result(&self, fingerprint: &str, task: &str, spec_hash: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM metrics WHERE fingerprint = ?1 AND task = ?2 AND spec_hash = ?3 LIMIT 1",
                params![fingerprint, task, spec_hash],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// All metrics stored (optionally of one checkpoint).
    pub fn metrics(&self, fingerprint: Option<&str>) -> Result<Vec<MetricRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT fingerprint, task, spec_hash, metric, filter, value, stderr, n, higher_is_better,
                        num_fewshot, regime, ckpt_version, created_at
                 FROM metrics WHERE (?1 IS NULL OR fingerprint = ?1) ORDER BY task, metric, filter",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![fingerprint], |r| {
                Ok(MetricRow {
                    fingerprint: r.get(0)?,
                    task: r.get(1)?,
                    spec_hash: r.get(2)?,
                    metric: r.get(3)?,
                    filter: r.get(4)?,
                    value: r.get(5)?,
                    stderr: r.get(6)?,
                    n: r.get::<_, i64>(7)? as usize,
                    higher_is_better: r.get(8)?,
                    num_fewshot: r.get::<_, i64>(9)? as usize,
                    regime: r.get(10)?,
                    ckpt_version: r.get(11)?,
                    created_at: r.get(12)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Per-doc scores (`(doc_id, prompt, score JSON)`) of a task for a checkpoint.
    pub(crate) fn samples(
        &self,
        fingerprint: &str,
        task: &str,
        spec_hash: &str,
    ) -> Result<Vec<(usize, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, prompt, score FROM samples WHERE fingerprint = ?1 AND task = ?2 AND spec_hash = ?3 ORDER BY doc_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![fingerprint, task, spec_hash], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Stored judge answers of `judge_model` among `hashes` (JSON text by prompt hash).
    pub fn judge_answers(
        &self,
        judge_model: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT answer FROM judge_answers WHERE judge_model = ?1 AND prompt_hash = ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for h in hashes {
            let found: Option<String> = stmt
                .query_row(params![judge_model, h], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(json) = found {
                out.insert(h.clone(), json);
            }
        }
        Ok(out)
    }

    /// Stores one judge answer (committed at once: a killed run keeps it).
    pub fn put_judge_answer(
        &self,
        judge_model: &str,
        prompt_hash: &str,
        answer: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO judge_answers (judge_model, prompt_hash, answer, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![judge_model, prompt_hash, answer, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a checkpoint (or a task on it) that could not be scored.
    pub fn put_failure(
        &self,
        path: &str,
        fingerprint: Option<&str>,
        task: Option<&str>,
        message: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO failures (path, fingerprint, task, message, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![path, fingerprint, task, message, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The error for a store written by a newer ckpt, whose tables this one may misread.
fn newer_schema(path: &Path, version: i64) -> Error {
    Error::store(
        path,
        StoreFault::Unreadable,
        format!("store schema {version} is newer than this ckpt understands ({SCHEMA_VERSION}); upgrade ckpt"),
    )
}

/// Whether `e` is [`sql_error`]'s "locked" error.
fn is_locked(e: &Error) -> bool {
    matches!(
        e,
        Error::Store {
            fault: StoreFault::Locked,
            ..
        }
    )
}

/// The processes that have the store (or its WAL) open, as `pid N (command)`, read
/// from `/proc`; "another process" where the system does not tell.
fn lock_holders(path: &Path) -> String {
    let Ok(target) = path.canonicalize() else {
        return "another process".into();
    };
    let names: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", target.display())))
        .collect();
    let me = std::process::id().to_string();
    let mut holders = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let fds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|l| names.contains(&l))
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .take(3)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            holders.push(format!("pid {pid} ({})", words.join(" ")));
        }
    }
    if holders.is_empty() {
        "another process".into()
    } else {
        holders.join(", ")
    }
}

/// The start of the error for a store another process holds locked.
const LOCKED: &str = "locked by another process";

/// Seconds since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let (fault, message) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => (
            StoreFault::Locked,
            format!("{LOCKED}; try again when it has finished, or raise --store-timeout"),
        ),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => (
            StoreFault::Unreadable,
            format!("not a ckpt store or corrupt: {e}"),
        ),
        _ => (StoreFault::Query, format!("store: {e}")),
    };
    Error::store(path, fault, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_store_gains_the_data_origin_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE tasks (task TEXT NOT NULL, spec_hash TEXT NOT NULL,
                 dataset_path TEXT NOT NULL, dataset_name TEXT, split TEXT,
                 spec TEXT NOT NULL, PRIMARY KEY (task, spec_hash));
                 INSERT INTO tasks VALUES ('arc', 'h', 'allenai/ai2_arc', NULL, 'test', '{}');
                 PRAGMA user_version=1;",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let old = s.task_info("arc", "h").unwrap().unwrap();
        assert_eq!(old.data_origin, None);
        // Results of before lm-eval's special tokens are marked as such.
        assert_eq!(old.tokenization.as_deref(), Some(LEGACY_TOKENIZATION));
        let info = TaskInfo {
            data_origin: Some("hub".into()),
            ..old
        };
        s.put_task_info(&info, "{}").unwrap();
        assert_eq!(s.task_info("arc", "h").unwrap().unwrap(), info);
        drop(s);
        // Reopening a migrated store does not migrate twice.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.task_info("arc", "h").unwrap().unwrap(), info);
    }

    #[test]
    fn responses_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let mut s = Store::open(&path).unwrap();
            s.put_responses("fp", &[("h1".into(), "{\"a\":1}".into())])
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let got = s.responses("fp", &["h1".into(), "h2".into()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["h1"], "{\"a\":1}");
    }

    #[test]
    fn judge_answers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        s.put_judge_answer("judge", "p1", "{}").unwrap();
        s.put_judge_answer("other", "p2", "[]").unwrap();
        let got = s
            .judge_answers("judge", &["p1".into(), "p2".into()])
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["p1"], "{}");
    }

    #[test]
    fn corrupt_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(
            matches!(&err, Error::Store { path: p, fault: StoreFault::Unreadable, .. } if *p == path),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains("s.sqlite") && err.contains("corrupt"), "{err}");
    }

    /// A caller tells a store failure (which ends a run) from a bad stored value read
    /// from the same file, by kind, not by comparing paths.
    #[test]
    fn a_store_failure_is_told_by_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert!(Store::open(&path).err().unwrap().is_store());
        assert!(!Error::bad_file(&path, "not a store error").is_store());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert_eq!(now().len(), 20);
    }
}
