//! Archives built here, pickle opcode by pickle opcode, for what torch never writes but
//! a corrupt or hostile file may hold. Real `torch.save` files are tested from
//! `tests/fixtures/bin` in `tests/weights_bin.rs`.

use super::*;
use std::io::Write;
use zip::write::SimpleFileOptions;
use zip::ZipWriter;

const STOP: u8 = b'.';

/// BINUNICODE.
fn text(s: &str) -> Vec<u8> {
    let mut out = vec![BINUNICODE];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

/// BININT (4 bytes, signed).
fn int(i: i32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend(i.to_le_bytes());
    out
}

/// MARK items... TUPLE.
fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    items.iter().for_each(|i| out.extend(i));
    out.push(b't');
    out
}

/// GLOBAL.
fn global(module: &str, class: &str) -> Vec<u8> {
    format!("c{module}\n{class}\n").into_bytes()
}

/// `_rebuild_tensor_v2` of a view of float storage `key`, as torch pickles it.
fn tensor(key: &str, offset: i32, shape: &[i32], strides: &[i32]) -> Vec<u8> {
    tensor_of("FloatStorage", key, offset, shape, strides)
}

fn tensor_of(storage: &str, key: &str, offset: i32, shape: &[i32], strides: &[i32]) -> Vec<u8> {
    let id = tuple(&[
        text("storage"),
        global("torch", storage),
        text(key),
        text("cpu"),
        int(0),
    ]);
    let ints = |v: &[i32]| tuple(&v.iter().map(|&i| int(i)).collect::<Vec<_>>());
    let mut persistent = id;
    persistent.push(b'Q'); // BINPERSID
    let args = tuple(&[
        persistent,
        int(offset),
        ints(shape),
        ints(strides),
        vec![0x89], // NEWFALSE: requires_grad
        vec![b'}'], // backward hooks
    ]);
    [
        global("torch._utils", "_rebuild_tensor_v2"),
        args,
        vec![b'R'],
    ]
    .concat()
}

/// A pickled dict of `entries`.
fn dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x80, 2, b'}', b'('];
    for (k, v) in entries {
        out.extend(text(k));
        out.extend(v);
    }
    out.extend([b'u', STOP]);
    out
}

/// A torch-style archive `archive/...` holding `pickle` and float storages.
fn archive(pickle: &[u8], storages: &[(&str, Vec<f32>)]) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("archive/data.pkl".into(), pickle.to_vec()),
        ("archive/byteorder".into(), b"little".to_vec()),
    ];
    for (key, values) in storages {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        files.push((format!("archive/data/{key}"), bytes));
    }
    zip_of(&files, CompressionMethod::Stored)
}

fn zip_of(files: &[(String, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn floats(map: &[u8], entry: &Entry) -> Vec<f32> {
    let bytes = match &entry.bytes {
        Bytes::Mapped(range) => &map[range.clone()],
        Bytes::Owned(bytes) => bytes,
    };
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn twelve() -> Vec<f32> {
    (0..12).map(|i| i as f32).collect()
}

/// `read_archive`'s error, which must exist.
fn refused(file: &[u8]) -> String {
    match read_archive(file) {
        Ok(entries) => panic!("accepted: {:?}", entries.keys().collect::<Vec<_>>()),
        Err(msg) => msg,
    }
}

#[test]
fn contiguous_views_are_ranges_of_the_file() {
    let pickle = dict(&[
        ("rows", tensor("0", 3, &[2, 3], &[3, 1])),
        // A dimension of size 1 may have any stride and still be contiguous.
        ("column", tensor("0", 6, &[3, 1], &[1, 5])),
        ("scalar", tensor("0", 11, &[], &[])),
    ]);
    let file = archive(&pickle, &[("0", twelve())]);
    let entries = read_archive(&file).unwrap();
    let rows = &entries["rows"];
    assert!(matches!(rows.bytes, Bytes::Mapped(_)));
    assert_eq!((rows.dtype, rows.shape.clone()), (Dtype::F32, vec![2, 3]));
    assert_eq!(floats(&file, rows), [3., 4., 5., 6., 7., 8.]);
    assert_eq!(floats(&file, &entries["column"]), [6., 7., 8.]);
    assert_eq!(floats(&file, &entries["scalar"]), [11.]);
}

#[test]
fn strided_views_are_copied_in_row_major_order() {
    let pickle = dict(&[
        ("transposed", tensor("0", 0, &[4, 3], &[1, 4])),
        ("every_other", tensor("0", 1, &[2, 3], &[6, 2])),
        ("broadcast", tensor("0", 2, &[2, 3], &[0, 1])),
        ("empty", tensor("0", 0, &[0, 5], &[5, 1])),
    ]);
    let file = archive(&pickle, &[("0", twelve())]);
    let entries = read_archive(&file).unwrap();
    assert!(matches!(entries["transposed"].bytes, Bytes::Owned(_)));
    assert_eq!(
        floats(&file, &entries["transposed"]),
        [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
    assert_eq!(
        floats(&file, &entries["every_other"]),
        [1., 3., 5., 7., 9., 11.]
    );
    assert_eq!(
        floats(&file, &entries["broadcast"]),
        [2., 3., 4., 2., 3., 4.]
    );
    assert_eq!(entries["empty"].shape, [0, 5]);
    assert!(floats(&file, &entries["empty"]).is_empty());
}

#[test]
fn views_past_their_storage_are_refused() {
    for (offset, shape, strides) in [
        (10, &[2, 3][..], &[3, 1][..]),
        (0, &[12, 2], &[1, 1]),
        (0, &[2, 2], &[i32::MAX, 1]),
        (i32::MAX, &[1], &[1]),
    ] {
        let pickle = dict(&[("w", tensor("0", offset, shape, strides))]);
        let msg = refused(&archive(&pickle, &[("0", twelve())]));
        assert!(
            msg.starts_with("tensor \"w\": its view needs") && msg.contains("holding 12"),
            "{msg}"
        );
    }
    let overflow = [
        global("torch._utils", "_rebuild_tensor_v2"),
        tuple(&[
            [
                tuple(&[text("storage"), global("torch", "FloatStorage"), text("0")]),
                vec![b'Q'],
            ]
            .concat(),
            int(0),
            tuple(&[int(5), int(2)]),
            // LONG1 of 8 bytes: 2^62 elements per step, 4 steps.
            tuple(&[
                [vec![LONG1, 8], (1u64 << 62).to_le_bytes().to_vec()].concat(),
                int(1),
            ]),
        ]),
        vec![b'R'],
    ]
    .concat();
    let msg = refused(&archive(&dict(&[("w", overflow)]), &[("0", twelve())]));
    assert!(msg.contains("overflows"), "{msg}");
}

#[test]
fn anything_but_tensors_is_named_and_refused() {
    let runs_code = [
        global("builtins", "print"),
        tuple(&[text("ran")]),
        vec![b'R'],
    ]
    .concat();
    for (value, what) in [
        (text("hello"), "a string"),
        (int(7), "an integer"),
        (vec![b']'], "a list"),
        (runs_code, "an object built by builtins.print"),
        (global("os", "system"), "the class os.system"),
    ] {
        let pickle = dict(&[("w", tensor("0", 0, &[2], &[1])), ("x", value)]);
        let msg = refused(&archive(&pickle, &[("0", twelve())]));
        assert_eq!(
            msg,
            format!("entry \"x\" is {what}, not a tensor: only state dicts of tensors are read")
        );
    }
    // Several: the first by name, whatever the pickle's order.
    let pickle = dict(&[("b", text("s")), ("a", int(1)), ("c", int(2))]);
    assert_eq!(
        refused(&archive(&pickle, &[])),
        "entry \"a\" is an integer, not a tensor (and 2 more entries that are not tensors): \
         only state dicts of tensors are read"
    );
    let list = [vec![0x80, 2, b']'], vec![STOP]].concat();
    assert_eq!(
        refused(&archive(&list, &[])),
        "holds a list, not a state dict (a dict of tensors)"
    );
}

#[test]
fn malformed_tensors_are_errors_not_panics() {
    let rebuild = |args: Vec<Vec<u8>>| {
        [
            global("torch._utils", "_rebuild_tensor_v2"),
            tuple(&args),
            vec![b'R'],
        ]
        .concat()
    };
    let short_id = [
        tuple(&[text("storage"), global("torch", "FloatStorage")]),
        vec![b'Q'],
    ]
    .concat();
    for (value, problem) in [
        (
            tensor_of("ComplexFloatStorage", "0", 0, &[1], &[1]),
            "storage type ComplexFloatStorage, which is not supported",
        ),
        (rebuild(vec![int(0), int(0)]), "fewer than 4 arguments"),
        (
            rebuild(vec![int(0), int(0), tuple(&[]), tuple(&[])]),
            "its storage is an integer",
        ),
        (
            rebuild(vec![short_id, int(0), tuple(&[]), tuple(&[])]),
            "a storage id that is not (\"storage\", class, key, ...)",
        ),
        (tensor("0", 0, &[2, 3], &[1]), "2 sizes but 1 strides"),
        (
            tensor("0", 0, &[-2], &[1]),
            "a size that is not a tuple of integers >= 0",
        ),
        (
            tensor("0", -1, &[2], &[1]),
            "a storage offset that is not an integer >= 0",
        ),
    ] {
        let msg = refused(&archive(&dict(&[("w", value)]), &[("0", twelve())]));
        assert_eq!(msg, format!("tensor \"w\": {problem}"));
    }
}

#[test]
fn corrupt_pickles_are_errors_not_panics() {
    let good = dict(&[
        ("a", tensor("0", 0, &[3, 4], &[4, 1])),
        ("b", tensor("0", 0, &[4, 3], &[1, 4])),
    ]);
    // Every truncation, and every single-byte change, is an error or a valid read.
    for len in 0..good.len() {
        let msg = refused(&archive(&good[..len], &[("0", twelve())]));
        assert!(msg.contains("data.pkl"), "{len}: {msg}");
    }
    for at in 0..good.len() {
        for byte in [0x00, 0x8a, b'X', b'Q', b'R', b'u', b'h', 0xff] {
            let mut bad = good.clone();
            bad[at] = byte;
            let _ = read_archive(&archive(&bad, &[("0", twelve())]));
        }
    }
    for (pickle, problem) in [
        (
            vec![0x80, 2, LONG1, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, STOP],
            "longer than the file",
        ),
        (
            vec![0x80, 2, BINUNICODE, 0xff, 0xff, 0xff, 0xff, b'a'],
            "longer than the file",
        ),
        // SHORT_BINUNICODE (pickle protocol 4), which torch.save does not write.
        (vec![0x80, 4, 0x8c, 1, b'a', STOP], "unknown op-code"),
        (vec![0x80, 2, STOP], "unexpected empty stack"),
    ] {
        let msg = refused(&archive(&pickle, &[]));
        assert!(
            msg.starts_with("data.pkl ") && msg.contains(problem),
            "{msg}"
        );
    }
}

#[test]
fn broken_archives_name_the_problem() {
    let pickle = dict(&[("w", tensor("0", 0, &[2], &[1]))]);
    let good = archive(&pickle, &[("0", twelve())]);
    let cases = [
        (
            archive(&pickle, &[]),
            "archive/data/0 is missing from the archive",
        ),
        (good[..good.len() / 2].to_vec(), "not a PyTorch zip archive"),
        (vec![0x80, 2, b'}', STOP], "torch's legacy format"),
        (
            zip_of(
                &[("weights.txt".into(), b"hi".to_vec())],
                CompressionMethod::Stored,
            ),
            "a zip archive without data.pkl",
        ),
        (
            zip_of(
                &[
                    ("archive/data.pkl".into(), pickle.clone()),
                    ("archive/byteorder".into(), b"big".to_vec()),
                ],
                CompressionMethod::Stored,
            ),
            "tensors stored \"big\"-endian, which is not supported",
        ),
    ];
    for (file, problem) in cases {
        let msg = refused(&file);
        assert!(msg.contains(problem), "{problem:?} not in {msg:?}");
    }
}

#[test]
fn errors_name_the_file() {
    let err = read(Path::new("run/pytorch_model.bin"), b"not a zip").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("run/pytorch_model.bin: not a PyTorch zip archive"),
        "{err}"
    );
}

#[test]
fn pickle_bombs_are_refused_before_they_fill_memory() {
    let bomb = "data.pkl is corrupt: it copies its objects far more than a state dict does";
    // Copies of copies: a tuple of two copies of the previous one, 64 times (2^64 leaves).
    let mut doubling = [vec![0x80, 2], text("leaf"), vec![b'q', 0]].concat();
    for _ in 0..64 {
        doubling.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    doubling.push(STOP);
    // One 64 kB string, copied 1024 times by 2-byte opcodes.
    let mut wide = [vec![0x80, 2], text(&"x".repeat(1 << 16)), vec![b'q', 0]].concat();
    for _ in 0..1024 {
        wide.extend([b'h', 0]);
    }
    wide.push(STOP);
    for pickle in [doubling, wide] {
        let msg = refused(&archive(&pickle, &[]));
        assert!(msg.starts_with(bomb), "{msg}");
    }
}
