//! Records of data files, for every command that reads them: JSONL (one object per
//! line), JSON (an array of objects, or JSON lines, as the Hub's `json` loader accepts
//! both) and Parquet (the Hub datasets' format; only the column asked for is decoded).
//! Each record comes with where it was found ("line 3", "record 3", "row 3"), so that
//! errors name the file and the place.

use crate::error::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

/// One record of a data file: a JSON value, with where it was found for error messages.
pub(crate) struct Record {
    /// "line 3" (JSONL), "record 3" (JSON array) or "row 3" (Parquet), counted from 1
    /// for lines and from 0 for records and rows, as editors and dataframes count them.
    pub(crate) location: String,
    pub(crate) value: Value,
}

impl Record {
    /// The string in `column`; errors name the file, the location and the problem.
    pub fn text(&self, file: &Path, column: &str) -> Result<String> {
        let problem = match self.value.get(column) {
            Some(Value::String(s)) => return Ok(s.clone()),
            Some(Value::Null) => format!("column \"{column}\" is null"),
            Some(_) => format!("column \"{column}\" is not a string"),
            None => format!("no \"{column}\" column{}", self.columns()),
        };
        Err(Error::bad_file(
            file,
            format!("{}: {problem}", self.location),
        ))
    }

    fn columns(&self) -> String {
        match &self.value {
            Value::Object(map) if !map.is_empty() => {
                let names: Vec<&str> = map.keys().map(String::as_str).collect();
                format!(" (it has: {})", names.join(", "))
            }
            _ => String::new(),
        }
    }
}

/// Calls `visit` with each record of the JSONL, JSON or Parquet `file`, in order, until
/// it breaks. `column`, when given, is the only Parquet column decoded.
pub(crate) fn for_each_record(
    file: &Path,
    column: Option<&str>,
    visit: &mut dyn FnMut(Record) -> Result<ControlFlow<()>>,
) -> Result<()> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("parquet") => parquet_records(file, column, visit),
        Some("jsonl") => json_lines(file, &read_utf8(file)?, visit),
        Some("json") => {
            let text = read_utf8(file)?;
            if text.trim_start().starts_with('[') {
                json_array(file, &text, visit)
            } else {
                json_lines(file, &text, visit)
            }
        }
        _ => Err(Error::bad_file(
            file,
            "records are read from .jsonl, .json or .parquet files",
        )),
    }
}

fn json_lines(
    file: &Path,
    text: &str,
    visit: &mut dyn FnMut(Record) -> Result<ControlFlow<()>>,
) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", i + 1);
        let value = serde_json::from_str(line)
            .map_err(|e| Error::bad_file(file, format!("{location}: invalid JSON: {e}")))?;
        if visit(Record { location, value })?.is_break() {
            break;
        }
    }
    Ok(())
}

fn json_array(
    file: &Path,
    text: &str,
    visit: &mut dyn FnMut(Record) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let records: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| Error::bad_file(file, format!("not a JSON array of records: {e}")))?;
    for (i, value) in records.into_iter().enumerate() {
        let location = format!("record {i}");
        if visit(Record { location, value })?.is_break() {
            break;
        }
    }
    Ok(())
}

fn parquet_records(
    file: &Path,
    column: Option<&str>,
    visit: &mut dyn FnMut(Record) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let bad = |e: parquet::errors::ParquetError| Error::bad_file(file, format!("Parquet: {e}"));
    let handle = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let reader = SerializedFileReader::new(handle).map_err(bad)?;
    let projection = match column {
        Some(name) => Some(project(file, &reader, name)?),
        None => None,
    };
    for (i, row) in reader.get_row_iter(projection).map_err(bad)?.enumerate() {
        let location = format!("row {i}");
        let row = row.map_err(|e| Error::bad_file(file, format!("{location}: {e}")))?;
        let value = Value::Object(
            row.get_column_iter()
                .map(|(name, field)| (name.clone(), field_value(field)))
                .collect(),
        );
        if visit(Record { location, value })?.is_break() {
            break;
        }
    }
    Ok(())
}

/// The file's schema reduced to the top-level column `name`, so only it is decoded.
fn project(
    file: &Path,
    reader: &SerializedFileReader<std::fs::File>,
    name: &str,
) -> Result<parquet::schema::types::Type> {
    let schema = reader.metadata().file_metadata().schema();
    let fields = schema.get_fields();
    let Some(field) = fields.iter().find(|f| f.name() == name) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        return Err(Error::bad_file(
            file,
            format!("no \"{name}\" column (it has: {})", names.join(", ")),
        ));
    };
    parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(vec![Arc::clone(field)])
        .build()
        .map_err(|e| Error::bad_file(file, format!("Parquet schema: {e}")))
}

/// A Parquet value as JSON. Byte arrays without a string annotation are still text in
/// most corpora, so valid UTF-8 is read as a string rather than base64.
fn field_value(field: &Field) -> Value {
    match field {
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => field.to_json_value(),
        },
        other => other.to_json_value(),
    }
}

/// The content of a text file; an encoding error names the line.
pub(crate) fn read_utf8(path: &Path) -> Result<String> {
    let bytes = crate::error::read_file(path)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        Error::bad_file(path, format!("line {line}: not UTF-8 text"))
    })
}

/// Files for the tests of the modules that read records.
#[cfg(test)]
pub(crate) mod testing {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::path::Path;
    use std::sync::Arc;

    /// Writes a Parquet file with columns `id: int64` and `text: string` (optional).
    pub(crate) fn write_parquet(
        path: &Path,
        texts: &[&str],
        compression: parquet::basic::Compression,
    ) {
        let schema = parquet::schema::parser::parse_message_type(
            "message doc { required int64 id; optional binary text (STRING); }",
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_compression(compression)
            .build();
        let file = std::fs::File::create(path).unwrap();
        let mut writer =
            SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let ids: Vec<i64> = (0..texts.len() as i64).collect();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(*t)).collect();
        let levels = vec![1i16; texts.len()];
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }
}
