//! Safetensors weights of a checkpoint: one file or an index with shards, memory-mapped.
//!
//! Implements candle's [`SimpleBackend`] so the model loads through a `VarBuilder`,
//! with errors that name the file and the tensor (a missing tensor, a wrong shape).

use crate::error::{Error, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Name of the single-file weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the index of sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One memory-mapped safetensors file with its parsed header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us would fault, which
        // is the same contract every safetensors loader (candle, transformers) accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            Error::bad_file(
                path,
                format!("not a valid safetensors file ({e}); truncated or corrupt?"),
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            header_len,
            metadata,
        })
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.metadata.info(name)
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = 8 + self.header_len;
        &self.mmap[start + info.data_offsets.0..start + info.data_offsets.1]
    }

    fn view(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::bad_file(&self.path, format!("no tensor {name:?}")))?;
        TensorView::new(info.dtype, info.shape.clone(), self.bytes(info))
            .map_err(|e| Error::bad_file(&self.path, format!("tensor {name:?}: {e}")))
    }
}

/// A tensor's description as stored: dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
}

/// All weight files of a checkpoint, with an index from tensor name to file.
pub struct WeightFiles {
    files: Vec<MappedFile>,
    by_name: HashMap<String, usize>,
    /// The file that names the weights: the index when sharded, else the single file.
    origin: PathBuf,
}

impl WeightFiles {
    /// Opens the weights in `dir`: `model.safetensors.index.json` and its shards if
    /// present, else `model.safetensors`, else every `*.safetensors` but the optimizer's.
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = weight_paths(dir)?;
        let index = dir.join(INDEX_FILE);
        let origin = if index.is_file() {
            index
        } else {
            paths[0].clone()
        };
        let files = paths
            .iter()
            .map(|p| MappedFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mut by_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.metadata.tensors().keys() {
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
        })
    }

    /// The index file of sharded weights, else the single weight file.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The file holding tensor `name`.
    pub fn file_holding(&self, name: &str) -> Option<&Path> {
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
                let info = self.files[i].info(name).expect("indexed tensor exists");
                (
                    name.clone(),
                    StoredTensor {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                    },
                )
            })
            .collect()
    }

    /// The raw little-endian bytes of a tensor, straight from the map.
    pub fn raw_bytes(&self, name: &str) -> Option<&[u8]> {
        let file = &self.files[*self.by_name.get(name)?];
        Some(file.bytes(file.info(name)?))
    }

    /// Drops bytes `range` of tensor `name` from this process's resident memory, after
    /// they have been read: a pass over whole checkpoints (`ckpt merge`) then keeps only
    /// the part in use resident instead of every page it touched. The bytes stay
    /// readable; the next access maps them in again from the page cache or the file.
    pub fn release(&self, name: &str, range: std::ops::Range<usize>) {
        let Some(file) = self.by_name.get(name).map(|&i| &self.files[i]) else {
            return;
        };
        let Some(info) = file.info(name) else { return };
        let size = info.data_offsets.1 - info.data_offsets.0;
        let (start, end) = (range.start.min(size), range.end.min(size));
        if start >= end {
            return;
        }
        #[cfg(unix)]
        {
            let offset = 8 + file.header_len + info.data_offsets.0 + start;
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

    fn file_of(&self, name: &str) -> Result<&MappedFile> {
        let i = self.by_name.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: missing tensor {name:?}",
                self.origin.display()
            ))
        })?;
        Ok(&self.files[*i])
    }

    /// A `VarBuilder` over these weights, converting to `dtype` on `dev`.
    pub fn var_builder(self, dtype: DType, dev: &Device) -> VarBuilder<'static> {
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
        let info = file.info(name).expect("indexed tensor exists");
        if info.shape != shape.dims() {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor {name:?} has shape {:?} but config.json implies {:?}",
                file.path.display(),
                info.shape,
                shape.dims()
            )));
        }
        self.load(name, dtype, dev).map_err(to_candle)
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

/// The weight files of `dir`, in a stable order.
pub fn weight_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        return shard_paths(&index);
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_model_safetensors(p))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::bad_file(
            dir,
            format!("no {SINGLE_FILE}, {INDEX_FILE} or other *.safetensors weights"),
        ));
    }
    Ok(found)
}

/// True for a `*.safetensors` file that holds model weights (not optimizer state).
pub fn is_model_safetensors(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".safetensors") && !name.starts_with("optimizer") && path.is_file()
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn shard_paths(index: &Path) -> Result<Vec<PathBuf>> {
    let parsed: ShardIndex = crate::error::read_json(index)?;
    let dir = crate::error::parent_dir(index);
    let mut shards: Vec<&String> = parsed.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(Error::bad_file(index, "weight_map is empty"));
    }
    shards
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
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
