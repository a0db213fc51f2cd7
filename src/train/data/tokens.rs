//! Token storage for pre-training: one stream of token ids, held in memory or
//! memory-mapped from pre-tokenized shards.
//!
//! Shards are numpy `.npy` files (1-D, C order, `<u2` or `<u4`: what
//! `np.save(path, np.array(ids, dtype=np.uint16))` writes) or raw little-endian `.bin`
//! files whose element type comes from `[data] token_dtype` (nanoGPT's format).
//! Several shards read as one stream, in the order given; sequences may span shards.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use ckpt::train::data::{tokens::{write_npy_shard, TokenStream}, TokenDtype};
//! let path = dir.path().join("shard-0.npy");
//! write_npy_shard(&path, &[5, 6, 7], TokenDtype::U16).unwrap();
//! let stream = TokenStream::open_shards(&[path], None).unwrap();
//! let mut out = [0; 2];
//! stream.read(1, &mut out);
//! assert_eq!(out, [6, 7]);
//! ```

use super::config::TokenDtype;
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sequence of token ids made of one or more parts.
pub struct TokenStream {
    parts: Vec<Part>,
    /// `starts[i]` is the stream index of the first token of `parts[i]`.
    starts: Vec<u64>,
    len: u64,
}

enum Part {
    Memory(Vec<u32>),
    Shard(Shard),
}

/// A memory-mapped shard: `len` tokens of `dtype` starting at byte `offset`.
struct Shard {
    map: Option<Mmap>,
    offset: usize,
    dtype: TokenDtype,
    len: u64,
}

impl TokenStream {
    /// A stream over tokens held in memory.
    pub fn from_vec(tokens: Vec<u32>) -> Self {
        Self::from_parts(vec![Part::Memory(tokens)])
    }

    /// A stream over the shards `paths`, in order. `bin_dtype` is the element type of raw
    /// `.bin` shards; `.npy` shards carry their own.
    pub fn open_shards(paths: &[PathBuf], bin_dtype: Option<TokenDtype>) -> Result<Self> {
        let parts = paths
            .iter()
            .map(|p| open_shard(p, bin_dtype).map(Part::Shard))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_parts(parts))
    }

    fn from_parts(parts: Vec<Part>) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for part in &parts {
            starts.push(len);
            len += part.len();
        }
        Self { parts, starts, len }
    }

    /// Number of tokens in the stream.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the stream holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the tokens `start..start + out.len()` into `out`.
    ///
    /// # Panics
    /// If the range runs past the end of the stream (a caller's bug, never bad data).
    pub fn read(&self, start: u64, out: &mut [u32]) {
        assert!(
            start + out.len() as u64 <= self.len,
            "read past the token stream"
        );
        if out.is_empty() {
            return;
        }
        let mut part = self.starts.partition_point(|&s| s <= start) - 1;
        let (mut pos, mut filled) = (start, 0);
        while filled < out.len() {
            let within = pos - self.starts[part];
            let take = (self.parts[part].len() - within).min((out.len() - filled) as u64);
            let dst = &mut out[filled..filled + take as usize];
            self.parts[part].read(within as usize, dst);
            filled += take as usize;
            pos += take;
            part += 1;
        }
    }
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Memory(v) => v.len() as u64,
            Part::Shard(s) => s.len,
        }
    }

    fn read(&self, start: usize, out: &mut [u32]) {
        match self {
            Part::Memory(v) => out.copy_from_slice(&v[start..start + out.len()]),
            Part::Shard(s) => s.read(start, out),
        }
    }
}

impl Shard {
    fn read(&self, start: usize, out: &mut [u32]) {
        let Some(map) = &self.map else { return };
        let size = self.dtype.size();
        let from = self.offset + start * size;
        let bytes = &map[from..from + out.len() * size];
        match self.dtype {
            TokenDtype::U16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as u32;
                }
            }
            TokenDtype::U32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }
}

/// Whether `path` names a token shard (`.npy` or `.bin`).
pub fn is_shard(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("npy") | Some("bin")
    )
}

fn open_shard(path: &Path, bin_dtype: Option<TokenDtype>) -> Result<Shard> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
    // Mapping a zero-length file fails on some systems; an empty raw shard is just empty.
    let map = if size == 0 {
        None
    } else {
        // SAFETY: the map is read-only; like every reader of training shards we rely on
        // nobody truncating the file while the run reads it.
        Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
    };
    let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
    let (offset, dtype, len) = if path.extension().is_some_and(|e| e == "npy") {
        let header = parse_npy_header(bytes).map_err(|m| Error::bad_file(path, m))?;
        (header.data_offset, header.dtype, header.len)
    } else {
        let dtype = bin_dtype.ok_or_else(|| {
            Error::bad_file(
                path,
                "raw .bin token shards need `token_dtype = \"u16\"` or \"u32\" in [data]",
            )
        })?;
        (0, dtype, (size / dtype.size()) as u64)
    };
    let expected = offset as u64 + len * dtype.size() as u64;
    if expected != size as u64 {
        return Err(Error::bad_file(
            path,
            format!("{size} bytes, but its header/dtype implies {expected} (truncated or not a {dtype:?} shard?)"),
        ));
    }
    Ok(Shard {
        map,
        offset,
        dtype,
        len,
    })
}

/// What a `.npy` header says about the array.
#[derive(Debug, PartialEq)]
struct NpyHeader {
    data_offset: usize,
    dtype: TokenDtype,
    len: u64,
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Parses the header of a `.npy` file (format versions 1-3): a magic string, a
/// version, a little-endian header length, then a Python dict literal such as
/// `{'descr': '<u2', 'fortran_order': False, 'shape': (1000,), }`.
fn parse_npy_header(bytes: &[u8]) -> std::result::Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err("not a .npy file (bad magic string)".into());
    }
    let (len_bytes, start) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let len_field = bytes.get(8..8 + len_bytes).ok_or("truncated .npy header")?;
    let header_len = len_field
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    let end = start + header_len;
    let dict = bytes
        .get(start..end)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let descr = dict_value(dict, "descr").ok_or("no 'descr' in the .npy header")?;
    let dtype = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<u2" => TokenDtype::U16,
        "<u4" => TokenDtype::U32,
        other => {
            return Err(format!(
                "token dtype {other} is not supported (use uint16 '<u2' or uint32 '<u4')"
            ))
        }
    };
    match dict_value(dict, "fortran_order") {
        Some("False") => {}
        other => {
            return Err(format!(
                "fortran_order {other:?}: only C order is supported"
            ))
        }
    }
    let shape = dict_value(dict, "shape").ok_or("no 'shape' in the .npy header")?;
    let len = parse_1d_shape(shape)?;
    Ok(NpyHeader {
        data_offset: end,
        dtype,
        len,
    })
}

/// The value text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = dict[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// `(N,)` -> N; any other shape is an error.
fn parse_1d_shape(shape: &str) -> std::result::Result<u64, String> {
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape {shape}"))?;
    let dims: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    match dims[..] {
        [n] => n.parse().map_err(|_| format!("bad shape {shape}")),
        _ => Err(format!("shape {shape}: token shards must be 1-D arrays")),
    }
}

/// Writes `tokens` as a 1-D `.npy` array of `dtype`, atomically. Errors when a token
/// does not fit the type.
pub fn write_npy_shard(path: &Path, tokens: &[u32], dtype: TokenDtype) -> Result<()> {
    check_fits(path, tokens, dtype)?;
    let descr = match dtype {
        TokenDtype::U16 => "<u2",
        TokenDtype::U32 => "<u4",
    };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        tokens.len()
    );
    // numpy pads the header with spaces and a newline so the data starts 64-byte aligned.
    let unpadded = NPY_MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let header_len = u16::try_from(dict.len()).expect("npy header is short");
    crate::atomic_file::write_with(path, |w| {
        w.write_all(NPY_MAGIC)?;
        w.write_all(&[1, 0])?;
        w.write_all(&header_len.to_le_bytes())?;
        w.write_all(dict.as_bytes())?;
        write_tokens(w, tokens, dtype)
    })
}

/// Writes `tokens` as a raw little-endian `.bin` shard of `dtype`, atomically.
pub fn write_bin_shard(path: &Path, tokens: &[u32], dtype: TokenDtype) -> Result<()> {
    check_fits(path, tokens, dtype)?;
    crate::atomic_file::write_with(path, |w| write_tokens(w, tokens, dtype))
}

fn check_fits(path: &Path, tokens: &[u32], dtype: TokenDtype) -> Result<()> {
    match tokens.iter().find(|&&t| t > dtype.max_id()) {
        Some(t) => Err(Error::bad_value(
            "dtype",
            format!("{}: token id {t} does not fit {dtype:?}", path.display()),
        )),
        None => Ok(()),
    }
}

fn write_tokens(w: &mut dyn Write, tokens: &[u32], dtype: TokenDtype) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(tokens.len() * dtype.size());
    for &t in tokens {
        match dtype {
            TokenDtype::U16 => bytes.extend_from_slice(&(t as u16).to_le_bytes()),
            TokenDtype::U32 => bytes.extend_from_slice(&t.to_le_bytes()),
        }
    }
    w.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(stream: &TokenStream) -> Vec<u32> {
        let mut out = vec![0; stream.len() as usize];
        stream.read(0, &mut out);
        out
    }

    #[test]
    fn npy_round_trip_and_header_layout() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [TokenDtype::U16, TokenDtype::U32] {
            let path = dir.path().join(format!("{dtype:?}.npy"));
            let tokens: Vec<u32> = (0..1000).map(|i| (i * 61) % 65_536).collect();
            write_npy_shard(&path, &tokens, dtype).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let header = parse_npy_header(&bytes).unwrap();
            assert_eq!(header.data_offset % 64, 0);
            assert_eq!((header.dtype, header.len), (dtype, 1000));
            let stream = TokenStream::open_shards(&[path], None).unwrap();
            assert_eq!(all(&stream), tokens);
        }
        let err = write_npy_shard(&dir.path().join("x.npy"), &[70_000], TokenDtype::U16);
        assert!(err.unwrap_err().to_string().contains("70000"));
    }

    /// A header written the way numpy writes it, with `dict` as the header text.
    fn npy_with_header(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = NPY_MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn npy_headers_numpy_writes_are_read_and_others_rejected() {
        let ok = npy_with_header(
            "{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }   \n",
            &[1, 0, 0, 0, 2, 0, 0, 0],
        );
        let header = parse_npy_header(&ok).unwrap();
        assert_eq!((header.dtype, header.len), (TokenDtype::U32, 2));
        let cases = [
            (
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n",
                "<i8",
            ),
            (
                "{'descr': '>u2', 'fortran_order': False, 'shape': (2,), }\n",
                ">u2",
            ),
            (
                "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 3), }\n",
                "1-D",
            ),
            (
                "{'descr': '<u2', 'fortran_order': True, 'shape': (2,), }\n",
                "C order",
            ),
            ("{'descr': '<u2', 'fortran_order': False}\n", "shape"),
        ];
        for (dict, expected) in cases {
            let err = parse_npy_header(&npy_with_header(dict, &[])).unwrap_err();
            assert!(err.contains(expected), "{dict}: {err}");
        }
        assert!(parse_npy_header(b"PK\x03\x04 zip")
            .unwrap_err()
            .contains("magic"));
        let short_v2 = parse_npy_header(b"\x93NUMPY\x02\x00\x10\x00").unwrap_err();
        assert!(short_v2.contains("truncated"), "{short_v2}");

        // Errors from opening name the file; a data section of the wrong size is caught.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.npy");
        let truncated = npy_with_header(
            "{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }\n",
            &[1, 0],
        );
        std::fs::write(&path, truncated).unwrap();
        let err = TokenStream::open_shards(&[path], None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("short.npy") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn bin_shards_in_both_dtypes_form_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        write_bin_shard(&a, &[1, 2, 65_535], TokenDtype::U16).unwrap();
        write_bin_shard(&b, &[4, 5], TokenDtype::U16).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 6);
        let stream = TokenStream::open_shards(&[a.clone(), b], Some(TokenDtype::U16)).unwrap();
        assert_eq!(all(&stream), [1, 2, 65_535, 4, 5]);
        // A read across the shard boundary.
        let mut out = [0; 3];
        stream.read(1, &mut out);
        assert_eq!(out, [2, 65_535, 4]);

        let c = dir.path().join("c.bin");
        write_bin_shard(&c, &[100_000, 7], TokenDtype::U32).unwrap();
        let stream =
            TokenStream::open_shards(std::slice::from_ref(&c), Some(TokenDtype::U32)).unwrap();
        assert_eq!(all(&stream), [100_000, 7]);

        let err = TokenStream::open_shards(&[c], None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("c.bin") && err.contains("token_dtype"),
            "{err}"
        );
        std::fs::write(&a, [1, 2, 3]).unwrap();
        let err = TokenStream::open_shards(&[a], Some(TokenDtype::U16));
        assert!(err.err().unwrap().to_string().contains("3 bytes"));
    }

    #[test]
    fn memory_stream_reads_ranges() {
        let stream = TokenStream::from_vec((0..10).collect());
        let mut out = [0; 4];
        stream.read(6, &mut out);
        assert_eq!(out, [6, 7, 8, 9]);
        assert_eq!(stream.len(), 10);
    }
}
