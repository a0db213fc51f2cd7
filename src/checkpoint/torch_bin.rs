//! PyTorch `.bin` weights (`torch.save` of a state dict), read without running them.
//!
//! Since torch 1.6 such a file is a zip archive: `<name>/data.pkl` pickles a dict
//! {tensor name: tensor}, where each tensor is a view (storage, offset, shape, strides)
//! of a storage `<name>/data/<key>` that torch stores uncompressed. Unpickling it with
//! Python could call anything the pickle names; here candle's pickle interpreter only
//! builds the object tree (classes stay names, nothing is imported or called), and
//! anything in it but tensors is refused. A tensor's bytes are then a range of the
//! mapped file, like a safetensors tensor, unless it is a strided view: those are
//! copied into their own contiguous buffer.

use super::weights::{Bytes, Entry};
use crate::error::{Error, Result};
use candle_core::pickle::{Object, Stack};
use safetensors::Dtype;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;
use zip::{CompressionMethod, ZipArchive};

/// Errors inside this module: a message, named after the file by [`read`].
type Msg<T> = std::result::Result<T, String>;

/// Opcodes whose argument candle reads without checking it (see [`check_next_op`]).
const LONG1: u8 = 0x8a;
const BINUNICODE: u8 = b'X';
/// Opcodes that push a copy of a memoized object, which candle clones in full: a few
/// bytes of pickle can copy a large object, and copies of copies grow exponentially
/// (a "pickle bomb"), so what they copy is budgeted.
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
/// The budget, in bytes of objects: a state dict's copies are class names, storage ids
/// and (tied weights) whole tensor objects, 2 to 4 bytes per byte of pickle in the
/// files torch.save writes.
const MEMO_COPY_FLOOR: usize = 16 << 20;
const MEMO_COPY_PER_BYTE: usize = 64;

/// The tensors of the `.bin` file `path`, whose bytes are `map`.
pub(super) fn read(path: &Path, map: &[u8]) -> Result<HashMap<String, Entry>> {
    read_archive(map).map_err(|msg| Error::bad_file(path, msg))
}

fn read_archive(map: &[u8]) -> Msg<HashMap<String, Entry>> {
    let mut zip = open_zip(map)?;
    let prefix = archive_prefix(&zip)?;
    check_byteorder(&mut zip, &prefix)?;
    let pickle = read_member(&mut zip, &format!("{prefix}data.pkl"))?;
    let views = state_dict(unpickle(&pickle)?)?;
    let mut storages = HashMap::new();
    let mut entries = HashMap::new();
    for (name, view) in views {
        // Tied weights share one storage: find it once.
        let storage = match storages.get(&view.storage) {
            Some(range) => Range::clone(range),
            None => {
                let range = storage_range(&mut zip, &prefix, &view.storage, map.len())?;
                storages.insert(view.storage.clone(), range.clone());
                range
            }
        };
        let entry = view
            .entry(map, storage)
            .map_err(|msg| format!("tensor {name:?}: {msg}"))?;
        entries.insert(name, entry);
    }
    Ok(entries)
}

fn open_zip(map: &[u8]) -> Msg<ZipArchive<Cursor<&[u8]>>> {
    // torch < 1.6 wrote a bare sequence of pickles; they start with the PROTO opcode.
    const LEGACY: &str = "torch's legacy format (torch < 1.6, not a zip archive), which \
        is not supported: load and re-save it with a newer torch, or convert it to safetensors";
    if map.first() == Some(&0x80) {
        return Err(LEGACY.into());
    }
    ZipArchive::new(Cursor::new(map)).map_err(|e| {
        format!("not a PyTorch zip archive ({e}); truncated or corrupt, or not a torch.save file?")
    })
}

/// The folder holding `data.pkl` (the archive's name, `pytorch_model/` for
/// `pytorch_model.bin`), with its trailing slash.
fn archive_prefix(zip: &ZipArchive<Cursor<&[u8]>>) -> Msg<String> {
    let pickles: Vec<&[u8]> = zip
        .file_names_raw()
        .filter(|n| *n == b"data.pkl" || n.ends_with(b"/data.pkl"))
        .collect();
    match pickles[..] {
        [one] => {
            let prefix = &one[..one.len() - b"data.pkl".len()];
            String::from_utf8(prefix.to_vec())
                .map_err(|_| "a zip archive whose data.pkl has a name that is not UTF-8".into())
        }
        [] => Err("a zip archive without data.pkl: not a torch.save file".into()),
        _ => Err(format!(
            "a zip archive with {} data.pkl files: not one torch.save file",
            pickles.len()
        )),
    }
}

/// Refuses big-endian archives: the tensors are kept as little-endian bytes.
fn check_byteorder(zip: &mut ZipArchive<Cursor<&[u8]>>, prefix: &str) -> Msg<()> {
    let name = format!("{prefix}byteorder");
    // Archives from before torch recorded it are little-endian.
    if zip.index_for_name(&name).is_none() {
        return Ok(());
    }
    match &read_member(zip, &name)?[..] {
        b"little" => Ok(()),
        other => Err(format!(
            "tensors stored {:?}-endian, which is not supported: load and re-save it on a \
             little-endian machine",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The index of archive member `name`, which torch stores uncompressed (which is what
/// lets its storages be mapped).
fn stored_member(zip: &mut ZipArchive<Cursor<&[u8]>>, name: &str) -> Msg<usize> {
    let index = zip
        .index_for_name(name)
        .ok_or_else(|| format!("{name} is missing from the archive"))?;
    let member = zip
        .by_index_raw(index)
        .map_err(|e| format!("cannot read {name} in the archive: {e}"))?;
    if member.compression() != CompressionMethod::Stored {
        return Err(format!(
            "{name} is compressed ({}), but torch writes its archives uncompressed: \
             re-save it with torch.save",
            member.compression()
        ));
    }
    Ok(index)
}

/// The bytes of archive member `name` (small ones: the pickle, the byte order).
fn read_member(zip: &mut ZipArchive<Cursor<&[u8]>>, name: &str) -> Msg<Vec<u8>> {
    let index = stored_member(zip, name)?;
    let mut member = zip
        .by_index(index)
        .map_err(|e| format!("cannot read {name} in the archive: {e}"))?;
    let mut bytes = Vec::new();
    member
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name} in the archive: {e}"))?;
    Ok(bytes)
}

/// Where the bytes of storage `key` lie in the file.
fn storage_range(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    prefix: &str,
    key: &str,
    file_len: usize,
) -> Msg<Range<usize>> {
    let name = format!("{prefix}data/{key}");
    let index = stored_member(zip, &name)?;
    let member = zip
        .by_index_raw(index)
        .map_err(|e| format!("cannot read {name} in the archive: {e}"))?;
    // No known start counts as past the end, as does a size that overflows.
    let start = member.data_start().unwrap_or(u64::MAX);
    let end = start.saturating_add(member.size());
    if end > file_len as u64 {
        return Err(format!("{name} runs past the end of the file; truncated?"));
    }
    Ok(start as usize..end as usize)
}

/// Runs candle's pickle interpreter over `bytes` (data opcodes only: it refuses what
/// it does not know, and never imports or calls anything).
fn unpickle(bytes: &[u8]) -> Msg<Object> {
    let mut rest = bytes;
    let mut stack = Stack::empty();
    let mut copy_budget = MEMO_COPY_FLOOR.saturating_add(bytes.len() * MEMO_COPY_PER_BYTE);
    loop {
        check_next_op(rest)?;
        let copies = matches!(rest.first(), Some(&(BINGET | LONG_BINGET)));
        match stack.read(&mut rest) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("data.pkl is not a pickle this reader knows: {e}")),
        }
        if copies {
            let copied = stack
                .stack()
                .last()
                .map_or(0, |o| footprint(o, copy_budget));
            copy_budget = copy_budget.checked_sub(copied).ok_or(
                "data.pkl is corrupt: it copies its objects far more than a state dict does \
                 (a pickle bomb?)",
            )?;
        }
    }
    stack
        .finalize()
        .map_err(|e| format!("data.pkl is not a valid pickle: {e}"))
}

/// The memory `obj` takes (its nodes and strings), counted up to just past `cap`.
fn footprint(obj: &Object, cap: usize) -> usize {
    let mut todo = vec![obj];
    let mut total = 0usize;
    while let Some(o) = todo.pop() {
        total += std::mem::size_of::<Object>();
        match o {
            Object::Unicode(s) => total += s.len(),
            Object::Class {
                module_name,
                class_name,
            } => total += module_name.len() + class_name.len(),
            Object::Tuple(items) | Object::List(items) => todo.extend(items),
            Object::Dict(items) => todo.extend(items.iter().flat_map(|(k, v)| [k, v])),
            Object::Reduce { callable, args } | Object::Build { callable, args } => {
                todo.extend([&**callable, &**args])
            }
            Object::PersistentLoad(id) => todo.push(id),
            _ => {}
        }
        if total > cap {
            break;
        }
    }
    total
}

/// Refuses the two opcodes whose argument candle's interpreter trusts: LONG1 with more
/// than 8 bytes (it would shift past 64 bits) and BINUNICODE longer than what is left
/// (it would allocate up to 4 GiB first).
fn check_next_op(rest: &[u8]) -> Msg<()> {
    let bad = match rest {
        [LONG1, n, ..] => *n > 8,
        [BINUNICODE, a, b, c, d, tail @ ..] => {
            u32::from_le_bytes([*a, *b, *c, *d]) as usize > tail.len()
        }
        _ => false,
    };
    if bad {
        return Err("data.pkl is corrupt: an integer or a string longer than the file".into());
    }
    Ok(())
}

/// A tensor as pickled: a view of a storage.
#[derive(Debug)]
struct View {
    /// The storage's key (its file `data/<key>` in the archive).
    storage: String,
    dtype: Dtype,
    /// In elements, like the strides.
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// The tensors of a state dict, refusing anything else in it.
fn state_dict(obj: Object) -> Msg<Vec<(String, View)>> {
    let items = match obj {
        Object::Dict(items) => items,
        other => {
            return Err(format!(
                "holds {}, not a state dict (a dict of tensors)",
                describe(&other)
            ))
        }
    };
    let mut views = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (key, value) in items {
        let Object::Unicode(name) = key else {
            return Err(format!(
                "a state dict key is {}, not a name",
                describe(&key)
            ));
        };
        // `model.state_dict()` is an OrderedDict whose attribute `_metadata` (module
        // versions) the pickle restores into the same dict.
        if name == "_metadata" && matches!(value, Object::Dict(_)) {
            continue;
        }
        match tensor_view(value) {
            Ok(view) => views.push((name, view)),
            Err(Refusal::NotATensor(what)) => refused.push(format!("entry {name:?} is {what}")),
            Err(Refusal::Unreadable(msg)) => return Err(format!("tensor {name:?}: {msg}")),
        }
    }
    // The pickle's order is not the file's (candle reverses each batch of items):
    // name the first refused entry by name, so the error does not change.
    refused.sort();
    match &refused[..] {
        [] => Ok(views),
        [first, rest @ ..] => {
            let more = match rest.len() {
                0 => String::new(),
                1 => " (and 1 more entry that is not a tensor)".into(),
                n => format!(" (and {n} more entries that are not tensors)"),
            };
            Err(format!(
                "{first}, not a tensor{more}: only state dicts of tensors are read"
            ))
        }
    }
}

/// Why an entry of the state dict gives no tensor.
enum Refusal {
    /// It is something else (described).
    NotATensor(String),
    /// It is a tensor, pickled in a way this reader does not follow.
    Unreadable(String),
}

/// The view a tensor object pickles, or why there is none.
fn tensor_view(obj: Object) -> std::result::Result<View, Refusal> {
    let not_a_tensor = |obj: &Object| Refusal::NotATensor(describe(obj));
    let (module, class) = match &obj {
        Object::Reduce { callable, .. } => match callable.as_ref() {
            Object::Class {
                module_name,
                class_name,
            } => (module_name.clone(), class_name.clone()),
            _ => return Err(not_a_tensor(&obj)),
        },
        _ => return Err(not_a_tensor(&obj)),
    };
    let args = match (module.as_str(), class.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") => reduce_args(obj),
        // An nn.Parameter: (tensor, requires_grad, hooks[, state]).
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            return tensor_view(reduce_args(obj).into_iter().next().unwrap_or(Object::None))
        }
        // A tensor subclass: (rebuild function, type, its arguments, state).
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let mut args = reduce_args(obj).into_iter();
            let (func, args) = (args.next(), args.nth(1));
            match (func, args) {
                (Some(Object::Class { class_name, .. }), Some(Object::Tuple(args)))
                    if class_name == "_rebuild_tensor_v2" =>
                {
                    args
                }
                _ => {
                    return Err(Refusal::Unreadable(
                        "a tensor subclass that is not rebuilt from a plain tensor".into(),
                    ))
                }
            }
        }
        _ => return Err(not_a_tensor(&obj)),
    };
    rebuild_args(args).map_err(Refusal::Unreadable)
}

/// The argument tuple of a `Reduce`, empty when it is not one.
fn reduce_args(obj: Object) -> Vec<Object> {
    match obj {
        Object::Reduce { args, .. } => match *args {
            Object::Tuple(args) => args,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)`,
/// where `storage` is the persistent id `("storage", StorageClass, key, location, numel)`.
fn rebuild_args(args: Vec<Object>) -> Msg<View> {
    let mut args = args.into_iter();
    let (Some(storage), Some(offset), Some(size), Some(stride)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return Err("fewer than 4 arguments".into());
    };
    let Object::PersistentLoad(id) = storage else {
        return Err(format!("its storage is {}", describe(&storage)));
    };
    let Object::Tuple(id) = *id else {
        return Err("a storage id that is not a tuple".into());
    };
    let (dtype, storage) = match &id[..] {
        [Object::Unicode(kind), Object::Class { class_name, .. }, Object::Unicode(key), ..]
            if kind == "storage" =>
        {
            (storage_dtype(class_name)?, key.clone())
        }
        _ => return Err("a storage id that is not (\"storage\", class, key, ...)".into()),
    };
    let shape = integers(size).ok_or("a size that is not a tuple of integers >= 0")?;
    let strides = integers(stride).ok_or("a stride that is not a tuple of integers >= 0")?;
    if shape.len() != strides.len() {
        return Err(format!(
            "{} sizes but {} strides",
            shape.len(),
            strides.len()
        ));
    }
    let offset = integer(offset).ok_or("a storage offset that is not an integer >= 0")?;
    Ok(View {
        storage,
        dtype,
        offset,
        shape,
        strides,
    })
}

fn integer(obj: Object) -> Option<usize> {
    match obj {
        Object::Int(i) => usize::try_from(i).ok(),
        Object::Long(i) => usize::try_from(i).ok(),
        _ => None,
    }
}

fn integers(obj: Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(items) => items.into_iter().map(integer).collect(),
        _ => None,
    }
}

/// The element type of a torch storage class.
fn storage_dtype(class: &str) -> Msg<Dtype> {
    Ok(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        other => return Err(format!("storage type {other}, which is not supported")),
    })
}

/// What an object is, for an error message.
fn describe(obj: &Object) -> String {
    match obj {
        Object::Unicode(_) => "a string".into(),
        Object::Int(_) | Object::Long(_) => "an integer".into(),
        Object::Float(_) => "a float".into(),
        Object::Bool(_) => "a boolean".into(),
        Object::None => "None".into(),
        Object::Tuple(_) => "a tuple".into(),
        Object::List(_) => "a list".into(),
        Object::Dict(_) => "a dict".into(),
        Object::Mark => "a pickle mark".into(),
        Object::PersistentLoad(_) => "a bare storage".into(),
        Object::Class {
            module_name,
            class_name,
        } => format!("the class {module_name}.{class_name}"),
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match &**callable {
            Object::Class {
                module_name,
                class_name,
            } => format!("an object built by {module_name}.{class_name}"),
            other => format!("an object built from {}", describe(other)),
        },
    }
}

impl View {
    /// The tensor's bytes, given its storage's place in the mapped file: a range of the
    /// file when the view is contiguous, else a contiguous copy.
    fn entry(&self, map: &[u8], storage: Range<usize>) -> Msg<Entry> {
        let size = self.dtype.bitsize() / 8;
        let elements = self.elements()?;
        let bytes = if elements == 0 {
            Bytes::Owned(Vec::new())
        } else {
            let reach = self.reach()?;
            let available = storage.len() / size;
            if reach > available {
                return Err(format!(
                    "its view needs {reach} elements of a storage holding {available}"
                ));
            }
            if self.is_contiguous() {
                let start = storage.start + self.offset * size;
                Bytes::Mapped(start..start + elements * size)
            } else {
                Bytes::Owned(self.gather(&map[storage], elements, size))
            }
        };
        Ok(Entry {
            dtype: self.dtype,
            shape: self.shape.clone(),
            bytes,
        })
    }

    fn elements(&self) -> Msg<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("shape {:?} overflows", self.shape))
    }

    /// One past the last storage element the view touches (for a non-empty view).
    fn reach(&self) -> Msg<usize> {
        let overflow = || "its view's extent overflows".to_string();
        let first = self.offset.checked_add(1).ok_or_else(overflow)?;
        self.shape
            .iter()
            .zip(&self.strides)
            .try_fold(first, |end, (&d, &s)| {
                end.checked_add(d.saturating_sub(1).checked_mul(s)?)
            })
            .ok_or_else(overflow)
    }

    /// Row-major with no gaps (a dimension of size 1 may have any stride). Only for
    /// non-empty views, whose partial products cannot overflow.
    fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Copies the view's elements, in row-major order, out of `storage` (whose bounds
    /// [`View::reach`] checked).
    fn gather(&self, storage: &[u8], elements: usize, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(elements * size);
        let mut index = vec![0usize; self.shape.len()];
        let mut at = self.offset;
        for _ in 0..elements {
            out.extend_from_slice(&storage[at * size..(at + 1) * size]);
            // Next index, last dimension fastest; `at` follows it and never leaves
            // the checked extent (a dimension wraps before stepping past its end).
            for dim in (0..index.len()).rev() {
                if index[dim] + 1 < self.shape[dim] {
                    index[dim] += 1;
                    at += self.strides[dim];
                    break;
                }
                at -= self.strides[dim] * index[dim];
                index[dim] = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
