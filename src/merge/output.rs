//! The merged checkpoint's directory: assembled in a hidden sibling directory and
//! renamed into place, so a failed merge leaves no half-written checkpoint and an
//! output replaced with `force` stays intact until its successor is complete.

use super::sources::Source;
use crate::checkpoint::CONFIG_FILE;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Files copied from the newest source when it has them: the tokenizer, generation
/// defaults and chat template, so the merged checkpoint loads like its sources.
pub use crate::tokenizer::files::SIDE_FILES;

/// Refuses an output that exists (unless `force`) or that would replace a source.
pub fn check_target(out: &Path, sources: &[Source], force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !force {
        return Err(Error::bad_file(
            out,
            "already exists; refusing to overwrite it (--force replaces it)",
        ));
    }
    let out_abs = std::fs::canonicalize(out).map_err(|e| Error::io(out, e))?;
    for source in sources {
        let dir = &source.checkpoint.dir;
        if std::fs::canonicalize(dir).is_ok_and(|d| d.starts_with(&out_abs)) {
            return Err(Error::bad_file(
                out,
                format!(
                    "holds the source checkpoint {}: replacing it would delete a source",
                    dir.display()
                ),
            ));
        }
    }
    if !out.is_dir() {
        return Err(Error::bad_file(out, "exists and is not a directory"));
    }
    Ok(())
}

/// Builds the checkpoint in a staging directory with `fill`, then moves it to `out`
/// (replacing an existing `out`, which [`check_target`] allowed).
pub fn write_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::bad_file(out, "not a directory name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!(".{name}.merging-{}", std::process::id()));
    remove_dir_if_present(&staging)?;
    std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let written = fill(&staging).and_then(|()| replace_dir(&staging, out));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

/// Copies `config.json` and the [`SIDE_FILES`] present in `from` into `to`.
pub fn copy_side_files(from: &Path, to: &Path) -> Result<()> {
    for name in std::iter::once(CONFIG_FILE).chain(SIDE_FILES) {
        let src = from.join(name);
        if src.is_file() {
            let bytes = crate::error::read_file(&src)?;
            crate::atomic_file::write_bytes(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Moves `staging` to `target`; an existing `target` is moved aside first and deleted
/// only once the new one is in place.
fn replace_dir(staging: &Path, target: &Path) -> Result<()> {
    if !target.exists() {
        return std::fs::rename(staging, target).map_err(|e| Error::io(target, e));
    }
    let old = staging.with_extension("old");
    remove_dir_if_present(&old)?;
    std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    if let Err(e) = std::fs::rename(staging, target) {
        // Put the previous output back rather than leave nothing.
        let _ = std::fs::rename(&old, target);
        return Err(Error::io(target, e));
    }
    remove_dir_if_present(&old)
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_previous_output() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("merged");
        write_dir(&out, |d| {
            crate::atomic_file::write_bytes(&d.join("f"), b"one")
        })
        .unwrap();
        let err = write_dir(&out, |d| {
            crate::atomic_file::write_bytes(&d.join("f"), b"two")?;
            Err(Error::Invalid("disk full".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"one");
        write_dir(&out, |d| {
            crate::atomic_file::write_bytes(&d.join("f"), b"three")
        })
        .unwrap();
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no staging or old directory left");
    }
}
