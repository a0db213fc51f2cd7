//! The upload plan: which files a release puts in the repository, their sizes and
//! hashes, and whether they travel by LFS.
//!
//! A release ships the files `transformers` needs to load the model (config, weights,
//! tokenizer files) plus what `ckpt release` generates (the model card, the LR plot).
//! `--include GLOB` adds other files of the checkpoint directory (`ckpt.json`, ...);
//! `--exclude GLOB` removes files, generated ones included. Optimizer state and
//! `ckpt.json` (local paths, RNG state) stay home unless included.
//!
//! Whether a file goes to LFS is the Hub's decision (its `preupload` answer); the plan
//! predicts it with the Hub's rules (over 10 MiB, a binary sample, or an extension the
//! default `.gitattributes` tracks) for the dry run.

use crate::error::{Error, Result};
use crate::progress::{Progress, Unit};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files larger than this always go to LFS on the Hub.
pub(crate) const LFS_SIZE: u64 = 10 * 1024 * 1024;

/// The checkpoint files a release ships by default besides the side files (shards
/// named by the index too).
const DEFAULT_FILES: [&str; 3] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
];

/// Extensions the Hub's default `.gitattributes` for model repositories puts in LFS.
const LFS_EXTENSIONS: [&str; 30] = [
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "xz",
    "zip",
    "zst",
];

/// How a file reaches the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UploadMode {
    /// Stored by the LFS API, referenced by its sha256 in the commit.
    Lfs,
    /// Sent inline (base64) in the commit.
    Regular,
}

impl std::fmt::Display for UploadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadMode::Lfs => "lfs",
            UploadMode::Regular => "regular",
        })
    }
}

/// One file of the plan.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PlanFile {
    /// Where it goes in the repository (`/`-separated).
    pub(crate) path_in_repo: String,
    /// Where its bytes are.
    #[serde(skip)]
    pub(crate) source: PathBuf,
    pub(crate) size: u64,
    /// sha256 of the content, hex: the LFS object id.
    pub(crate) sha256: String,
    /// Git blob id (sha1) of the content, for files small enough to be regular.
    #[serde(skip)]
    pub(crate) git_oid: Option<String>,
    /// The first 512 bytes, which `preupload` looks at.
    #[serde(skip)]
    pub(crate) sample: Vec<u8>,
    /// Predicted by the plan, then set to what the Hub decided.
    pub(crate) mode: UploadMode,
    /// Made by `ckpt release` (card, plot) rather than taken from the checkpoint.
    pub(crate) generated: bool,
}

/// The files of a release, sorted by path in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub(crate) files: Vec<PlanFile>,
}

/// A file chosen for the release, before hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub path_in_repo: String,
    pub source: PathBuf,
    pub generated: bool,
}

/// `--include` / `--exclude` globs (matched against paths in the repository; `*`
/// crosses `/` as in `hf upload`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

/// The globs of `flag` (`--include` or `--exclude`) as one set.
fn glob_set(flag: &str, patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob =
            Glob::new(p).map_err(|e| Error::bad_value(flag, format!("invalid glob {p:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::bad_value(flag, format!("invalid globs: {e}")))
}

/// The files to release: the checkpoint's default files and `--include` matches,
/// the `generated` files (`(path_in_repo, source)`, replacing same-named checkpoint
/// files), less `--exclude` matches.
pub(crate) fn select(
    ckpt_dir: &Path,
    generated: &[(String, PathBuf)],
    filters: &Filters,
) -> Result<Vec<Selected>> {
    let include = glob_set("--include", &filters.include)?;
    let exclude = glob_set("--exclude", &filters.exclude)?;
    // The weights read, with their index: `pytorch_model.bin.index.json` is not a
    // default file, as a checkpoint that also has safetensors does not ship it.
    let shards: Vec<String> = crate::checkpoint::weight_paths(ckpt_dir)
        .unwrap_or_default()
        .into_iter()
        .chain(crate::checkpoint::weight_index(ckpt_dir))
        .filter_map(|p| p.strip_prefix(ckpt_dir).ok().map(repo_path))
        .collect();
    let mut chosen = Vec::new();
    for rel in files_under(ckpt_dir)? {
        let default = DEFAULT_FILES.contains(&rel.as_str())
            || crate::tokenizer::files::SIDE_FILES.contains(&rel.as_str())
            || shards.contains(&rel);
        let replaced = generated.iter().any(|(name, _)| *name == rel);
        if (default || include.is_match(&rel)) && !replaced {
            chosen.push(Selected {
                source: ckpt_dir.join(&rel),
                path_in_repo: rel,
                generated: false,
            });
        }
    }
    for (name, source) in generated {
        chosen.push(Selected {
            path_in_repo: name.clone(),
            source: source.clone(),
            generated: true,
        });
    }
    chosen.retain(|s| !exclude.is_match(&s.path_in_repo));
    chosen.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
    if chosen.is_empty() {
        return Err(Error::bad_value(
            "--exclude",
            "nothing to release: --exclude removed every file",
        ));
    }
    // A release without (all) its weights is no model: transformers cannot load it.
    if let Some(shard) = shards.iter().find(|w| exclude.is_match(w.as_str())) {
        let glob = filters
            .exclude
            .iter()
            .find(|g| {
                glob_set("--exclude", std::slice::from_ref(g))
                    .is_ok_and(|set| set.is_match(shard.as_str()))
            })
            .map_or("", String::as_str);
        return Err(Error::bad_value(
            "--exclude",
            format!("--exclude {glob:?} removes the weights ({shard}): a release needs them"),
        ));
    }
    Ok(chosen)
}

fn repo_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Regular files under `dir` (relative, `/`-separated), hidden ones skipped.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = entry.map_err(|e| Error::bad_file(e.path().unwrap_or(dir), e.to_string()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).expect("under dir");
        if rel.to_str().is_none() {
            return Err(Error::bad_file(entry.path(), "file name is not UTF-8"));
        }
        out.push(repo_path(rel));
    }
    Ok(out)
}

/// The Hub's rule for LFS, applied locally to predict `preupload`'s answer.
pub(crate) fn predict_mode(path_in_repo: &str, size: u64, sample: &[u8]) -> UploadMode {
    let ext = path_in_repo
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let tracked = ext.as_deref().is_some_and(|e| LFS_EXTENSIONS.contains(&e))
        || path_in_repo.contains("tfevents");
    if size > 0 && (size > LFS_SIZE || tracked || sample.contains(&0)) {
        UploadMode::Lfs
    } else {
        UploadMode::Regular
    }
}

/// Hashes of a file, read once in 1 MiB blocks.
struct Hashes {
    size: u64,
    sha256: String,
    git_oid: Option<String>,
    sample: Vec<u8>,
}

fn hash_file(path: &Path, progress: &dyn Progress) -> Result<Hashes> {
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut sha256 = Sha256::new();
    // Git's blob id is sha1("blob <size>\0" + content): computed only for files that
    // may be committed inline.
    let mut sha1 = (size <= LFS_SIZE).then(|| {
        let mut h = Sha1::new();
        h.update(format!("blob {size}\0").as_bytes());
        h
    });
    let mut sample = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        if sample.len() < 512 {
            let take = (512 - sample.len()).min(n);
            sample.extend_from_slice(&buf[..take]);
        }
        sha256.update(&buf[..n]);
        if let Some(h) = sha1.as_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
        progress.advance(n as u64);
    }
    if total != size {
        return Err(Error::bad_file(
            path,
            "the file changed size while it was read",
        ));
    }
    Ok(Hashes {
        size,
        sha256: format!("{:x}", sha256.finalize()),
        git_oid: sha1.map(|h| format!("{:x}", h.finalize())),
        sample,
    })
}

impl Plan {
    /// Hashes the selected files (`progress` advances by bytes read).
    pub fn build(selected: Vec<Selected>, progress: &dyn Progress) -> Result<Self> {
        let total: u64 = selected
            .iter()
            .map(|s| std::fs::metadata(&s.source).map(|m| m.len()).unwrap_or(0))
            .sum();
        progress.start("hashing", Unit::Bytes, total, 0);
        let mut files = Vec::with_capacity(selected.len());
        for s in selected {
            let h = hash_file(&s.source, progress)?;
            files.push(PlanFile {
                mode: predict_mode(&s.path_in_repo, h.size, &h.sample),
                path_in_repo: s.path_in_repo,
                source: s.source,
                size: h.size,
                sha256: h.sha256,
                git_oid: h.git_oid,
                sample: h.sample,
                generated: s.generated,
            });
        }
        Ok(Self { files })
    }

    /// Total bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Writes exactly the plan's files into `dir`, which must be new or empty.
    pub(crate) fn write_to(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            if entries.next().is_some() {
                return Err(Error::bad_file(
                    dir,
                    "not empty: a dry run writes exactly the release's files, give a new or empty directory",
                ));
            }
        }
        for f in &self.files {
            let target = dir.join(&f.path_in_repo);
            let tmp = crate::atomic_file::temp_beside(&target, "")?;
            std::fs::copy(&f.source, tmp.path()).map_err(|e| Error::io(&f.source, e))?;
            tmp.persist(&target)
                .map_err(|e| Error::io(&target, e.error))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicts_the_hubs_lfs_rule() {
        assert_eq!(
            predict_mode("model.safetensors", 100, b"{}"),
            UploadMode::Lfs
        );
        assert_eq!(predict_mode("tokenizer.model", 100, b"x"), UploadMode::Lfs);
        assert_eq!(
            predict_mode("lr_schedule.png", 100, b"\x89PNG\r\n\x1a\n\0\0"),
            UploadMode::Lfs
        );
        assert_eq!(predict_mode("config.json", 100, b"{}"), UploadMode::Regular);
        assert_eq!(
            predict_mode("big.json", LFS_SIZE + 1, b"{}"),
            UploadMode::Lfs
        );
        assert_eq!(predict_mode("empty.bin", 0, b""), UploadMode::Regular);
    }

    #[test]
    fn hashes_match_sha256_and_git() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hello.txt");
        std::fs::write(&p, "hello\n").unwrap();
        let h = hash_file(&p, &crate::progress::Silent).unwrap();
        // `sha256sum` and `git hash-object` of "hello\n".
        assert_eq!(
            h.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(
            h.git_oid.unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(h.sample, b"hello\n");
    }

    #[test]
    fn bin_weights_ship_with_their_index_and_only_without_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let index = r#"{"weight_map": {"a": "pytorch_model-00001-of-00002.bin",
                                      "b": "pytorch_model-00002-of-00002.bin"}}"#;
        std::fs::write(d.join("pytorch_model.bin.index.json"), index).unwrap();
        for f in [
            "config.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "training_args.bin",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let names = || -> Vec<String> {
            select(d, &[], &Filters::default())
                .unwrap()
                .into_iter()
                .map(|s| s.path_in_repo)
                .collect()
        };
        assert_eq!(
            names(),
            [
                "config.json",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json"
            ]
        );
        // With safetensors beside them, the safetensors are the weights.
        std::fs::write(d.join("model.safetensors"), "x").unwrap();
        assert_eq!(names(), ["config.json", "model.safetensors"]);
    }

    #[test]
    fn selection_ships_defaults_includes_and_generated_less_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "ckpt.json",
            "optimizer.safetensors",
            "README.md",
            ".hidden",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let card = d.join("card.md");
        std::fs::write(&card, "card").unwrap();
        let generated = vec![("README.md".to_string(), card.clone())];
        let names = |s: Vec<Selected>| s.into_iter().map(|s| s.path_in_repo).collect::<Vec<_>>();

        let plain = select(d, &generated, &Filters::default()).unwrap();
        let readme = plain
            .iter()
            .find(|s| s.path_in_repo == "README.md")
            .unwrap();
        assert!(readme.generated && readme.source == card);
        assert_eq!(
            names(plain),
            [
                "README.md",
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ]
        );

        let filters = Filters {
            include: vec!["ckpt.json".into()],
            exclude: vec!["README.md".into()],
        };
        assert_eq!(
            names(select(d, &generated, &filters).unwrap()),
            [
                "ckpt.json",
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ]
        );
        let no_weights = Filters {
            include: vec![],
            exclude: vec!["*.safetensors".into()],
        };
        let err = select(d, &generated, &no_weights).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("*.safetensors"),
            "{err}"
        );

        let all_out = Filters {
            include: vec![],
            exclude: vec!["*".into()],
        };
        assert!(select(d, &generated, &all_out).is_err());
        let bad = Filters {
            include: vec!["[".into()],
            exclude: vec![],
        };
        assert!(select(d, &generated, &bad)
            .unwrap_err()
            .to_string()
            .contains("invalid glob"));
    }
}
