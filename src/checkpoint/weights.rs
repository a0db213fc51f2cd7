//! The weights of a checkpoint: safetensors (one file or an index with shards),
//! memory-mapped, or PyTorch `.bin` files (one `pytorch_model.bin` or an index with
//! shards), read without running their pickle (see `torch_bin`).
//!
//! Every tensor ends up as little-endian bytes with a safetensors dtype and shape, so
//! what reads weights (loading, fingerprints, merges) sees one format. Implements
//! candle's [`SimpleBackend`] so the model loads through a `VarBuilder`, with errors
//! that name the file and the tensor (a missing tensor, a wrong shape).

use super::torch_bin;
use crate::error::{Error, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the single-file weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the index of sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the single-file PyTorch weights (older checkpoints).
pub const BIN_SINGLE_FILE: &str = "pytorch_model.bin";
/// Name of the index of sharded PyTorch weights (`pytorch_model-00001-of-00002.bin`...).
pub const BIN_INDEX_FILE: &str = "pytorch_model.bin.index.json";

/// Where a tensor's little-endian bytes are.
#[derive(Debug)]
pub(super) enum Bytes {
    /// A range of the file's map: every safetensors tensor, and `.bin` tensors stored
    /// contiguously (nearly all of them).
    Mapped(Range<usize>),
    /// A contiguous copy made when the file was opened: `.bin` tensors stored as
    /// strided views (transposed, every other column...).
    Owned(Vec<u8>),
}

/// One stored tensor: dtype, shape and bytes.
#[derive(Debug)]
pub(super) struct Entry {
    pub(crate) dtype: safetensors::Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Bytes,
}

/// One memory-mapped weight file with its tensors.
struct WeightFile {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, Entry>,
}

impl WeightFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us would fault, which
        // is the same contract every safetensors loader (candle, transformers) accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let tensors = if is_bin(path) {
            torch_bin::read(path, &mmap)?
        } else {
            safetensors_entries(path, &mmap)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            tensors,
        })
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.tensors.get(name)
    }

    fn bytes<'a>(&'a self, entry: &'a Entry) -> &'a [u8] {
        match &entry.bytes {
            Bytes::Mapped(range) => &self.mmap[range.clone()],
            Bytes::Owned(bytes) => bytes,
        }
    }

    fn view(&self, name: &str) -> Result<TensorView<'_>> {
        let entry = self
            .entry(name)
            .ok_or_else(|| Error::bad_file(&self.path, format!("no tensor {name:?}")))?;
        TensorView::new(entry.dtype, entry.shape.clone(), self.bytes(entry))
            .map_err(|e| Error::bad_file(&self.path, format!("tensor {name:?}: {e}")))
    }
}

/// True for a PyTorch weight file (`pytorch_model.bin`, its shards).
fn is_bin(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "bin")
}

/// The tensors of a mapped safetensors file, as ranges of the map.
fn safetensors_entries(path: &Path, mmap: &[u8]) -> Result<HashMap<String, Entry>> {
    let (header_len, metadata) = SafeTensors::read_metadata(mmap).map_err(|e| {
        Error::bad_file(
            path,
            format!("not a valid safetensors file ({e}); truncated or corrupt?"),
        )
    })?;
    // read_metadata checked that the offsets tile the data exactly up to the file's end.
    let start = 8 + header_len;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (begin, end) = info.data_offsets;
            let entry = Entry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                bytes: Bytes::Mapped(start + begin..start + end),
            };
            (name, entry)
        })
        .collect())
}

/// A tensor's description as stored: dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    pub dtype: safetensors::Dtype,
    pub(crate) shape: Vec<usize>,
}

/// All weight files of a checkpoint, with an index from tensor name to file.
pub struct WeightFiles {
    files: Vec<WeightFile>,
    by_name: HashMap<String, usize>,
    /// The file that names the weights: the index when sharded, else the single file.
    origin: PathBuf,
    /// Tensors [`Self::preload`] loaded ahead of the model's requests, by name, each
    /// with the dtype it was loaded as (or the error loading it met).
    preloaded: Mutex<HashMap<String, (DType, Result<Tensor>)>>,
}

impl WeightFiles {
    /// Opens the weights in `dir`, found as [`weight_paths`] finds them.
    pub fn open(dir: &Path) -> Result<Self> {
        let found = find_weights(dir)?;
        let origin = found.index.unwrap_or_else(|| found.files[0].clone());
        let files = found
            .files
            .iter()
            .map(|p| WeightFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mut by_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.tensors.keys() {
                if let Some(prev) = by_name.insert(name.clone(), i) {
                    return Err(Error::bad_file(
                        &f.path,
                        format!("tensor {name:?} is also in {}", files[prev].path.display()),
                    ));
                }
            }
        }
        Ok(Self {
            files,
            by_name,
            origin,
            preloaded: Mutex::default(),
        })
    }

    /// Loads tensors `names` onto the CPU as `dtype`, several at once, for the model's
    /// requests to take (through the `VarBuilder`) instead of loading each in turn.
    ///
    /// Why: a load is mostly the first touch of fresh memory (the kernel zeroing each
    /// page) plus a copy and a scan for non-finite values, all per tensor, so threads
    /// share it. Errors are kept, and returned when the tensor is asked for, as a
    /// one-at-a-time load returns them.
    pub(crate) fn preload(&self, names: &[String], dtype: DType) {
        use rayon::prelude::*;
        let loaded: Vec<_> = names
            .par_iter()
            .map(|name| (name.clone(), (dtype, self.load(name, dtype, &Device::Cpu))))
            .collect();
        self.preloaded_tensors().extend(loaded);
    }

    fn preloaded_tensors(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (DType, Result<Tensor>)>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.preloaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tensor `name` as [`Self::preload`] left it, if it was loaded as `dtype` for the
    /// CPU; taken, so that a second request loads it again as before.
    fn take_preloaded(&self, name: &str, dtype: DType, dev: &Device) -> Option<Result<Tensor>> {
        if !dev.is_cpu() {
            return None;
        }
        let mut preloaded = self.preloaded_tensors();
        match preloaded.get(name) {
            Some((loaded_as, _)) if *loaded_as == dtype => preloaded.remove(name).map(|(_, t)| t),
            _ => None,
        }
    }

    /// The index file of sharded weights, else the single weight file.
    pub(crate) fn origin(&self) -> &Path {
        &self.origin
    }

    /// The file holding tensor `name`.
    pub(crate) fn file_holding(&self, name: &str) -> Option<&Path> {
        Some(self.files[*self.by_name.get(name)?].path.as_path())
    }

    /// The files backing these weights.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Every tensor, sorted by name, with its dtype and shape.
    pub fn tensors(&self) -> BTreeMap<String, StoredTensor> {
        self.by_name
            .iter()
            .map(|(name, &i)| {
                let entry = self.files[i].entry(name).expect("indexed tensor exists");
                (
                    name.clone(),
                    StoredTensor {
                        dtype: entry.dtype,
                        shape: entry.shape.clone(),
                    },
                )
            })
            .collect()
    }

    /// The raw little-endian bytes of a tensor, straight from the map (or, for a
    /// strided `.bin` view, from the contiguous copy made at open time).
    pub fn raw_bytes(&self, name: &str) -> Option<&[u8]> {
        let file = &self.files[*self.by_name.get(name)?];
        Some(file.bytes(file.entry(name)?))
    }

    /// Drops bytes `range` of tensor `name` from this process's resident memory, after
    /// they have been read: a pass over whole checkpoints (`ckpt merge`) then keeps only
    /// the part in use resident instead of every page it touched. The bytes stay
    /// readable; the next access maps them in again from the page cache or the file.
    pub fn release(&self, name: &str, range: std::ops::Range<usize>) {
        let Some(file) = self.by_name.get(name).map(|&i| &self.files[i]) else {
            return;
        };
        // A copy made at open time is this process's own memory: nothing to drop.
        let Some(Bytes::Mapped(mapped)) = file.entry(name).map(|e| &e.bytes) else {
            return;
        };
        let size = mapped.len();
        let (start, end) = (range.start.min(size), range.end.min(size));
        if start >= end {
            return;
        }
        #[cfg(unix)]
        {
            let offset = mapped.start + start;
            // SAFETY: the map is shared and read-only, so MADV_DONTNEED only drops this
            // process's page-table entries: a later read faults the file's unchanged
            // pages back in, and slices borrowed from the map stay valid. Failure only
            // means the pages stay resident.
            let _ = unsafe {
                file.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    offset,
                    end - start,
                )
            };
        }
    }

    /// Loads one tensor onto `dev` as `dtype`. A NaN or an infinity in it is an error:
    /// a model with one computes NaN for everything, which would pass for a result.
    pub fn load(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let file = self.file_of(name)?;
        let view = file.view(name)?;
        if let Some(bad) = non_finite(view.dtype(), view.data()).filter(|&n| n > 0) {
            return Err(Error::bad_file(
                &file.path,
                format!(
                    "tensor {name:?} holds {bad} non-finite values (NaN or infinity) out of {}",
                    view.shape().iter().product::<usize>()
                ),
            ));
        }
        let tensor = view
            .load(dev)
            .map_err(|e| Error::bad_file(&file.path, format!("tensor {name:?}: {e}")))?;
        Ok(tensor.to_dtype(dtype)?)
    }

    fn file_of(&self, name: &str) -> Result<&WeightFile> {
        let i = self
            .by_name
            .get(name)
            .ok_or_else(|| Error::bad_file(&self.origin, format!("missing tensor {name:?}")))?;
        Ok(&self.files[*i])
    }

    /// A `VarBuilder` over these weights, converting to `dtype` on `dev`.
    pub(crate) fn var_builder(self, dtype: DType, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, dev.clone())
    }
}

impl SimpleBackend for WeightFiles {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        // Plain `Msg` errors: candle's constructors attach a backtrace when
        // RUST_BACKTRACE is set, which would spill into the one-line error.
        let file = self.file_of(name).map_err(to_candle)?;
        let entry = file.entry(name).expect("indexed tensor exists");
        if entry.shape != shape.dims() {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor {name:?} has shape {:?} but config.json implies {:?}",
                file.path.display(),
                entry.shape,
                shape.dims()
            )));
        }
        match self.take_preloaded(name, dtype, dev) {
            Some(tensor) => tensor,
            None => self.load(name, dtype, dev),
        }
        .map_err(to_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev).map_err(to_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

fn to_candle(e: Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Counts the non-finite values (NaN, infinities) of a tensor's little-endian bytes;
/// `None` for integer dtypes. One pass over the bytes, far cheaper than the load.
pub fn non_finite(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<usize> {
    use safetensors::Dtype;
    let count = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            .count(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .filter(|b| !f64::from_le_bytes(b[..8].try_into().expect("8 bytes")).is_finite())
            .count(),
        // Exponent bits all ones: inf or NaN.
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80)
            .count(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00)
            .count(),
        _ => return None,
    };
    Some(count)
}

/// What [`weight_paths`] looks for, for error messages.
pub const WEIGHT_FILES: &str =
    "model.safetensors, model.safetensors.index.json, other *.safetensors, \
     pytorch_model.bin or pytorch_model.bin.index.json";

/// The weights of a directory: the index naming the shards, if any, and the files.
struct Found {
    index: Option<PathBuf>,
    files: Vec<PathBuf>,
}

/// The weight files of `dir`, in a stable order. Safetensors come first, as in
/// transformers: `model.safetensors.index.json` and its shards, else
/// `model.safetensors`, else every `*.safetensors` but the optimizer's; only a
/// directory without any is read from `pytorch_model.bin.index.json` and its shards,
/// else from `pytorch_model.bin`.
pub fn weight_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(find_weights(dir)?.files)
}

/// The index file naming the shards [`weight_paths`] returns, when they are shards.
pub fn weight_index(dir: &Path) -> Option<PathBuf> {
    find_weights(dir).ok()?.index
}

/// True when `dir` holds weights in a form [`weight_paths`] reads (without checking
/// that they are valid).
pub fn has_weights(dir: &Path) -> bool {
    [SINGLE_FILE, INDEX_FILE, BIN_SINGLE_FILE, BIN_INDEX_FILE]
        .iter()
        .any(|name| dir.join(name).is_file())
        || safetensors_in(dir).is_ok_and(|found| !found.is_empty())
}

fn find_weights(dir: &Path) -> Result<Found> {
    let indexed = |index: PathBuf| -> Result<Found> {
        Ok(Found {
            files: shard_paths(&index)?,
            index: Some(index),
        })
    };
    let single = |file: PathBuf| Found {
        index: None,
        files: vec![file],
    };
    if dir.join(INDEX_FILE).is_file() {
        return indexed(dir.join(INDEX_FILE));
    }
    if dir.join(SINGLE_FILE).is_file() {
        return Ok(single(dir.join(SINGLE_FILE)));
    }
    let others = safetensors_in(dir)?;
    if !others.is_empty() {
        return Ok(Found {
            index: None,
            files: others,
        });
    }
    if dir.join(BIN_INDEX_FILE).is_file() {
        return indexed(dir.join(BIN_INDEX_FILE));
    }
    if dir.join(BIN_SINGLE_FILE).is_file() {
        return Ok(single(dir.join(BIN_SINGLE_FILE)));
    }
    Err(Error::bad_file(dir, format!("no {WEIGHT_FILES} weights")))
}

/// The model `*.safetensors` files of `dir`, sorted.
fn safetensors_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_model_safetensors(p))
        .collect();
    found.sort();
    Ok(found)
}

/// True for a `*.safetensors` file that holds model weights (not optimizer state).
pub fn is_model_safetensors(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    is_model_safetensors_name(name) && path.is_file()
}

/// True for the name of a `*.safetensors` file of Hugging Face model weights: not an
/// optimizer state, and not Mistral's `consolidated.safetensors` (its own tensor
/// names), which Mistral's repositories ship beside the Hugging Face weights.
pub fn is_model_safetensors_name(name: &str) -> bool {
    name.ends_with(".safetensors")
        && !name.starts_with("optimizer")
        && !name.starts_with("consolidated")
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The shard file names a weight index (`*.index.json`) names, sorted, each once.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let parsed: ShardIndex = crate::error::read_json(index)?;
    let mut shards: Vec<String> = parsed.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(Error::bad_file(index, "weight_map is empty"));
    }
    Ok(shards)
}

fn shard_paths(index: &Path) -> Result<Vec<PathBuf>> {
    let dir = crate::error::parent_dir(index);
    shard_names(index)?
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::bad_file(index, format!("shard {name} is missing")))
            }
        })
        .collect()
}

/// Writes `tensors` as one safetensors file, atomically (temporary file + rename).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_safetensors_with_metadata(path, tensors, HashMap::new())
}

/// [`write_safetensors`] with `__metadata__` entries (Hugging Face writes
/// `{"format": "pt"}`; the optimizer state records its step).
pub fn write_safetensors_with_metadata(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    metadata
        .entry("format".to_string())
        .or_insert_with(|| "pt".to_string());
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ckpt-tmp-")
        .suffix(".safetensors")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    // Streams tensor by tensor: no second copy of the weights in memory.
    safetensors::serialize_to_file(sorted, Some(metadata), tmp.path())
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, content: &str) {
        std::fs::write(dir.join(name), content).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        weight_paths(dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn safetensors_win_then_the_bin_index_then_the_single_bin() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let err = weight_paths(d).unwrap_err().to_string();
        assert!(err.contains("no model.safetensors") && err.contains("pytorch_model.bin"));
        assert!(!has_weights(d));

        // Not weights: other .bin files (training arguments, token shards).
        touch(d, "training_args.bin", "x");
        assert!(!has_weights(d));
        touch(d, BIN_SINGLE_FILE, "x");
        assert!(has_weights(d));
        assert_eq!(names(d), [BIN_SINGLE_FILE]);
        assert_eq!(weight_index(d), None);

        let index = r#"{"weight_map": {"b": "pytorch_model-2.bin", "a": "pytorch_model-1.bin"}}"#;
        touch(d, BIN_INDEX_FILE, index);
        let err = weight_paths(d).unwrap_err().to_string();
        assert!(
            err.contains(BIN_INDEX_FILE) && err.contains("shard pytorch_model-1.bin is missing")
        );
        touch(d, "pytorch_model-1.bin", "x");
        touch(d, "pytorch_model-2.bin", "x");
        assert_eq!(names(d), ["pytorch_model-1.bin", "pytorch_model-2.bin"]);
        assert_eq!(weight_index(d), Some(d.join(BIN_INDEX_FILE)));

        touch(d, "optimizer.safetensors", "x");
        assert_eq!(names(d), ["pytorch_model-1.bin", "pytorch_model-2.bin"]);
        touch(d, "weights.safetensors", "x");
        assert_eq!(names(d), ["weights.safetensors"]);
        assert_eq!(weight_index(d), None);
        touch(d, SINGLE_FILE, "x");
        assert_eq!(names(d), [SINGLE_FILE]);
        touch(
            d,
            INDEX_FILE,
            r#"{"weight_map": {"a": "weights.safetensors"}}"#,
        );
        assert_eq!(names(d), ["weights.safetensors"]);
        assert_eq!(weight_index(d), Some(d.join(INDEX_FILE)));
    }

    /// Preloaded tensors are what one-at-a-time loads give, each handed out once (a
    /// second request, or one in another dtype, loads again); a preloaded tensor's
    /// error waits until the tensor is asked for.
    #[test]
    fn preloaded_tensors_equal_loads_and_keep_their_errors_until_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let bad = Tensor::new(&[1f32, f32::NAN], &dev).unwrap();
        let tensors = HashMap::from([("a".to_string(), a.clone()), ("bad".to_string(), bad)]);
        write_safetensors(&tmp.path().join(SINGLE_FILE), &tensors).unwrap();
        let weights = WeightFiles::open(tmp.path()).unwrap();
        let names = ["a".to_string(), "bad".to_string()];
        weights.preload(&names, DType::F32);

        let get = |name: &str, dtype: DType| {
            SimpleBackend::get(&weights, (3, 4).into(), name, Init::Const(0.), dtype, &dev)
        };
        let same = |t: Tensor| {
            let diff = (t.to_dtype(DType::F32).unwrap() - &a)
                .unwrap()
                .abs()
                .unwrap();
            diff.max_all().unwrap().to_scalar::<f32>().unwrap() == 0.
        };
        assert_eq!(weights.preloaded_tensors().len(), 2);
        assert!(same(get("a", DType::F32).unwrap()));
        assert!(weights.preloaded_tensors().get("a").is_none(), "taken");
        assert!(same(get("a", DType::F32).unwrap()), "loaded again");
        weights.preload(&names[..1], DType::BF16);
        let as_f32 = get("a", DType::F32).unwrap();
        assert!(
            as_f32.dtype() == DType::F32 && same(as_f32),
            "another dtype loads again"
        );
        let left = weights
            .preloaded_tensors()
            .get("a")
            .map(|(dtype, _)| *dtype);
        assert_eq!(left, Some(DType::BF16));
        let as_bf16 = get("a", DType::BF16).unwrap();
        assert!(as_bf16.dtype() == DType::BF16 && same(as_bf16));

        let err = SimpleBackend::get(
            &weights,
            (2,).into(),
            "bad",
            Init::Const(0.),
            DType::F32,
            &dev,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"bad\" holds 1 non-finite"), "{err}");
    }
}
