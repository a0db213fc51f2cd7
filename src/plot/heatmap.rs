//! Heat maps: a grid of values, one coloured cell each (viridis, as matplotlib's
//! default), with a colour bar; several panels stacked in one image.
//!
//! ```no_run
//! use ckpt::plot::{heat_maps, HeatMap};
//! let map = HeatMap {
//!     title: "WSO".into(),
//!     x_label: "step".into(),
//!     y_label: "layer".into(),
//!     columns: vec!["100".into(), "200".into()],
//!     rows: vec!["0".into(), "1".into()],
//!     values: vec![vec![1.0, 2.0], vec![3.0, f64::NAN]],
//! };
//! heat_maps(std::path::Path::new("blocks.png"), "Tr(H) per layer", &[map]).unwrap();
//! ```

use super::{tick_label, write_figure, Figure};
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One panel: `values[row][column]`, rows drawn bottom to top; NaN cells are grey.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Column labels, left to right.
    pub columns: Vec<String>,
    /// Row labels, bottom to top.
    pub rows: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// Draws `maps` stacked top to bottom under `title` into `path` (PNG or SVG by
/// extension), atomically. The panels share one colour scale, so runs compare by colour.
pub fn heat_maps(path: &Path, title: &str, maps: &[HeatMap]) -> Result<()> {
    write_figure(
        path,
        &Panels {
            title: title.to_string(),
            maps: maps.to_vec(),
        },
    )
}

struct Panels {
    title: String,
    maps: Vec<HeatMap>,
}

/// Height of one panel, in pixels.
const PANEL_HEIGHT: u32 = 420;

impl Figure for Panels {
    fn size(&self) -> (u32, u32) {
        (1000, 60 + PANEL_HEIGHT * self.maps.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        if self.maps.is_empty() {
            return Err("no heat map to draw".into());
        }
        root.fill(&WHITE).map_err(e)?;
        let body = root.titled(&self.title, ("sans-serif", 24)).map_err(e)?;
        let scale = range(&self.maps).ok_or("no finite value to draw")?;
        let panels = body.split_evenly((self.maps.len(), 1));
        for (area, map) in panels.iter().zip(&self.maps) {
            draw_panel(area, map, scale)?;
        }
        root.present().map_err(e)
    }
}

/// The finite range of the maps' values (an empty span is widened).
fn range(maps: &[HeatMap]) -> Option<(f64, f64)> {
    let finite = maps
        .iter()
        .flat_map(|m| m.values.iter().flatten())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    match (lo.is_finite(), hi > lo) {
        (false, _) => None,
        (true, true) => Some((lo, hi)),
        (true, false) => Some((lo - lo.abs().max(1e-12), hi + hi.abs().max(1e-12))),
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &HeatMap,
    (lo, hi): (f64, f64),
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (width, _) = area.dim_in_pixel();
    let (cells, bar) = area.split_horizontally(width.saturating_sub(130));
    let (cols, rows) = (map.columns.len() as i32, map.rows.len() as i32);
    let mut ctx = ChartBuilder::on(&cells)
        .caption(&map.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(110)
        // A segmented range `0..n` has a segment for each of `0..=n`.
        .build_cartesian_2d(
            (0..cols - 1).into_segmented(),
            (0..rows - 1).into_segmented(),
        )
        .map_err(e)?;
    // Labels at cell centres: cell i spans segment i.
    let label = |names: &[String], at: &SegmentValue<i32>| match at {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let column_label = |x: &SegmentValue<i32>| label(&map.columns, x);
    let row_label = |y: &SegmentValue<i32>| label(&map.rows, y);
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(&map.x_label)
        .y_desc(&map.y_label)
        .x_labels(map.columns.len().min(12))
        .y_labels(map.rows.len().min(24))
        .x_label_formatter(&column_label)
        .y_label_formatter(&row_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let cells = map.values.iter().enumerate().flat_map(|(r, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            let color = if v.is_finite() {
                ViridisRGB.get_color_normalized(v, lo, hi)
            } else {
                RGBColor(200, 200, 200)
            };
            let (c, r) = (c as i32, r as i32);
            // The far edge of the last cell is the axis' end (`Last`), not a value in it.
            let edge = |i: i32, n: i32| {
                if i == n {
                    SegmentValue::Last
                } else {
                    SegmentValue::Exact(i)
                }
            };
            let corner = |c, r| (edge(c, cols), edge(r, rows));
            Rectangle::new([corner(c, r), corner(c + 1, r + 1)], color.filled())
        })
    });
    ctx.draw_series(cells).map_err(e)?;
    colour_bar(&bar, lo, hi)
}

/// A vertical bar of the scale from `lo` (bottom) to `hi` (top), labelled.
fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lo: f64,
    hi: f64,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut ctx = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(57)
        .margin_right(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(e)?;
    let axis = lo.abs().max(hi.abs());
    ctx.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|y| tick_label(*y, axis))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    const STEPS: usize = 64;
    let step = (hi - lo) / STEPS as f64;
    let strips = (0..STEPS).map(|i| {
        let y = lo + i as f64 * step;
        let color = ViridisRGB.get_color_normalized(y + step / 2.0, lo, hi);
        Rectangle::new([(0.0, y), (1.0, y + step)], color.filled())
    });
    ctx.draw_series(strips).map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: Vec<Vec<f64>>) -> HeatMap {
        HeatMap {
            title: "run-a".into(),
            x_label: "step".into(),
            y_label: "layer".into(),
            columns: (0..values[0].len())
                .map(|i| format!("{}", 100 * i))
                .collect(),
            rows: (0..values.len()).map(|i| i.to_string()).collect(),
            values,
        }
    }

    #[test]
    fn draws_panels_with_labels_and_scale() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("h.svg");
        let a = map(vec![vec![1.0, 2.0, 3.0], vec![4.0, f64::NAN, 6.0]]);
        let b = HeatMap {
            title: "run-b".into(),
            ..map(vec![vec![-1.0, 5.0]])
        };
        heat_maps(&svg, "Tr(H) per layer", &[a.clone(), b]).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for label in ["Tr(H) per layer", "run-a", "run-b", "layer", "200"] {
            assert!(text.contains(label), "no {label:?} in the SVG");
        }
        // The viridis ends: dark purple for the minimum, yellow for the maximum.
        assert!(
            text.contains("#440154") && text.contains("#FEE825"),
            "{}",
            &text[..300]
        );
        let png = dir.path().join("h.png");
        heat_maps(&png, "t", &[a]).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 480);
    }

    #[test]
    fn refuses_nothing_to_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.svg");
        assert!(heat_maps(&path, "t", &[]).is_err());
        let err = heat_maps(&path, "t", &[map(vec![vec![f64::NAN]])]).unwrap_err();
        assert!(err.to_string().contains("no finite value"), "{err}");
        assert!(!path.exists());
    }
}
