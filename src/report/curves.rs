//! Training curves of a run: its `metrics.jsonl` (one line per step, written by
//! `ckpt train`), else the loss and LR each checkpoint's `ckpt.json` recorded.

use super::runs::Run;
use super::source::StoreView;
use crate::train::trainer::METRICS_FILE;
use std::path::Path;

/// Points drawn per curve at most: longer logs are averaged over equal buckets.
pub(crate) const MAX_POINTS: usize = 2000;

/// A run's curve of one quantity and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Curve {
    pub(crate) points: Vec<(f64, f64)>,
    /// Read from the run's `metrics.jsonl` (else from its checkpoints' sidecars).
    pub(crate) from_log: bool,
    /// Steps averaged per point (1: every step).
    pub(crate) bucket: usize,
}

/// `field` (`loss`, `lr`) of every logged step, or of every checkpoint; `None` when
/// neither has it. A missing or unreadable run directory is no error.
pub(crate) fn curve(view: &StoreView, run: &Run, field: &str) -> Option<Curve> {
    if let Some(points) = run
        .dir
        .as_deref()
        .and_then(|d| view.resolve(&d.join(METRICS_FILE)))
        .and_then(|p| read_log(&p, field))
        .filter(|p| !p.is_empty())
    {
        let (points, bucket) = downsample(points, MAX_POINTS);
        return Some(Curve {
            points,
            from_log: true,
            bucket,
        });
    }
    let points: Vec<(f64, f64)> = run
        .checkpoints
        .iter()
        .filter_map(|&i| {
            let c = &view.checkpoints[i];
            let meta = c.meta.as_ref()?;
            let y = match field {
                "loss" => meta.train_loss?,
                "lr" => meta.lr?,
                _ => return None,
            };
            Some((meta.step as f64, y))
        })
        .collect();
    (!points.is_empty()).then_some(Curve {
        points,
        from_log: false,
        bucket: 1,
    })
}

/// `(step, field)` of each line that has both (a torn last line is skipped).
fn read_log(path: &Path, field: &str) -> Option<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((v["step"].as_f64()?, v[field].as_f64()?))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(points)
}

/// At most `max` points: means of consecutive buckets of equal size.
fn downsample(points: Vec<(f64, f64)>, max: usize) -> (Vec<(f64, f64)>, usize) {
    let bucket = points.len().div_ceil(max.max(1));
    if bucket <= 1 {
        return (points, 1);
    }
    let means = points
        .chunks(bucket)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect();
    (means, bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_logs_are_bucket_means() {
        let points: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64)).collect();
        let (down, bucket) = downsample(points.clone(), 4);
        assert_eq!(bucket, 3);
        assert_eq!(down, vec![(1.0, 2.0), (4.0, 8.0), (7.0, 14.0), (9.0, 18.0)]);
        assert_eq!(downsample(points.clone(), 10), (points, 1));
    }

    #[test]
    fn logs_skip_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"step\":2,\"loss\":3.0}\n{\"step\":1,\"loss\":4.0}\n{\"step\":3,\"lo",
        )
        .unwrap();
        assert_eq!(
            read_log(&path, "loss").unwrap(),
            vec![(1.0, 4.0), (2.0, 3.0)]
        );
        assert!(read_log(&dir.path().join("missing"), "loss").is_none());
    }
}
