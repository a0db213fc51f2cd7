//! Writing a report: the figures as PNG files, then each format asked for, every file
//! atomically (a reader never sees half a report file).

use super::csv::to_csv;
use super::figures::Drawing;
use super::html::to_html;
use super::markdown::markdown;
use super::Report;
use crate::atomic_file::write_bytes;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An output format of [`write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `report.md`: tables and image links, for a README.
    Md,
    /// One `<table>.csv` per table.
    Csv,
    /// `report.json`: everything, machine-readable.
    Json,
    /// `report.html`: one self-contained file, images embedded.
    Html,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Md, Format::Csv, Format::Json, Format::Html];
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(Error::bad_value(
                "--format",
                format!("unknown report format {s:?} (md, csv, json or html)"),
            )),
        }
    }
}

/// Writes the report into `out_dir` (created) in `formats`; the PNG figures are written
/// when markdown or HTML is asked for (they link or embed them). Returns the files.
pub fn write(report: &Report, out_dir: &Path, formats: &[Format]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    let mut images = HashMap::new();
    if formats
        .iter()
        .any(|f| matches!(f, Format::Md | Format::Html))
    {
        for f in report.figures() {
            let path = out_dir.join(&f.file);
            draw(&f.drawing, &path)?;
            images.insert(
                f.file.clone(),
                std::fs::read(&path).map_err(|e| Error::io(&path, e))?,
            );
            written.push(path);
        }
    }
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out_dir.join(name);
        write_bytes(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    let mut done = Vec::new();
    for &format in formats {
        if done.contains(&format) {
            continue;
        }
        done.push(format);
        match format {
            Format::Md => put("report.md", markdown(report, true).as_bytes())?,
            Format::Html => put("report.html", to_html(report, &images)?.as_bytes())?,
            Format::Json => {
                let json = serde_json::to_vec_pretty(report)
                    .map_err(|e| Error::Invalid(format!("cannot serialise the report: {e}")))?;
                put("report.json", &json)?;
            }
            Format::Csv => {
                for t in report.tables() {
                    put(&format!("{}.csv", t.id), to_csv(t).as_bytes())?;
                }
            }
        }
    }
    Ok(written)
}

fn draw(drawing: &Drawing, path: &Path) -> Result<()> {
    match drawing {
        Drawing::Chart(chart) => crate::plot::line_chart(path, chart),
        Drawing::HeatMaps(maps) => {
            crate::plot::heat_maps(path, "Hessian trace per layer (Hutchinson)", maps)
        }
        Drawing::SftScatter(corr) => crate::sharpness::sft::plot(path, corr),
    }
}
