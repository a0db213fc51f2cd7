//! Checkpoints on disk: discovery, the `ckpt.json` sidecar, weights (safetensors, or
//! PyTorch `.bin` from older checkpoints) and content fingerprints (DESIGN.md section 3).
//!
//! A checkpoint is a directory holding `config.json` and weights. Discovery
//! walks any path and finds them all, in run order:
//!
//! ```no_run
//! for ckpt in ckpt::checkpoint::discover(&["runs/wso".into()])? {
//!     println!("{} step {:?}", ckpt.dir.display(), ckpt.step);
//! }
//! # Ok::<(), ckpt::Error>(())
//! ```

mod fingerprint;
mod meta;
mod torch_bin;
mod weights;

pub use fingerprint::{cache_dir, fingerprint, hash_weights};
pub use meta::{CheckpointMeta, MergeInfo, MergeSource, ParentRef, ScheduleInfo, Stage, META_FILE};
pub use weights::{
    has_weights, is_model_safetensors, is_model_safetensors_name, non_finite, shard_names,
    weight_index, weight_paths, write_safetensors, write_safetensors_with_metadata, StoredTensor,
    WeightFiles, BIN_INDEX_FILE, BIN_SINGLE_FILE, INDEX_FILE, SINGLE_FILE, WEIGHT_FILES,
};

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig, WeightLayout};
use candle_core::{DType, Device, Tensor};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// File name of the model configuration.
pub(crate) const CONFIG_FILE: &str = "config.json";

/// A checkpoint directory and what its sidecar or name says about it.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Training step: from `ckpt.json`, else from the directory name.
    pub step: Option<u64>,
    pub(crate) meta: Option<CheckpointMeta>,
    /// What the user named, when that is not the directory (a Hub revision).
    pub(crate) origin: Option<Origin>,
}

/// A checkpoint named by something other than its directory: a Hub revision, whose
/// directory is a snapshot in the Hugging Face cache.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    /// Shown and stored as the checkpoint's path: `hf://org/name@revision`.
    pub(crate) name: String,
    /// The run the checkpoint belongs to: the repository's name.
    pub(crate) run: String,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir` (reads the sidecar; weights are opened on demand).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(CONFIG_FILE).is_file() {
            let what = if dir.exists() {
                "no config.json"
            } else {
                "no such directory"
            };
            return Err(Error::bad_file(dir, format!("not a checkpoint: {what}")));
        }
        let meta = CheckpointMeta::read(dir)?;
        let step = meta.as_ref().map(|m| m.step).or_else(|| {
            dir.file_name()
                .and_then(|n| step_from_name(&n.to_string_lossy()))
        });
        Ok(Self {
            dir: dir.to_path_buf(),
            step,
            meta,
            origin: None,
        })
    }

    /// How the checkpoint is shown and stored: its origin's name, else its directory.
    pub fn name(&self) -> String {
        match &self.origin {
            Some(o) => o.name.clone(),
            None => self.dir.display().to_string(),
        }
    }

    /// The run it belongs to: its origin's, else the name of the directory holding it.
    pub fn run(&self) -> String {
        match &self.origin {
            Some(o) => o.run.clone(),
            None => self
                .dir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// The resolved `config.json`.
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_file(&self.dir.join(CONFIG_FILE))
    }

    /// The memory-mapped weight files.
    pub fn weights(&self) -> Result<WeightFiles> {
        WeightFiles::open(&self.dir)
    }

    /// Content fingerprint of the weights (cached).
    pub fn fingerprint(&self) -> Result<String> {
        fingerprint(&self.dir, &self.weights()?)
    }

    /// Loads the model onto `device` in `dtype`.
    pub fn load_model(&self, device: &Device, dtype: DType) -> Result<Model> {
        let cfg = self.config()?;
        self.check_memory(&cfg, dtype.size_in_bytes() as u64, device)?;
        let weights = self.weights()?;
        // Names the tensor and the config keys a contradiction is about.
        let names = validate_shapes(&cfg, &weights)?;
        if device.is_cpu() {
            weights.preload(&names, dtype);
        }
        let files: Vec<String> = weights
            .paths()
            .into_iter()
            .chain([weights.origin()])
            .map(|p| p.display().to_string())
            .collect();
        let vb = weights.var_builder(dtype, device);
        Model::load(&cfg, vb).map_err(|e| {
            let msg = crate::error::candle_message(&e);
            // Errors from our weight backend already name the file.
            if files.iter().any(|f| msg.contains(f.as_str())) {
                Error::Invalid(msg)
            } else {
                Error::bad_file(&self.dir, format!("cannot build the model: {msg}"))
            }
        })
    }

    /// Loads the model for inference only (eval, score, serve): on a CPU with the packed
    /// kernels its weights are held once, packed, rather than as loaded and packed
    /// ([`Model::keep_packed_weights_only`]).
    pub fn load_for_inference(&self, device: &Device, dtype: DType) -> Result<Model> {
        let mut model = self.load_model(device, dtype)?;
        model.keep_packed_weights_only();
        Ok(model)
    }

    /// Refuses a model whose parameters, `bytes_per_parameter` each, need more memory
    /// than this machine has available, before anything is allocated. Only on the CPU:
    /// a GPU's own allocator fails at once, with its own message.
    pub(crate) fn check_memory(
        &self,
        cfg: &ModelConfig,
        bytes_per_parameter: u64,
        device: &Device,
    ) -> Result<()> {
        if !device.is_cpu() {
            return Ok(());
        }
        let parameters = cfg.num_parameters() as u64;
        crate::memory::check_fits(
            &format!(
                "{}: a model of {parameters} parameters",
                self.dir.join(CONFIG_FILE).display()
            ),
            parameters.saturating_mul(bytes_per_parameter),
        )
    }

    /// The stage recorded in the sidecar, if any.
    pub(crate) fn stage(&self) -> Option<Stage> {
        self.meta.as_ref().and_then(|m| m.stage)
    }

    /// The schedule kind recorded in the sidecar, if any.
    pub(crate) fn schedule_kind(&self) -> Option<&str> {
        self.meta
            .as_ref()?
            .schedule
            .as_ref()
            .map(|s| s.kind.as_str())
    }
}

/// Writes a checkpoint: `config.json`, `model.safetensors` and, when given, `ckpt.json`;
/// each file atomically.
pub fn write_checkpoint(
    dir: &Path,
    cfg: &ModelConfig,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    meta: Option<&CheckpointMeta>,
) -> Result<()> {
    write_safetensors(&dir.join(SINGLE_FILE), tensors)?;
    crate::atomic_file::write_json(&dir.join(CONFIG_FILE), &cfg.to_json())?;
    if let Some(meta) = meta {
        meta.write(dir)?;
    }
    Ok(())
}

/// True when `dir` holds `config.json` and weights (safetensors or `.bin`).
pub fn is_checkpoint_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() && has_weights(dir)
}

static STEP_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:step-?|checkpoint-|global_step|iter_)(\d+)$").expect("valid regex")
});

/// The step encoded in a checkpoint directory name: `step-N`, `stepN`, `checkpoint-N`,
/// `global_stepN`, `iter_N`.
pub fn step_from_name(name: &str) -> Option<u64> {
    STEP_NAME.captures(name)?.get(1)?.as_str().parse().ok()
}

/// Every checkpoint under `paths` (directories are walked; a checkpoint's own
/// subdirectories are not), sorted by run directory, then step, then path.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Checkpoint>> {
    let mut found = Vec::new();
    for root in paths {
        if !root.exists() {
            return Err(Error::bad_file(root, "no such file or directory"));
        }
        let root = if root.is_file() {
            checkpoint_of_file(root)?
        } else {
            root.clone()
        };
        // A directory named directly that has a config but no weights is a broken
        // checkpoint, not something to skip silently.
        if root.join(CONFIG_FILE).is_file() && !is_checkpoint_dir(&root) {
            return Err(missing_weights(&root));
        }
        let mut walk = walkdir::WalkDir::new(&root).follow_links(true).into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&root).to_path_buf();
                Error::bad_file(path, e.to_string())
            })?;
            if !entry.file_type().is_dir() {
                continue;
            }
            let hidden = entry.depth() > 0 && entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                walk.skip_current_dir();
                continue;
            }
            if is_checkpoint_dir(entry.path()) {
                found.push(Checkpoint::open(entry.path())?);
                walk.skip_current_dir();
            }
        }
    }
    found.sort_by(|a, b| (a.dir.parent(), a.step, &a.dir).cmp(&(b.dir.parent(), b.step, &b.dir)));
    found.dedup_by(|a, b| a.dir == b.dir);
    Ok(found)
}

/// The checkpoint directory a file named on the command line stands for: a file inside
/// a checkpoint (config.json, model.safetensors, pytorch_model.bin) means its directory. Any other file is
/// an error, not a reason to walk its parent, which may hold unrelated checkpoints.
fn checkpoint_of_file(file: &Path) -> Result<PathBuf> {
    let dir = crate::error::parent_dir(file).to_path_buf();
    if dir.join(CONFIG_FILE).is_file() {
        Ok(dir)
    } else {
        Err(Error::bad_file(
            file,
            "is a file, not a checkpoint directory (config.json + weights) or a directory of them",
        ))
    }
}

fn missing_weights(dir: &Path) -> Error {
    Error::bad_file(dir, format!("no {WEIGHT_FILES} weights"))
}

/// Reads the parameter the architecture calls `name` (see [`crate::model::parameter_shapes`])
/// wherever the checkpoint stores it: a multimodal checkpoint nests the language model.
pub(crate) fn load_parameter(
    cfg: &ModelConfig,
    weights: &WeightFiles,
    name: &str,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let stored = weights.tensors();
    let layout = WeightLayout::detect(cfg.arch, |n| stored.contains_key(n));
    weights.load(&layout.stored(name), dtype, dev)
}

/// Checks that the stored tensors are the ones `config.json` implies: every parameter
/// present with its shape. Extra tensors (a stale tied `lm_head`, rotary buffers) are
/// allowed, as transformers allows them. Returns the stored names of the parameters.
pub fn validate_shapes(cfg: &ModelConfig, weights: &WeightFiles) -> Result<Vec<String>> {
    let stored = weights.tensors();
    let layout = WeightLayout::detect(cfg.arch, |n| stored.contains_key(n));
    let mut names = Vec::new();
    for (name, shape) in crate::model::parameter_shapes(cfg) {
        let name = layout.stored(&name);
        match stored.get(&name) {
            None => {
                return Err(Error::bad_file(
                    weights.origin(),
                    format!(
                        "missing tensor {name:?}, which config.json implies through {}",
                        crate::model::keys_behind(cfg, &name)
                    ),
                ))
            }
            Some(t) if t.shape != shape => {
                return Err(Error::bad_file(
                    weights.file_holding(&name).unwrap_or(weights.origin()),
                    format!(
                "tensor {name:?} has shape {:?} but config.json implies {shape:?} through {}",
                t.shape,
                crate::model::keys_behind(cfg, &name)
            ),
                ))
            }
            Some(_) => names.push(name),
        }
    }
    Ok(names)
}

/// Loads the first checkpoint found under `path` when it holds exactly one.
pub(crate) fn open_single(path: &Path) -> Result<Checkpoint> {
    if is_checkpoint_dir(path) {
        return Checkpoint::open(path);
    }
    let mut found = discover(&[path.to_path_buf()])?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::bad_file(
            path,
            "no checkpoint found (config.json + *.safetensors or pytorch_model.bin)",
        )),
        n => Err(Error::bad_file(
            path,
            format!("holds {n} checkpoints; name one of them"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_the_hugging_face_safetensors_only() {
        assert!(is_model_safetensors_name("model.safetensors"));
        assert!(is_model_safetensors_name(
            "model-00001-of-00002.safetensors"
        ));
        assert!(!is_model_safetensors_name("optimizer.safetensors"));
        assert!(!is_model_safetensors_name("consolidated.safetensors"));
        assert!(!is_model_safetensors_name("model.bin"));
    }

    #[test]
    fn steps_come_from_the_usual_names() {
        assert_eq!(step_from_name("step-0001200"), Some(1200));
        assert_eq!(step_from_name("step300"), Some(300));
        assert_eq!(step_from_name("checkpoint-500"), Some(500));
        assert_eq!(step_from_name("global_step42"), Some(42));
        assert_eq!(step_from_name("iter_0000100"), Some(100));
        assert_eq!(step_from_name("final"), None);
        assert_eq!(step_from_name("step-x"), None);
    }

    fn fake_checkpoint(dir: &Path, meta_step: Option<u64>) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), "{}").unwrap();
        std::fs::write(dir.join(SINGLE_FILE), "").unwrap();
        if let Some(step) = meta_step {
            CheckpointMeta::new(step).write(dir).unwrap();
        }
    }

    #[test]
    fn discovery_orders_by_run_and_step_and_skips_non_checkpoints() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fake_checkpoint(&r.join("wso/step-1000"), None);
        fake_checkpoint(&r.join("wso/step-200"), None);
        fake_checkpoint(&r.join("wso/final"), Some(1500));
        fake_checkpoint(&r.join("cosine/checkpoint-7"), None);
        // Not checkpoints: config without weights, weights without config, hidden dirs.
        std::fs::create_dir_all(r.join("wso/notes")).unwrap();
        std::fs::write(r.join("wso/notes/config.json"), "{}").unwrap();
        fake_checkpoint(&r.join(".trash/step-1"), None);
        // A checkpoint's subdirectories are not searched.
        fake_checkpoint(&r.join("wso/step-200/inner"), None);

        let found = discover(&[r.to_path_buf()]).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|c| c.dir.strip_prefix(r).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "cosine/checkpoint-7",
                "wso/step-200",
                "wso/step-1000",
                "wso/final"
            ]
        );
        assert_eq!(found[3].step, Some(1500));

        let err = discover(&[r.join("missing")]).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("no such"), "{err}");
    }
}
