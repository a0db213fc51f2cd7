//! Every shipped recipe loads and validates, and the paper's recipes follow the paper's
//! schedules (Yano et al., Appendix B and C) at the steps that define them.

mod common;

use ckpt::checkpoint::Stage;
use ckpt::train::recipe::Recipe;
use common::{arg, Sandbox};
use std::path::{Path, PathBuf};

fn recipes(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    found
}

fn load(path: &Path) -> Recipe {
    Recipe::load(path, &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_recipe_validates() {
    let tiny = recipes("trainer");
    let paper = recipes("trainer/paper");
    assert_eq!((tiny.len(), paper.len()), (7, 46));
    for path in tiny.iter().chain(&paper) {
        let r = load(path);
        if path.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/paper")) {
            assert_eq!(r.job.name, path.file_stem().unwrap().to_str().unwrap());
        }
    }
}

#[test]
fn paper_recipes_follow_the_papers_schedules() {
    let eta = 3e-4;
    let (w, t, s, m) = (1000.0, 80_000.0, 1000.0 + 0.75 * 79_000.0, 36_000.0);
    let mut pre = 0;
    for path in recipes("trainer/paper") {
        let r = load(&path);
        let spec = &r.schedule;
        let name = r.job.name.clone();
        match r.job.stage {
            Stage::Pre => {
                pre += 1;
                assert_eq!(
                    (r.training.batch_tokens, r.training.seq_len),
                    (
                        if name.starts_with("1b") {
                            4_194_304
                        } else {
                            12_582_912
                        },
                        2048
                    )
                );
                let alpha = spec.alpha_pre();
                assert!((spec.lr(500) - eta * 500.0 / w).abs() < 1e-15, "{name}");
                assert!((spec.lr(1000) - eta).abs() < 1e-15, "{name}");
                assert!((spec.lr(80_000) - alpha * eta).abs() < 1e-15, "{name}");
                let t1 = 70_000.0;
                let want = match spec.kind.name() {
                    "wso" => eta,
                    "wsd" => eta * ((1.0 - alpha) * (t - t1) / (t - s) + alpha),
                    "cosine" => {
                        let p = (t1 - w) / (t - w);
                        eta * (alpha
                            + (1.0 - alpha) / 2.0 * (1.0 + (std::f64::consts::PI * p).cos()))
                    }
                    "linear" => eta * ((1.0 - alpha) * (t - t1) / (t - w) + alpha),
                    other => panic!("{name}: unexpected kind {other}"),
                };
                assert!(
                    (spec.lr(70_000) - want).abs() < 1e-15,
                    "{name}: {} vs {want}",
                    spec.lr(70_000)
                );
            }
            Stage::Mid => {
                let amid = spec.alpha_mid.unwrap();
                let base = spec.lr(80_000);
                let t1 = 100_000.0;
                let want = base * ((1.0 - amid) * (t + m - t1) / m + amid);
                assert!((spec.lr(100_000) - want).abs() < 1e-15, "{name}");
                assert!((spec.lr(116_000) - base * amid).abs() < 1e-15, "{name}");
                assert_eq!(
                    r.init.parent.as_ref().unwrap().file_name().unwrap(),
                    "step-0080000"
                );
            }
            Stage::Sft => {
                assert_eq!((spec.warmup, spec.alpha_pre()), (100, 0.0));
                assert_eq!(r.rows_per_step(), 128);
                assert_eq!(r.optimizer.weight_decay, 0.0);
            }
        }
    }
    assert_eq!(pre, 14);
}

#[test]
fn ckpt_schedule_draws_the_paper_figure_from_recipes() {
    let sb = Sandbox::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/paper");
    let names = [
        "1b-mid-wso-amid1",
        "1b-mid-wsd-a0.1-amid0",
        "1b-mid-cosine-a0.1-amid0",
        "1b-mid-linear-a0.1-amid0",
    ];
    let mut args: Vec<String> = vec!["schedule".into()];
    args.extend(
        names
            .iter()
            .map(|n| arg(&dir.join(format!("{n}.toml"))).to_string()),
    );
    args.extend([
        "--plot".into(),
        "figure2.png".into(),
        "--format".into(),
        "json".into(),
        "--every".into(),
        "1000".into(),
    ]);
    let curves = sb.run_json(&args);
    let curves = curves.as_array().unwrap();
    assert_eq!(curves.len(), 4);
    for curve in curves {
        let points = curve["points"].as_array().unwrap();
        assert_eq!(points.last().unwrap()["step"], 116_000);
    }
    let png = std::fs::read(sb.path().join("figure2.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
