//! The weighted sum of the sources' tensors, streamed into one safetensors file.
//!
//! Tensors are computed one at a time, as the safetensors writer asks for their bytes:
//! each is read straight from the sources' memory maps in blocks, accumulated in f32
//! (or f64) chunk by chunk on all cores, and rounded once to the sources' dtype. The
//! pages of a block are released from the sources' maps once read, so peak memory is
//! one output tensor plus a block of each source, whatever the size of the models.

use super::sources::is_float;
use crate::checkpoint::WeightFiles;
use crate::error::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::tensor::View;
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Elements read from each source before its pages are released (16 MiB of f32).
const BLOCK: usize = 1 << 22;
/// Elements per accumulator buffer: small enough to stay in cache.
const CHUNK: usize = 1 << 14;

/// Precision of the running sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accumulate {
    /// f32 sums (f64 sources are always summed in f64).
    #[default]
    F32,
    /// f64 sums.
    F64,
}

impl Accumulate {
    /// `f32` or `f64`.
    pub fn name(self) -> &'static str {
        match self {
            Accumulate::F32 => "f32",
            Accumulate::F64 => "f64",
        }
    }
}

/// Writes sum_j coefficients[j] * sources[j] to `path` (atomically), tensor by tensor,
/// each in its sources' dtype; `progress` receives the number of elements done.
/// The sources must hold the same tensors (names, dtypes, shapes).
pub fn write_weighted_sum(
    sources: &[&WeightFiles],
    coefficients: &[f64],
    accumulate: Accumulate,
    path: &Path,
    progress: &dyn Fn(u64),
) -> Result<()> {
    assert_eq!(sources.len(), coefficients.len());
    let newest = sources.last().expect("at least one source");
    let mut views = Vec::new();
    for (name, stored) in newest.tensors() {
        let parts = sources
            .iter()
            .map(|w| {
                w.raw_bytes(&name)
                    .ok_or_else(|| Error::bad_file(w.origin(), format!("missing tensor {name:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        views.push((
            name.clone(),
            MergedTensor {
                name,
                dtype: stored.dtype,
                shape: stored.shape,
                parts,
                sources,
                coefficients,
                accumulate,
                progress,
            },
        ));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
    // serialize_to_file renames its private (0600) temporary into place without
    // flushing it: give it the permissions of a newly created file, as every other
    // file of the checkpoint has, and flush it.
    let probe = crate::atomic_file::temp_beside(path, "")?;
    let permissions = probe
        .as_file()
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .permissions();
    std::fs::set_permissions(path, permissions).map_err(|e| Error::io(path, e))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// One output tensor, computed when the writer asks for its bytes.
struct MergedTensor<'a> {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// The tensor's bytes in each source.
    parts: Vec<&'a [u8]>,
    sources: &'a [&'a WeightFiles],
    coefficients: &'a [f64],
    accumulate: Accumulate,
    progress: &'a dyn Fn(u64),
}

impl View for MergedTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.compute())
    }

    fn data_len(&self) -> usize {
        self.parts.last().map_or(0, |p| p.len())
    }
}

impl MergedTensor<'_> {
    fn compute(&self) -> Vec<u8> {
        let newest = *self.parts.last().expect("at least one source");
        let elements: usize = self.shape.iter().product();
        if !is_float(self.dtype) {
            // Integer buffers were checked to be equal in every source.
            (self.progress)(elements as u64);
            return newest.to_vec();
        }
        let size = self.dtype.bitsize() / 8;
        let sum = Sum {
            dtype: self.dtype,
            accumulate: self.accumulate,
            parts: &self.parts,
            coefficients: self.coefficients,
        };
        let mut out = vec![0u8; newest.len()];
        for (b, block) in out.chunks_mut(BLOCK * size).enumerate() {
            let first = b * BLOCK;
            block
                .par_chunks_mut(CHUNK * size)
                .enumerate()
                .for_each(|(c, chunk)| sum.fill(first + c * CHUNK, chunk));
            let bytes = first * size..first * size + block.len();
            for source in self.sources {
                source.release(&self.name, bytes.clone());
            }
            (self.progress)((block.len() / size) as u64);
        }
        out
    }
}

/// What every chunk of one tensor's sum needs (shared across threads).
struct Sum<'a> {
    dtype: Dtype,
    accumulate: Accumulate,
    parts: &'a [&'a [u8]],
    coefficients: &'a [f64],
}

impl Sum<'_> {
    /// Fills `out` (the bytes of elements `start..`) with the weighted sum.
    fn fill(&self, start: usize, out: &mut [u8]) {
        if self.accumulate == Accumulate::F64 || self.dtype == Dtype::F64 {
            self.fill_in::<f64>(start, out)
        } else {
            self.fill_in::<f32>(start, out)
        }
    }

    fn fill_in<A: Acc>(&self, start: usize, out: &mut [u8]) {
        let size = self.dtype.bitsize() / 8;
        let mut acc = vec![A::ZERO; out.len() / size];
        let bytes = start * size..start * size + out.len();
        for (part, &c) in self.parts.iter().zip(self.coefficients) {
            // A checkpoint with weight 0 is not read at all (inv-sqrt's first one).
            if c != 0.0 {
                add_scaled(self.dtype, &part[bytes.clone()], A::from_f64(c), &mut acc);
            }
        }
        store(self.dtype, &acc, out);
    }
}

/// An accumulator type: f32 or f64.
trait Acc: Copy + Send + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    const ZERO: Self;
    fn from_f64(x: f64) -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    fn to_bf16(self) -> bf16;
    fn to_f16(self) -> f16;
}

impl Acc for f32 {
    const ZERO: Self = 0.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_bf16(self) -> bf16 {
        bf16::from_f32(self)
    }
    fn to_f16(self) -> f16 {
        f16::from_f32(self)
    }
}

impl Acc for f64 {
    const ZERO: Self = 0.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn to_f64(self) -> f64 {
        self
    }
    // Rounded once, from f64: no double rounding through f32.
    fn to_bf16(self) -> bf16 {
        bf16::from_f64(self)
    }
    fn to_f16(self) -> f16 {
        f16::from_f64(self)
    }
}

/// acc += c * x for the little-endian values `x` in `bytes`.
fn add_scaled<A: Acc>(dtype: Dtype, bytes: &[u8], c: A, acc: &mut [A]) {
    match dtype {
        Dtype::F32 => {
            for (a, x) in acc.iter_mut().zip(bytes.chunks_exact(4)) {
                let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                *a = *a + c * A::from_f32(x);
            }
        }
        Dtype::BF16 => {
            for (a, x) in acc.iter_mut().zip(bytes.chunks_exact(2)) {
                let x = bf16::from_le_bytes([x[0], x[1]]).to_f32();
                *a = *a + c * A::from_f32(x);
            }
        }
        Dtype::F16 => {
            for (a, x) in acc.iter_mut().zip(bytes.chunks_exact(2)) {
                let x = f16::from_le_bytes([x[0], x[1]]).to_f32();
                *a = *a + c * A::from_f32(x);
            }
        }
        Dtype::F64 => {
            for (a, x) in acc.iter_mut().zip(bytes.chunks_exact(8)) {
                let x = f64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
                *a = *a + c * A::from_f64(x);
            }
        }
        other => unreachable!("{other:?} is not averaged"),
    }
}

/// Rounds the sums to `dtype` into `out`, little-endian.
fn store<A: Acc>(dtype: Dtype, acc: &[A], out: &mut [u8]) {
    match dtype {
        Dtype::F32 => {
            for (o, a) in out.chunks_exact_mut(4).zip(acc) {
                o.copy_from_slice(&a.to_f32().to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for (o, a) in out.chunks_exact_mut(2).zip(acc) {
                o.copy_from_slice(&a.to_bf16().to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (o, a) in out.chunks_exact_mut(2).zip(acc) {
                o.copy_from_slice(&a.to_f16().to_le_bytes());
            }
        }
        Dtype::F64 => {
            for (o, a) in out.chunks_exact_mut(8).zip(acc) {
                o.copy_from_slice(&a.to_f64().to_le_bytes());
            }
        }
        other => unreachable!("{other:?} is not averaged"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_once_to_the_storage_dtype() {
        // x is no bf16: the average of x with itself, stored as bf16, rounds to nearest.
        let x = 1.0f32 + 2f32.powi(-8) + 2f32.powi(-9);
        let bytes: Vec<u8> = [x, x].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut acc = vec![0f32; 2];
        add_scaled(Dtype::F32, &bytes, 0.25, &mut acc);
        add_scaled(Dtype::F32, &bytes, 0.75, &mut acc);
        let mut out = vec![0u8; 4];
        store(Dtype::BF16, &acc, &mut out);
        let got = bf16::from_le_bytes([out[0], out[1]]);
        assert_eq!(got, bf16::from_f32(x));
        assert_eq!(got.to_f32(), 1.0 + 2f32.powi(-7), "round to nearest even");
    }
}
