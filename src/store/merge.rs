//! Joining stores: `ckpt store merge A B ... --into STORE`, and several stores read as
//! one (`ckpt report`, `ckpt store status`).
//!
//! The shards of a sweep (`--shard I/N`) each write a store of their own beside the main
//! one, because SQLite's WAL must not be shared over NFS; merging them gives the store
//! one process would have written. Every row of every table is copied. Where a key is
//! already merged, what is a result must be equal, and what legitimately differs
//! between machines follows a fixed rule ([`RULES`]; "first" is the merge order: the
//! target as it was, then the sources as given):
//!
//! | table | compared: a difference is a conflict | the other columns |
//! |---|---|---|
//! | `checkpoints` | `run`, `step`, `stage`, `schedule`, `alpha` | `path`, `meta`, `updated_at`: the newest `updated_at` wins, as a later `ckpt eval` would record it (the same weights are found at other paths on other machines) |
//! | `samples` | `prompt`, `score` | |
//! | `metrics` | `value`, `stderr`, `n`, `higher_is_better`, `num_fewshot`, `regime` | `ckpt_version`, `created_at`: the earliest wins (one process never scores a task twice, so it keeps the first) |
//! | `tasks` | `dataset_path`, `dataset_name`, `split`, `spec`, `tokenization` | `data_origin`: the first (the data file's path on the machine that scored it) |
//! | `sharpness` | `step`, `estimate`, `stderr`, `result` less its `seconds` and `ckpt_version` | `result`, `created_at`: the first |
//! | `hub_revisions` | `fingerprint` (one commit has one set of weights) | `weights`, `step`, `tokens`, `seen_at`: the earliest sighting |
//! | `responses`, `judge_answers` | (caches) | the first; differing rows are counted and warned about |
//! | `failures` | (no key: a log) | every row not already there |
//!
//! A conflict stops the merge with an error naming the table, the key, the column and
//! both files; the target is left as it was. Caches are not results: a response is a
//! model's output for a request, which two machines (or two batchings) may compute a
//! last bit apart, and the samples and metrics computed from either are compared. A
//! failure stays in the log even when another store has the result (as it does in one
//! store when a rerun succeeds); [`super::Store::status`] shows such a task as done.
//!
//! The merge is built in a temporary file beside the target (a copy of it, migrated to
//! this schema), synced, then renamed over it: a crash leaves the target as it was.
//! Sources are only read; one of an older schema is migrated in a temporary copy.

use super::{lock_holders, newer_schema, sql_error, Store, SCHEMA_VERSION};
use crate::atomic_file::temp_beside;
use crate::error::{parent_dir, Conflict, Error, Result, StoreFault};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempPath;

/// How the rows of a keyed table are merged.
struct Rule {
    table: &'static str,
    key: &'static [&'static str],
    /// Equal wherever the key is: column names, or SQL expressions over `{t}` (the
    /// row's table).
    same: &'static [&'static str],
    /// The other columns, taken together from one row as `keep` says.
    rest: &'static [&'static str],
    keep: Keep,
    /// A cache: a difference in `same` keeps the row already merged and is counted.
    cache: bool,
}

#[derive(Clone, Copy)]
enum Keep {
    /// The row merged first.
    First,
    /// The row whose column is greatest (a timestamp: the newest).
    Newest(&'static str),
    /// The row whose column is least (a timestamp: the earliest).
    Earliest(&'static str),
}

/// A sharpness record as compared: without the measurement's wall time and version.
const SHARPNESS_RESULT: &str = "json_remove({t}.result, '$.seconds', '$.ckpt_version')";

/// The keyed tables and their rules (the module's table says why).
const RULES: [Rule; 8] = [
    Rule {
        table: "checkpoints",
        key: &["fingerprint"],
        same: &["run", "step", "stage", "schedule", "alpha"],
        rest: &["path", "meta", "updated_at"],
        keep: Keep::Newest("updated_at"),
        cache: false,
    },
    Rule {
        table: "tasks",
        key: &["task", "spec_hash"],
        same: &[
            "dataset_path",
            "dataset_name",
            "split",
            "spec",
            "tokenization",
        ],
        rest: &["data_origin"],
        keep: Keep::First,
        cache: false,
    },
    Rule {
        table: "samples",
        key: &["fingerprint", "task", "spec_hash", "doc_id"],
        same: &["prompt", "score"],
        rest: &[],
        keep: Keep::First,
        cache: false,
    },
    Rule {
        table: "metrics",
        key: &["fingerprint", "task", "spec_hash", "metric", "filter"],
        same: &[
            "value",
            "stderr",
            "n",
            "higher_is_better",
            "num_fewshot",
            "regime",
        ],
        rest: &["ckpt_version", "created_at"],
        keep: Keep::Earliest("created_at"),
        cache: false,
    },
    Rule {
        table: "sharpness",
        key: &["fingerprint", "config_key", "checkpoint"],
        same: &["step", "estimate", "stderr", SHARPNESS_RESULT],
        rest: &["result", "created_at"],
        keep: Keep::First,
        cache: false,
    },
    Rule {
        table: "hub_revisions",
        key: &["repo", "revision", "commit_sha"],
        same: &["fingerprint"],
        rest: &["weights", "step", "tokens", "seen_at"],
        keep: Keep::Earliest("seen_at"),
        cache: false,
    },
    Rule {
        table: "responses",
        key: &["fingerprint", "request_hash"],
        same: &["response"],
        rest: &[],
        keep: Keep::First,
        cache: true,
    },
    Rule {
        table: "judge_answers",
        key: &["judge_model", "prompt_hash"],
        same: &["answer"],
        rest: &["created_at"],
        keep: Keep::First,
        cache: true,
    },
];

/// `failures` has no key: a row is copied unless an equal one is there.
const COPY_FAILURES: &str =
    "INSERT INTO main.failures (path, fingerprint, task, message, created_at)
    SELECT s.path, s.fingerprint, s.task, s.message, s.created_at FROM src.failures AS s
    WHERE NOT EXISTS (SELECT 1 FROM main.failures AS m WHERE m.path IS s.path
        AND m.fingerprint IS s.fingerprint AND m.task IS s.task
        AND m.message IS s.message AND m.created_at IS s.created_at)";

fn is_column(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `col` of the row aliased `alias`.
fn expr(col: &str, alias: &str) -> String {
    if is_column(col) {
        format!("{alias}.{col}")
    } else {
        col.replace("{t}", alias)
    }
}

/// The column an expression of `same` is about (for messages).
fn column_name(col: &str) -> &str {
    col.split("{t}.")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
        })
        .unwrap_or(col)
}

impl Rule {
    /// Every column of the table.
    fn columns(&self) -> Vec<&'static str> {
        let same = self.same.iter().filter(|c| is_column(c));
        self.key
            .iter()
            .chain(same)
            .chain(self.rest)
            .copied()
            .collect()
    }

    /// Rows of `src` whose key is merged with other `same` values: the key, then per
    /// compared column the merged value, the source's and whether they are equal.
    fn differing_sql(&self) -> String {
        let keys: Vec<String> = self.key.iter().map(|k| format!("s.{k}")).collect();
        let on: Vec<String> = self.key.iter().map(|k| format!("m.{k} = s.{k}")).collect();
        let mut pairs = Vec::new();
        let mut equal = Vec::new();
        for c in self.same {
            let (m, s) = (expr(c, "m"), expr(c, "s"));
            equal.push(format!("{m} IS {s}"));
            pairs.push(format!("{m}, {s}, {m} IS {s}"));
        }
        format!(
            "SELECT {}, {} FROM src.{t} AS s JOIN main.{t} AS m ON {} WHERE NOT ({})",
            keys.join(", "),
            pairs.join(", "),
            on.join(" AND "),
            equal.join(" AND "),
            t = self.table
        )
    }

    /// Copies the rows of `src`: new keys are inserted, merged ones updated as `keep` says.
    fn copy_sql(&self) -> String {
        let cols = self.columns().join(", ");
        let action = match self.keep {
            Keep::First => "NOTHING".to_string(),
            Keep::Newest(c) => self.update_rest_if(c, ">"),
            Keep::Earliest(c) => self.update_rest_if(c, "<"),
        };
        format!(
            "INSERT INTO main.{t} ({cols}) SELECT {cols} FROM src.{t} WHERE true
             ON CONFLICT ({}) DO {action}",
            self.key.join(", "),
            t = self.table
        )
    }

    fn update_rest_if(&self, col: &str, op: &str) -> String {
        let set: Vec<String> = self
            .rest
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "UPDATE SET {} WHERE excluded.{col} {op} {}.{col}",
            set.join(", "),
            self.table
        )
    }
}

/// What a merge did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub(crate) table: String,
    /// Rows with a key (or, in `failures`, content) the target did not have.
    pub(crate) added: usize,
    /// Merged rows whose other columns a source replaced (a newer checkpoint path, an
    /// earlier metric time).
    pub(crate) updated: usize,
    /// Cache rows that differed from the one kept.
    pub(crate) differing: usize,
}

/// What [`merge`] did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub(crate) into: PathBuf,
    pub(crate) sources: Vec<PathBuf>,
    pub(crate) tables: Vec<TableCount>,
    /// Whether `into` was written: false when it already held everything.
    pub(crate) changed: bool,
}

/// A store as it is read: the file named, or a migrated copy of it.
struct Input {
    /// The file the user named (for messages).
    label: PathBuf,
    /// The file read.
    file: PathBuf,
    _copy: Option<TempPath>,
}

impl Input {
    /// Opens a source, refusing what is not a ckpt store or is newer than this ckpt;
    /// an older one is migrated in a copy in `tmp_dir`, never in place.
    fn open(path: &Path, tmp_dir: &Path, wait: Duration) -> Result<Self> {
        let conn = open_existing(path, wait)?;
        let label = path.to_path_buf();
        if schema_version(&conn, path)? == SCHEMA_VERSION {
            return Ok(Self {
                file: absolute(path),
                label,
                _copy: None,
            });
        }
        let copy = temp_file(tmp_dir)?;
        vacuum_into(&conn, path, &copy)?;
        drop(conn);
        Store::open(&copy)?;
        Ok(Self {
            label,
            file: copy.to_path_buf(),
            _copy: Some(copy),
        })
    }
}

/// A path SQLite reads as a file name whatever it looks like (`file:x` would be a URI).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// An existing store file, opened to be read. Read-write although nothing is written:
/// a read-only connection leaves a WAL store's `-wal` and `-shm` files behind.
fn open_existing(path: &Path, wait: Duration) -> Result<Connection> {
    if !path.is_file() {
        return Err(Error::store(
            path,
            StoreFault::Missing,
            "no such store file",
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(wait).map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

/// The store's schema version: an error for a file that is no ckpt store, or one
/// written by a newer ckpt.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(newer_schema(path, version));
    }
    if version < 1 {
        return Err(Error::store(
            path,
            StoreFault::Unreadable,
            "not a ckpt store (an SQLite file without ckpt's schema)",
        ));
    }
    Ok(version)
}

/// A consistent copy of `conn`'s store (its WAL included) into the empty file `to`.
fn vacuum_into(conn: &Connection, from: &Path, to: &Path) -> Result<()> {
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(|e| sql_error(from, e))?;
    Ok(())
}

/// A new empty file in `dir`, deleted when dropped.
fn temp_file(dir: &Path) -> Result<TempPath> {
    Ok(temp_beside(&dir.join("ckpt.sqlite"), "")?.into_temp_path())
}

/// The target, being built.
struct Merger {
    conn: Connection,
    file: PathBuf,
    /// The stores merged so far, to name the one a conflicting row came from.
    merged: Vec<Input>,
    counts: Vec<TableCount>,
    /// Whether the caches (responses, judge answers) are merged.
    caches: bool,
}

impl Merger {
    /// Opens the target `file` (empty, or a copy of the old target), migrated.
    fn new(file: &Path, caches: bool) -> Result<Self> {
        let Store { conn, .. } = Store::open(file)?;
        // A temporary file until renamed: its durability is the sync before the rename.
        conn.execute_batch("PRAGMA synchronous=OFF")
            .map_err(|e| sql_error(file, e))?;
        let counts = RULES
            .iter()
            .filter(|r| caches || !r.cache)
            .map(|r| r.table)
            .chain(["failures"])
            .map(|table| TableCount {
                table: table.to_string(),
                added: 0,
                updated: 0,
                differing: 0,
            })
            .collect();
        Ok(Self {
            conn,
            file: file.to_path_buf(),
            merged: Vec::new(),
            counts,
            caches,
        })
    }

    /// Merges one store into the target, in one transaction.
    fn add(&mut self, input: Input) -> Result<()> {
        self.conn
            .execute("ATTACH DATABASE ?1 AS src", [input.file.to_string_lossy()])
            .map_err(|e| sql_error(&input.label, e))?;
        let result = self.in_transaction(&input);
        let detached = self
            .conn
            .execute_batch("DETACH DATABASE src")
            .map_err(|e| sql_error(&input.label, e));
        result.and(detached)?;
        self.merged.push(input);
        Ok(())
    }

    fn in_transaction(&mut self, input: &Input) -> Result<()> {
        self.exec("BEGIN")?;
        let result = self.copy_tables(input);
        match result {
            Ok(()) => self.exec("COMMIT"),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn exec(&self, sql: &str) -> Result<()> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| sql_error(&self.file, e))
    }

    fn copy_tables(&mut self, input: &Input) -> Result<()> {
        let caches = self.caches;
        for rule in RULES.iter().filter(|r| caches || !r.cache) {
            self.check(rule, input)?;
            self.copy(rule, input)?;
        }
        self.copy_failures(input)
    }

    /// A conflict is an error; in a cache, differing rows are counted.
    fn check(&mut self, rule: &Rule, input: &Input) -> Result<()> {
        let e = |err| sql_error(&input.label, err);
        let width = rule.key.len() + 3 * rule.same.len();
        let mut stmt = self.conn.prepare(&rule.differing_sql()).map_err(e)?;
        let mut rows = stmt.query([]).map_err(e)?;
        let mut first: Option<Vec<Value>> = None;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(e)? {
            if first.is_none() {
                first = Some(
                    (0..width)
                        .map(|i| row.get(i))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(e)?,
                );
            }
            count += 1;
            if !rule.cache {
                break;
            }
        }
        drop(rows);
        drop(stmt);
        let Some(values) = first else {
            return Ok(());
        };
        if !rule.cache {
            return Err(self.conflict(rule, input, &values));
        }
        let (key, _) = values.split_at(rule.key.len());
        tracing::warn!(
            "{count} {} rows of {} differ from those merged before (first: {}); kept those",
            rule.table,
            input.label.display(),
            show_key(rule, key)
        );
        self.count(rule.table).differing += count;
        Ok(())
    }

    fn conflict(&self, rule: &Rule, input: &Input, values: &[Value]) -> Error {
        let (key, pairs) = values.split_at(rule.key.len());
        let i = (0..rule.same.len())
            .find(|i| pairs[3 * i + 2] != Value::Integer(1))
            .unwrap_or(0);
        let (first_value, second_value) = show_pair(&pairs[3 * i], &pairs[3 * i + 1]);
        Error::MergeConflict(Box::new(Conflict {
            table: rule.table.to_string(),
            key: show_key(rule, key),
            column: column_name(rule.same[i]).to_string(),
            first: self.origin(rule, key),
            first_value,
            second: input.label.clone(),
            second_value,
        }))
    }

    /// The first store merged that holds `key`: where the target's row came from (its
    /// compared columns never change once merged).
    fn origin(&self, rule: &Rule, key: &[Value]) -> PathBuf {
        let cond: Vec<String> = (0..rule.key.len())
            .map(|i| format!("{} = ?{}", rule.key[i], i + 1))
            .collect();
        let sql = format!("SELECT 1 FROM {} WHERE {}", rule.table, cond.join(" AND "));
        let holds = |input: &&Input| {
            open_existing(&input.file, Duration::ZERO)
                .and_then(|c| {
                    c.query_row(&sql, params_from_iter(key), |_| Ok(()))
                        .map_err(|e| sql_error(&input.file, e))
                })
                .is_ok()
        };
        self.merged
            .iter()
            .find(holds)
            .map(|i| i.label.clone())
            .unwrap_or_else(|| PathBuf::from("the merged store"))
    }

    fn copy(&mut self, rule: &Rule, input: &Input) -> Result<()> {
        // Counting is a scan: only the small tables whose rows may be updated need it.
        let counted = !matches!(rule.keep, Keep::First);
        let before = if counted { self.rows(rule.table)? } else { 0 };
        let changed = self
            .conn
            .execute(&rule.copy_sql(), [])
            .map_err(|e| sql_error(&input.label, e))?;
        let added = if counted {
            self.rows(rule.table)? - before
        } else {
            changed
        };
        let count = self.count(rule.table);
        count.added += added;
        count.updated += changed - added;
        Ok(())
    }

    fn copy_failures(&mut self, input: &Input) -> Result<()> {
        let added = self
            .conn
            .execute(COPY_FAILURES, [])
            .map_err(|e| sql_error(&input.label, e))?;
        self.count("failures").added += added;
        Ok(())
    }

    fn rows(&self, table: &str) -> Result<usize> {
        self.conn
            .query_row(&format!("SELECT COUNT(*) FROM main.{table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(|e| sql_error(&self.file, e))
    }

    fn count(&mut self, table: &str) -> &mut TableCount {
        self.counts
            .iter_mut()
            .find(|c| c.table == table)
            .expect("a count per merged table")
    }

    fn changed(&self) -> bool {
        self.counts.iter().any(|c| c.added + c.updated > 0)
    }

    /// Closes the target as a plain rollback-journal file: no `-wal` or `-shm` is left
    /// beside it to be taken for the renamed file's.
    fn close(self) -> Result<()> {
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.file, e))?;
        self.conn.close().map_err(|(_, e)| sql_error(&self.file, e))
    }
}

/// `col=value, ...` of a key.
fn show_key(rule: &Rule, key: &[Value]) -> String {
    rule.key
        .iter()
        .zip(key)
        .map(|(k, v)| format!("{k}={}", show(v, 0, 80)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Two differing values for a message: long texts around where they first differ.
fn show_pair(a: &Value, b: &Value) -> (String, String) {
    let from = match (a, b) {
        (Value::Text(a), Value::Text(b)) => a
            .char_indices()
            .zip(b.chars())
            .find(|((_, x), y)| x != y)
            .map(|((i, _), _)| i)
            .unwrap_or(a.len().min(b.len())),
        _ => 0,
    };
    (show(a, from, 60), show(b, from, 60))
}

/// A value for a message; a text shown from about byte `from`, at most `width` chars.
fn show(v: &Value, from: usize, width: usize) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(x) => x.to_string(),
        Value::Blob(b) => format!("<{} bytes>", b.len()),
        Value::Text(s) => {
            let start = s
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|&i| i + 20 <= from)
                .last()
                .unwrap_or(0);
            let part: String = s[start..].chars().take(width).collect();
            let pre = if start > 0 { "…" } else { "" };
            let post = if start + part.len() < s.len() {
                "…"
            } else {
                ""
            };
            format!("{:?}", format!("{pre}{part}{post}"))
        }
    }
}

/// Holds the target's write lock from before it is copied until the merged file has
/// replaced it, so that no other process's write falls in between and is lost.
struct Guard(Connection);

impl Guard {
    /// Locks `into` if it exists.
    fn lock(into: &Path, wait: Duration) -> Result<Option<Self>> {
        if !into.exists() {
            return Ok(None);
        }
        let conn = open_existing(into, wait)?;
        schema_version(&conn, into)?;
        // After the rename, frames left in the old file's WAL would be read as pages of
        // the new one: the WAL must be empty, and stay so while the lock is held.
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| sql_error(into, e))?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| sql_error(into, e))?;
        let mut wal = into.as_os_str().to_os_string();
        wal.push("-wal");
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if busy != 0 || wal_len > 0 {
            return Err(Error::store(
                into,
                StoreFault::Locked,
                format!(
                    "in use by {}; try again when it has finished",
                    lock_holders(into)
                ),
            ));
        }
        Ok(Some(Self(conn)))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Merges the stores `sources` into `into` (created if missing): every row of every
/// table, by the rules of this module. Atomic: the merge is built in a temporary file
/// beside `into` and renamed over it, so a conflict or a crash leaves `into` as it was;
/// when `into` already holds everything it is not rewritten. Another process's lock on
/// `into` is waited for up to `wait`.
pub fn merge(sources: &[PathBuf], into: &Path, wait: Duration) -> Result<MergeSummary> {
    let dir = target_dir(into)?;
    let guard = Guard::lock(into, wait)?;
    let target = temp_file(dir)?;
    if guard.is_some() {
        vacuum_into(&open_existing(into, wait)?, into, &target)?;
    }
    let mut merger = Merger::new(&target, true)?;
    if guard.is_some() {
        merger.merged.push(Input {
            label: into.to_path_buf(),
            file: absolute(into),
            _copy: None,
        });
    }
    for source in sources {
        merger.add(Input::open(source, dir, wait)?)?;
    }
    let changed = merger.changed() || guard.is_none();
    let summary = MergeSummary {
        into: into.to_path_buf(),
        sources: sources.to_vec(),
        tables: merger.counts.clone(),
        changed,
    };
    merger.close()?;
    if changed {
        replace(target, into)?;
    }
    drop(guard);
    Ok(summary)
}

/// The directory the merged store `into` goes to, which must exist.
fn target_dir(into: &Path) -> Result<&Path> {
    if into.as_os_str().is_empty() {
        return Err(Error::bad_value(
            "--into",
            "the merged store's path is empty",
        ));
    }
    let dir = parent_dir(into);
    if !dir.is_dir() {
        return Err(Error::bad_file(
            dir,
            "no such directory (for the merged store)",
        ));
    }
    if into.is_dir() {
        return Err(Error::bad_file(
            into,
            "is a directory; --into names the merged store's file",
        ));
    }
    Ok(dir)
}

/// Syncs `target` and renames it over `into`.
fn replace(target: TempPath, into: &Path) -> Result<()> {
    let file = std::fs::File::open(&target).map_err(|e| Error::io(into, e))?;
    file.sync_all().map_err(|e| Error::io(into, e))?;
    // A shared store keeps its permissions (group-writable, say).
    if let Ok(old) = std::fs::metadata(into) {
        let _ = file.set_permissions(old.permissions());
    }
    target.persist(into).map_err(|e| Error::io(into, e.error))?;
    Ok(())
}

/// The store files `paths` name: a file as it is; a directory as every `*.sqlite` in
/// it (hidden files, such as a merge's temporary, left out), in name order; each file
/// once. A path that is neither, or a directory without a store, is an error.
pub fn store_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let found = sqlite_files_in(path)?;
            if found.is_empty() {
                return Err(Error::store(
                    path,
                    StoreFault::Missing,
                    "no *.sqlite store in this directory",
                ));
            }
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(Error::store(
                path,
                StoreFault::Missing,
                "no such store file",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    Ok(files)
}

fn sqlite_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".sqlite") && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Stores read as one. A single file is opened as it is; several are merged (by the
/// rules of [`merge`], so a conflict is an error) into a temporary store, without the
/// caches, which readers of results never need. The merged store is named after the
/// first file ("FILE (+N more)"), so that paths recorded relative to it still resolve.
pub struct StoreSet {
    store: Store,
    _merged: Option<TempPath>,
}

impl StoreSet {
    /// Opens `files` (from [`store_files`]) as one store.
    pub fn open(files: &[PathBuf], wait: Duration) -> Result<Self> {
        let Some(first) = files.first() else {
            return Err(Error::bad_value("store", "no results store to read"));
        };
        if files.len() == 1 {
            return Ok(Self {
                store: Store::open_waiting(first, wait)?,
                _merged: None,
            });
        }
        let tmp_dir = std::env::temp_dir();
        let merged = temp_file(&tmp_dir)?;
        let mut merger = Merger::new(&merged, false)?;
        for file in files {
            merger.add(Input::open(file, &tmp_dir, wait)?)?;
        }
        let Merger { conn, .. } = merger;
        let path = PathBuf::from(format!("{} (+{} more)", first.display(), files.len() - 1));
        Ok(Self {
            store: Store { conn, path },
            _merged: Some(merged),
        })
    }
}

impl std::ops::Deref for StoreSet {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Opens an existing store: `path` is the file, or a directory holding `ckpt.sqlite`.
/// A missing file is an error (opening would create an empty one). Another process's
/// lock is waited for up to `wait`.
pub fn open_store(path: &Path, wait: std::time::Duration) -> Result<Store> {
    let file = if path.is_dir() {
        path.join(super::STORE_FILE)
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(crate::error::Error::bad_file(
            &file,
            "no results store here (ckpt eval --store FILE writes one)",
        ));
    }
    Store::open_waiting(&file, wait)
}

/// Opens existing stores as one ([`StoreSet`]: several are merged, exactly, into a
/// temporary store): each path a file, or a directory whose `*.sqlite` files (its
/// `ckpt.sqlite`, the shards of a sweep) are read. A missing store is an error (opening
/// would create an empty one). Another process's lock is waited for up to `wait`.
pub fn open_stores(paths: &[PathBuf], wait: std::time::Duration) -> Result<StoreSet> {
    for path in paths {
        let found =
            path.is_file() || (path.is_dir() && store_files(std::slice::from_ref(path)).is_ok());
        if !found {
            let file = if path.is_dir() {
                path.join(super::STORE_FILE)
            } else {
                path.clone()
            };
            return Err(crate::error::Error::bad_file(
                &file,
                "no results store here (ckpt eval --store FILE writes one)",
            ));
        }
    }
    StoreSet::open(&store_files(paths)?, wait)
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
