//! Line charts written as PNG or SVG files (plotters), for LR curves and reports.
//!
//! The format follows the file's extension; files are written atomically (rendered
//! beside the target, then renamed over it). Text is drawn with DejaVu Sans, embedded
//! in the binary, so PNGs need no system fonts.
//!
//! ```no_run
//! use ckpt::plot::{line_chart, LineChart, Series, VLine};
//! let mut chart = LineChart::new("LR", "step", "learning rate");
//! chart.series.push(Series::new("WSO", vec![(0.0, 0.0), (10.0, 1.0), (100.0, 1.0)]));
//! chart.vlines.push(VLine { x: 80.0, label: Some("mid-training".into()) });
//! line_chart(std::path::Path::new("lr.svg"), &chart).unwrap();
//! ```

mod heatmap;

pub use heatmap::{heat_maps, HeatMap};

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One curve: a legend label and its points, in drawing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
    /// Draw a marker at each point (a scatter, or a curve whose points matter).
    pub(crate) markers: bool,
    /// Join the points with a line.
    pub(crate) line: bool,
}

impl Series {
    /// A curve named `label`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            markers: false,
            line: true,
        }
    }

    /// Points without a line (a scatter plot).
    pub(crate) fn scatter(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            markers: true,
            line: false,
            ..Self::new(label, points)
        }
    }

    /// A curve with a marker at each point (visible even with a single point).
    pub(crate) fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// A dashed vertical line across the plot (a phase boundary), optionally labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct VLine {
    pub x: f64,
    pub label: Option<String>,
}

/// Which corner of the plot holds the legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legend {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

/// A chart of curves sharing one pair of axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub series: Vec<Series>,
    pub vlines: Vec<VLine>,
    /// The y-axis range; `None` fits the data with a small margin.
    pub(crate) y_range: Option<(f64, f64)>,
    pub(crate) legend: Legend,
    /// Width and height in pixels (SVG: user units).
    pub(crate) size: (u32, u32),
}

impl LineChart {
    /// An empty chart with the default size (1000 x 600) and the legend lower left.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            vlines: Vec::new(),
            y_range: None,
            legend: Legend::LowerLeft,
            size: (1000, 600),
        }
    }
}

/// The image formats [`line_chart`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// The format named by `path`'s extension (`.png`, `.svg`, any case).
    pub(crate) fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("svg") => Ok(ImageFormat::Svg),
            _ => Err(Error::bad_value(
                "plot",
                format!(
                    "{}: unknown plot format (the file name must end in .png or .svg)",
                    path.display()
                ),
            )),
        }
    }
}

/// Draws `chart` into `path` (PNG or SVG by extension), atomically.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<()> {
    write_figure(path, chart)
}

/// A picture drawn the same way on either backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static;
}

impl Figure for LineChart {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self)
    }
}

/// Draws `figure` into `path` (PNG or SVG by extension), atomically.
fn write_figure<F: Figure>(path: &Path, figure: &F) -> Result<()> {
    let format = ImageFormat::from_path(path)?;
    register_font()?;
    let failed =
        |e: String| Error::Invalid(format!("{}: cannot draw the plot: {e}", path.display()));
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, figure.size()).into_drawing_area();
                figure.draw(&root).map_err(failed)?;
            }
            crate::atomic_file::write_bytes(path, svg.as_bytes())
        }
        ImageFormat::Png => {
            // The encoder writes a file by name: render to a temporary beside the
            // target (same file system, so the rename is atomic), then rename it.
            let tmp = crate::atomic_file::temp_beside(path, ".png")?;
            {
                let root = BitMapBackend::new(tmp.path(), figure.size()).into_drawing_area();
                figure.draw(&root).map_err(failed)?;
            }
            tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
            tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
            Ok(())
        }
    }
}

/// DejaVu Sans, registered once as plotters' "sans-serif".
fn register_font() -> Result<()> {
    static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "the embedded plot font failed to load".into(),
        ))
    }
}

/// Tableau's ten colours, the usual plotting palette.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| finite(p)))
    };
    if points().next().is_none() {
        return Err("no finite points to plot".into());
    }
    let xs = points()
        .map(|p| p.0)
        .chain(chart.vlines.iter().map(|v| v.x).filter(|x| x.is_finite()));
    let (x0, x1) = padded(min_max(xs), 0.0);
    let (y0, y1) = match chart.y_range {
        Some(range) => range,
        None => padded(min_max(points().map(|p| p.1)), 0.05),
    };
    let (x_abs, y_abs) = (x0.abs().max(x1.abs()), y0.abs().max(y1.abs()));

    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&|x| tick_label(*x, x_abs))
        .y_label_formatter(&|y| tick_label(*y, y_abs))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(e)?;

    for (i, series) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = series.points.iter().copied().filter(finite).collect();
        if series.markers {
            let dots = pts.iter().map(|&p| Circle::new(p, 4, color.filled()));
            let drawn = ctx.draw_series(dots).map_err(e)?;
            if !series.line {
                drawn
                    .label(series.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 12, y), 4, color.filled()));
            }
        }
        if series.line {
            ctx.draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(e)?
                .label(series.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
    }
    let dash = BLACK.mix(0.55).stroke_width(1);
    for line in chart.vlines.iter().filter(|v| v.x.is_finite()) {
        ctx.draw_series(DashedLineSeries::new(
            [(line.x, y0), (line.x, y1)],
            6,
            5,
            dash,
        ))
        .map_err(e)?;
        if let Some(label) = &line.label {
            let at = (line.x + (x1 - x0) * 0.006, y1 - (y1 - y0) * 0.015);
            let style = ("sans-serif", 14).into_font().color(&BLACK.mix(0.7));
            ctx.draw_series(std::iter::once(Text::new(label.clone(), at, style)))
                .map_err(e)?;
        }
    }
    if !chart.series.is_empty() {
        ctx.configure_series_labels()
            .position(match chart.legend {
                Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                Legend::UpperRight => SeriesLabelPosition::UpperRight,
                Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
                Legend::LowerRight => SeriesLabelPosition::LowerRight,
            })
            .margin(16)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// `(lo, hi)` widened by `margin` of its span on each side; an empty span gets room.
fn padded((lo, hi): (f64, f64), margin: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 {
        (lo - span * margin, hi + span * margin)
    } else {
        let room = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        (lo - room, hi + room)
    }
}

/// A tick label scaled to the axis: `20k`, `1.5M` for step counts, `3e-4` for small
/// values such as learning rates, plain decimals otherwise.
pub(crate) fn tick_label(v: f64, axis_max: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if axis_max >= 1e4 && v.abs() >= 1e6 {
        format!("{}M", trim_zeros(&format!("{:.2}", v / 1e6)))
    } else if axis_max >= 1e4 && v.abs() >= 1e3 {
        format!("{}k", trim_zeros(&format!("{:.2}", v / 1e3)))
    } else if axis_max < 1e-2 {
        let s = format!("{v:.2e}");
        match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        }
    } else {
        trim_zeros(&format!("{v:.3}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> LineChart {
        let mut c = LineChart::new("Schedules", "step", "learning rate");
        c.series.push(Series::new(
            "WSD (α=0.1)",
            vec![(0.0, 0.0), (100.0, 3e-4), (750.0, 3e-4), (1000.0, 3e-5)],
        ));
        c.series.push(Series::new(
            "WSO",
            vec![(0.0, 0.0), (100.0, 3e-4), (1000.0, 3e-4)],
        ));
        c.vlines.push(VLine {
            x: 800.0,
            label: Some("mid-training".into()),
        });
        c
    }

    #[test]
    fn writes_svg_and_png_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("a.svg");
        line_chart(&svg, &chart()).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..40]);
        for label in [
            "WSD (α=0.1)",
            "WSO",
            "mid-training",
            "learning rate",
            "Schedules",
        ] {
            assert!(text.contains(label), "no {label:?} in the SVG");
        }
        let png = dir.path().join("sub/a.PNG");
        line_chart(&png, &chart()).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1000);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left behind");
    }

    #[test]
    fn refuses_unknown_formats_and_empty_charts() {
        let dir = tempfile::tempdir().unwrap();
        let err = line_chart(&dir.path().join("a.jpg"), &chart()).unwrap_err();
        assert!(err.to_string().contains("a.jpg") && err.to_string().contains(".png or .svg"));
        assert!(line_chart(&dir.path().join("noext"), &chart()).is_err());
        let empty = LineChart::new("t", "x", "y");
        let err = line_chart(&dir.path().join("e.svg"), &empty).unwrap_err();
        assert!(err.to_string().contains("no finite points"), "{err}");
        assert!(!dir.path().join("e.svg").exists());
    }

    #[test]
    fn tick_labels_fit_the_axis() {
        assert_eq!(tick_label(20_000.0, 116_000.0), "20k");
        assert_eq!(tick_label(2_500.0, 116_000.0), "2.5k");
        assert_eq!(tick_label(1_500_000.0, 2e6), "1.5M");
        assert_eq!(tick_label(3e-4, 3.2e-4), "3e-4");
        assert_eq!(tick_label(2.25e-4, 3.2e-4), "2.25e-4");
        assert_eq!(tick_label(0.25, 1.0), "0.25");
        assert_eq!(tick_label(0.0, 1.0), "0");
        assert_eq!(tick_label(500.0, 1000.0), "500");
    }
}
