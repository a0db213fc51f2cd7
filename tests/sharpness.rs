//! Sharpness (Hutchinson's trace of the Hessian) checked against independent references:
//! closed-form Hessians (logistic regression, a diagonal quadratic), PyTorch's double
//! backward on a tiny Llama (`scripts/make_sharpness_fixture.py`), and `ckpt sharpness`
//! end to end on checkpoints of a real (tiny) `ckpt train` run, bad input included.

mod common;

use candle_core::{DType, Device, Tensor};
use ckpt::checkpoint::Checkpoint;
use ckpt::sharpness::hutchinson::{BlockMap, TraceEstimate};
use ckpt::sharpness::spectrum::{slq_density, top_eigenvalues};
use ckpt::sharpness::vector::{self, rademacher};
use ckpt::sharpness::{
    hutchinson_trace, top_eigenvalue, Hessian, LlamaObjective, Method, Objective, TraceOptions,
};
use common::{arg, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// Closed forms

/// Mean logistic loss `softplus(x.w + b) - y (x.w + b)` of rows `x` (split into equal
/// batches), parameters `[w, b]`. Its Hessian is `A^T diag(p (1 - p)) A / n` with
/// `A = [x, 1]` and `p = sigmoid(x.w + b)`.
struct Logistic {
    x: Vec<Tensor>,
    y: Vec<Tensor>,
}

impl Objective for Logistic {
    fn num_batches(&self) -> usize {
        self.x.len()
    }

    fn loss(&self, params: &[Tensor], batch: usize, _twice: bool) -> ckpt::Result<Tensor> {
        let (w, b) = (&params[0], &params[1]);
        let t = self.x[batch]
            .matmul(&w.unsqueeze(1)?)?
            .squeeze(1)?
            .broadcast_add(b)?;
        // softplus(t) = log(1 + exp(t)), fine for the moderate values used here.
        let softplus = (t.exp()? + 1.0)?.log()?;
        Ok((softplus - (&self.y[batch] * &t)?)?.mean_all()?)
    }
}

/// A random logistic problem: `n` rows of `d` features in `batches` batches, f64.
fn logistic(n: usize, d: usize, batches: usize) -> (Logistic, Vec<Tensor>) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1.0, (n, d), &dev).unwrap();
    let y = Tensor::rand(0f64, 1.0, n, &dev).unwrap().ge(0.5).unwrap();
    let y = y.to_dtype(DType::F64).unwrap();
    let w = (Tensor::randn(0f64, 1.0, d, &dev).unwrap() * 0.5).unwrap();
    let b = Tensor::new(&[0.3f64], &dev).unwrap();
    let rows = n / batches;
    let split = |t: &Tensor| {
        (0..batches)
            .map(|i| t.narrow(0, i * rows, rows).unwrap())
            .collect()
    };
    (
        Logistic {
            x: split(&x),
            y: split(&y),
        },
        vec![w, b],
    )
}

/// The closed-form Hessian of [`Logistic`] at `theta`, `(d + 1) x (d + 1)` row-major.
fn logistic_hessian(obj: &Logistic, theta: &[Tensor]) -> Vec<Vec<f64>> {
    let w: Vec<f64> = theta[0].to_vec1().unwrap();
    let b: f64 = theta[1].to_vec1::<f64>().unwrap()[0];
    let d = w.len();
    let mut h = vec![vec![0.0; d + 1]; d + 1];
    let mut n = 0.0;
    for x in &obj.x {
        for row in x.to_vec2::<f64>().unwrap() {
            let t: f64 = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b;
            let p = 1.0 / (1.0 + (-t).exp());
            let a: Vec<f64> = row.iter().copied().chain([1.0]).collect();
            for i in 0..=d {
                for j in 0..=d {
                    h[i][j] += p * (1.0 - p) * a[i] * a[j];
                }
            }
            n += 1.0;
        }
    }
    h.iter()
        .map(|r| r.iter().map(|v| v / n).collect())
        .collect()
}

fn matvec(h: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    h.iter()
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn flat(v: &[Tensor]) -> Vec<f64> {
    v.iter()
        .flat_map(|t| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect()
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

#[test]
fn both_methods_give_the_closed_form_hessian_vector_product_of_logistic_regression() {
    let (obj, theta) = logistic(64, 6, 2);
    let h = logistic_hessian(&obj, &theta);
    let shapes = vec![vec![6], vec![1]];
    for probe in 0..3 {
        let z = rademacher(&shapes, 5, probe, DType::F64, &Device::Cpu).unwrap();
        let want = matvec(&h, &flat(&z));
        let want_q: f64 = want.iter().zip(flat(&z)).map(|(a, b)| a * b).sum();
        for (method, tol) in [
            (Method::FiniteDifference { eps: 1e-4 }, 1e-7),
            (Method::Exact, 1e-12),
        ] {
            let hessian = Hessian::new(&obj, theta.clone(), method);
            let got = flat(&hessian.product(&z).unwrap());
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= tol * scale,
                    "{method:?}: {got:?} vs {want:?}"
                );
            }
            let q = hessian.quadratic_form(&z).unwrap();
            assert!(rel_err(q, want_q) < tol, "{method:?}: {q} vs {want_q}");
        }
    }
}

#[test]
fn hutchinson_converges_to_the_exact_trace_within_its_standard_error() {
    let (obj, theta) = logistic(96, 12, 3);
    let h = logistic_hessian(&obj, &theta);
    let trace: f64 = (0..h.len()).map(|i| h[i][i]).sum();
    // Rademacher probes: Var(z^T H z) = 2 sum_{i != j} H_ij^2.
    let off: f64 = (0..h.len())
        .flat_map(|i| (0..h.len()).map(move |j| (i, j)))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| h[i][j] * h[i][j])
        .sum();
    let probes = 400;
    let expected_stderr = (2.0 * off / probes as f64).sqrt();

    let hessian = Hessian::new(&obj, theta, Method::Exact);
    let opts = TraceOptions {
        probes,
        seed: 11,
        rel_tol: None,
        min_probes: 10,
    };
    let shapes = vec![vec![12], vec![1]];
    let map = BlockMap::new(&["w", "b"]);
    let mut seen = 0;
    let est = hutchinson_trace(&hessian, &shapes, &map, &opts, none(), &mut |i, e| {
        assert_eq!((i + 1, e.len()), (seen + 1, seen + 1));
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(est.len(), probes);
    let (mean, se) = (est.mean(), est.stderr());
    assert!(
        (mean - trace).abs() < 4.0 * se,
        "estimate {mean} +- {se}, exact trace {trace}"
    );
    assert!(
        (se / expected_stderr - 1.0).abs() < 0.25,
        "stderr {se}, theory {expected_stderr}"
    );
    assert_eq!(*est.running_means().last().unwrap(), mean);

    // Resuming with the first samples given back draws the same remaining probes.
    let mut first = est.clone();
    first.truncate(7);
    let resumed =
        hutchinson_trace(&hessian, &shapes, &map, &opts, first, &mut |_, _| Ok(())).unwrap();
    assert_eq!(resumed, est);

    // A relative tolerance stops early, after the minimum.
    let loose = TraceOptions {
        rel_tol: Some(0.2),
        ..opts
    };
    let early =
        hutchinson_trace(&hessian, &shapes, &map, &loose, none(), &mut |_, _| Ok(())).unwrap();
    assert!(early.len() >= 10 && early.len() < probes, "{}", early.len());
}

/// No probes measured yet.
fn none() -> TraceEstimate {
    TraceEstimate::default()
}

/// `0.5 sum_i lambda_i x_i^2`: Hessian `diag(lambda)`.
struct Diagonal {
    lambda: Tensor,
}

impl Objective for Diagonal {
    fn num_batches(&self) -> usize {
        1
    }
    fn loss(&self, params: &[Tensor], _: usize, _: bool) -> ckpt::Result<Tensor> {
        Ok((params[0].sqr()? * &self.lambda)?
            .sum_all()?
            .affine(0.5, 0.0)?)
    }
}

#[test]
fn power_iteration_finds_the_largest_eigenvalue() {
    let dev = Device::Cpu;
    let lambda = Tensor::new(&[1.0f64, -2.0, 9.0, 3.0, 8.0, 0.5], &dev).unwrap();
    let obj = Diagonal { lambda };
    let theta = vec![Tensor::new(&[0.1f64, 0.2, -0.3, 0.4, 0.5, 0.6], &dev).unwrap()];
    for method in [Method::FiniteDifference { eps: 1e-4 }, Method::Exact] {
        let hessian = Hessian::new(&obj, theta.clone(), method);
        let top = top_eigenvalue(&hessian, &[vec![6]], 3, 200, 1e-10).unwrap();
        assert!(top.converged, "{top:?}");
        assert!((top.value - 9.0).abs() < 1e-6, "{method:?}: {top:?}");
    }
}

// ---------------------------------------------------------------------------------
// The exact Hessian of a tiny Llama (f64, built column by column from double backward)

/// A tiny untied Llama (316 parameters, 2 layers), its objective on one batch, its
/// parameters and the exact Hessian (symmetrised; its asymmetry is checked).
fn tiny_llama_hessian() -> (LlamaObjective, Vec<Tensor>, Vec<Vec<f64>>) {
    let cfg = ckpt::model::ModelConfig::from_json(
        r#"{"model_type":"llama","vocab_size":7,"hidden_size":4,"intermediate_size":6,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
        "max_position_embeddings":16,"rms_norm_eps":1e-5,"tie_word_embeddings":false}"#,
    )
    .unwrap();
    let dev = Device::Cpu;
    let weights = ckpt::model::init_weights(&cfg, 0.5, 3, DType::F64, &dev).unwrap();
    let ids: Vec<u32> = vec![1, 4, 2, 6, 0, 3, 5, 1, 2, 2, 6, 4];
    let obj = LlamaObjective::new(&cfg, &[ids], 2, 6, DType::F64, &dev).unwrap();
    let theta: Vec<Tensor> = obj.names().iter().map(|n| weights[n].clone()).collect();
    let d = vector::len(&theta);
    assert_eq!(d, 316);
    let exact = Hessian::new(&obj, theta.clone(), Method::Exact);
    let mut columns = Vec::with_capacity(d);
    for j in 0..d {
        let mut e = vec![0.0; d];
        e[j] = 1.0;
        columns.push(flat(&exact.product(&unflat(&e, obj.shapes())).unwrap()));
    }
    let scale = columns.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
    let mut h = vec![vec![0.0; d]; d];
    for i in 0..d {
        for j in 0..d {
            let asym = (columns[i][j] - columns[j][i]).abs();
            assert!(asym <= 1e-10 * scale, "H[{i}][{j}] asymmetric by {asym}");
            h[i][j] = 0.5 * (columns[i][j] + columns[j][i]);
        }
    }
    (obj, theta, h)
}

fn unflat(v: &[f64], shapes: &[Vec<usize>]) -> Vec<Tensor> {
    let mut at = 0;
    shapes
        .iter()
        .map(|shape| {
            let n: usize = shape.iter().product();
            at += n;
            Tensor::from_slice(&v[at - n..at], shape.as_slice(), &Device::Cpu).unwrap()
        })
        .collect()
}

#[test]
fn the_tiny_llamas_trace_blocks_top_eigenvalues_and_density_match_its_exact_hessian() {
    let (obj, theta, h) = tiny_llama_hessian();
    let d = h.len();
    let map = obj.blocks();
    assert_eq!(
        map.names,
        [
            "embed",
            "layers.0.norms",
            "layers.0.attn",
            "layers.0.mlp",
            "layers.1.norms",
            "layers.1.attn",
            "layers.1.mlp",
            "final_norm",
            "head"
        ]
    );
    // Each entry's block, from the parameters' sizes.
    let mut block_of = Vec::with_capacity(d);
    for (shape, &b) in obj.shapes().iter().zip(&map.of_param) {
        block_of.extend(std::iter::repeat_n(b, shape.iter().product()));
    }
    let exact_block: Vec<f64> = (0..map.names.len())
        .map(|b| (0..d).filter(|&i| block_of[i] == b).map(|i| h[i][i]).sum())
        .collect();
    let trace: f64 = (0..d).map(|i| h[i][i]).sum();

    // Hutchinson on the production path (finite differences) over 400 probes.
    let fd = Hessian::new(&obj, theta, Method::FiniteDifference { eps: 1e-5 });
    let opts = TraceOptions {
        probes: 400,
        seed: 5,
        rel_tol: None,
        min_probes: 10,
    };
    let est = hutchinson_trace(&fd, obj.shapes(), &map, &opts, none(), &mut |_, _| Ok(())).unwrap();
    let (mean, se) = (est.mean(), est.stderr());
    assert!(
        (mean - trace).abs() < 4.0 * se,
        "Tr(H) {trace}: {mean} +- {se}"
    );
    for (b, block) in est.blocks.iter().enumerate() {
        let (m, s) = (
            ckpt::sharpness::hutchinson::mean(&block.samples),
            ckpt::sharpness::hutchinson::stderr(&block.samples),
        );
        let want = exact_block[b];
        assert!(
            (m - want).abs() < 4.0 * s + 1e-9,
            "{}: exact {want}, estimate {m} +- {s}",
            block.name
        );
    }
    for i in 0..est.len() {
        let parts: f64 = est.blocks.iter().map(|b| b.samples[i]).sum();
        let sample = est.samples[i];
        assert!(
            (parts - sample).abs() <= 1e-12 * sample.abs().max(1.0),
            "probe {i}"
        );
    }

    // The exact spectrum, against Lanczos on finite differences with a step small
    // enough that their O(h^2) error stays below 1e-6.
    let fd = Hessian::new(
        &obj,
        fd.theta().to_vec(),
        Method::FiniteDifference { eps: 1e-7 },
    );
    let matrix = nalgebra::DMatrix::from_fn(d, d, |i, j| h[i][j]);
    let mut eigen: Vec<f64> = nalgebra::SymmetricEigen::new(matrix)
        .eigenvalues
        .iter()
        .copied()
        .collect();
    eigen.sort_by(|a, b| b.total_cmp(a));
    let top = top_eigenvalues(&fd, obj.shapes(), DType::F64, &Device::Cpu, 1, 5, d).unwrap();
    for (got, want) in top.values.iter().zip(&eigen) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "top: {got} vs {want}"
        );
    }
    assert_eq!(top.values.len(), 5);

    // SLQ: its first two moments are Tr(H)/d and Tr(H^2)/d within the stochastic error.
    let density = slq_density(
        &fd,
        obj.shapes(),
        DType::F64,
        &Device::Cpu,
        2,
        40,
        8,
        &[],
        &mut |_| Ok(()),
    )
    .unwrap();
    let m2: f64 = eigen.iter().map(|l| l * l).sum::<f64>() / d as f64;
    for (p, want) in [(1, trace / d as f64), (2, m2)] {
        let (got, se) = (density.moment(p), density.moment_stderr(p));
        assert!(
            (got - want).abs() < 4.0 * se,
            "moment {p}: {got} +- {se}, exact {want}"
        );
    }
}

// ---------------------------------------------------------------------------------
// PyTorch reference

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sharpness")
}

struct Reference {
    objective: LlamaObjective,
    theta: Vec<Tensor>,
    probes: Vec<Vec<Tensor>>,
    zhz: Vec<f64>,
    loss: f64,
}

/// The fixture's checkpoint, batches and probes in `dtype`.
fn reference(dtype: DType) -> Reference {
    let dir = fixture_dir();
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ckpt = Checkpoint::open(&root.join(json["checkpoint"].as_str().unwrap())).unwrap();
    let batches: Vec<Vec<Vec<u32>>> = serde_json::from_value(json["batches"].clone()).unwrap();
    let (rows, seq) = (batches[0].len(), batches[0][0].len());
    let flat_batches: Vec<Vec<u32>> = batches.iter().map(|b| b.concat()).collect();
    let objective = LlamaObjective::new(
        &ckpt.config().unwrap(),
        &flat_batches,
        rows,
        seq,
        dtype,
        &Device::Cpu,
    )
    .unwrap();
    let theta = objective.load_parameters(&ckpt).unwrap();
    let stored =
        candle_core::safetensors::load(dir.join("probes.safetensors"), &Device::Cpu).unwrap();
    let zhz: Vec<f64> = serde_json::from_value(json["zhz_f64"].clone()).unwrap();
    let probes = (0..zhz.len())
        .map(|i| {
            objective
                .names()
                .iter()
                .map(|name| {
                    let bits = &stored[&format!("{i}/{name}")];
                    let signs = bits
                        .to_dtype(DType::F64)
                        .unwrap()
                        .affine(2.0, -1.0)
                        .unwrap();
                    signs.to_dtype(dtype).unwrap()
                })
                .collect()
        })
        .collect();
    let names: Vec<String> = serde_json::from_value(json["parameters"].clone()).unwrap();
    let mut ours = objective.names().to_vec();
    ours.sort();
    let mut theirs = names;
    theirs.sort();
    assert_eq!(ours, theirs, "the same parameters on both sides");
    Reference {
        objective,
        theta,
        probes,
        zhz,
        loss: json["loss_f64"].as_f64().unwrap(),
    }
}

#[test]
fn both_methods_reproduce_pytorch_double_backward_per_probe() {
    for (dtype, method, tol) in [
        // Measured: 2e-15, 3e-9, 6e-4 and 2e-6 (README, "ckpt sharpness").
        (DType::F64, Method::Exact, 1e-12),
        (DType::F64, Method::FiniteDifference { eps: 1e-6 }, 1e-7),
        (DType::F32, Method::FiniteDifference { eps: 3e-5 }, 1e-3),
        (DType::F32, Method::Exact, 1e-5),
    ] {
        let r = reference(dtype);
        let hessian = Hessian::new(&r.objective, r.theta.clone(), method);
        let (loss, _) = hessian.gradient().unwrap();
        assert!(rel_err(loss, r.loss) < 1e-6, "loss {loss} vs {}", r.loss);
        for (z, want) in r.probes.iter().zip(&r.zhz) {
            let got = hessian.quadratic_form(z).unwrap();
            let err = rel_err(got, *want);
            println!(
                "{dtype:?} {}: z^T H z {got:.12} vs PyTorch {want:.12}: {err:.1e}",
                method.name()
            );
            assert!(
                err < tol,
                "{dtype:?} {method:?}: {got} vs {want} ({err:.1e})"
            );
        }
    }
}

#[test]
fn probes_are_rademacher_and_the_fixture_is_small() {
    let r = reference(DType::F32);
    for z in &r.probes {
        let n = vector::len(z) as f64;
        assert_eq!(vector::dot(z, z).unwrap(), n);
    }
    let size: u64 = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(size < 1 << 20, "{size} bytes");
}

// ---------------------------------------------------------------------------------
// `ckpt sharpness` end to end

use common::SMALL_RECIPE as SMALL;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "ckpt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A synthetic world and two tiny runs, WSO and WSD, trained by `ckpt train`.
fn trained_runs() -> Sandbox {
    let sb = Sandbox::new();
    sb.small_world();
    for recipe in ["tiny-wso", "tiny-wsd"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("trainer/{recipe}.toml"));
        let mut args = vec!["train".to_string(), arg(&path).to_string()];
        for set in SMALL {
            args.extend(["--set".into(), set.into()]);
        }
        ok(&sb.run(&args));
    }
    sb
}

/// The measurement flags of these tests: 32-token rows, 2 batches, 4 probes.
const SMALL_MEASURE: [&str; 10] = [
    "--data",
    "data/synth/validation.jsonl",
    "--seq-len",
    "32",
    "--max-batches",
    "2",
    "--samples",
    "4",
    "--seed",
    "3",
];

fn sharpness(sb: &Sandbox, paths: &[&str], more: &[&str]) -> std::process::Output {
    let mut args = vec!["sharpness"];
    args.extend(paths);
    args.extend(SMALL_MEASURE);
    args.extend(more);
    sb.run(args)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn measures_every_checkpoint_of_trained_runs_plots_and_resumes() {
    let sb = trained_runs();
    let out = sharpness(
        &sb,
        &["runs"],
        &[
            "--json",
            "--plot",
            "fig.png",
            "--save-batches",
            "batches.npy",
            "--top-eigen",
            "--eigen-iters",
            "4",
        ],
    );
    let results: Vec<Value> = serde_json::from_str(&ok(&out)).unwrap();
    let name = |r: &Value| {
        let p = PathBuf::from(r["checkpoint"].as_str().unwrap());
        let run = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        format!("{run}/{}", r["step"])
    };
    let names: Vec<String> = results.iter().map(name).collect();
    assert_eq!(
        names,
        ["tiny-wsd/12", "tiny-wsd/24", "tiny-wso/12", "tiny-wso/24"]
    );
    for r in &results {
        let samples = f64s(&r["samples"]);
        let running = f64s(&r["running"]);
        let mean = samples.iter().sum::<f64>() / 4.0;
        assert_eq!(
            (r["probes"].as_u64(), r["batches"].as_u64()),
            (Some(4), Some(2))
        );
        assert!((r["estimate"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.abs());
        assert_eq!(running.len(), 4);
        assert_eq!(running[3], r["estimate"].as_f64().unwrap());
        assert!(r["stderr"].as_f64().unwrap() > 0.0);
        assert_eq!(r["target_tokens"], 2 * 31);
        assert!(r["top_eigenvalue"]["value"].as_f64().unwrap().is_finite());
        assert_eq!(r["config"]["method"], "fd");
    }
    // Before its decay, the WSD run's weights are the WSO run's: one measurement.
    assert_eq!(results[0]["fingerprint"], results[2]["fingerprint"]);
    assert_eq!(results[0]["estimate"], results[2]["estimate"]);
    assert_ne!(results[1]["estimate"], results[3]["estimate"]);

    let file = sb.path().join("runs/sharpness.jsonl");
    assert_eq!(lines(&file).len(), 4);
    assert_eq!(
        &std::fs::read(sb.path().join("fig.png")).unwrap()[..4],
        b"\x89PNG"
    );
    // The saved batches are the validation texts' tokens, in order.
    let batches = Tensor::read_npy(sb.path().join("batches.npy")).unwrap();
    assert_eq!(batches.dims(), [2, 1, 32]);
    let ckpt = Checkpoint::open(&sb.path().join("runs/tiny-wso/step-0000024")).unwrap();
    let tok = ckpt::tokenizer::TextTokenizer::load(&ckpt.dir, None, None, None).unwrap();
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(sb.path().join("data/synth/validation.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let ids = tok.encode(first["text"].as_str().unwrap()).unwrap();
    let saved: Vec<u32> = batches.flatten_all().unwrap().to_vec1().unwrap();
    let n = ids.len().min(32);
    assert_eq!(saved[..n], ids[..n]);

    // A rerun measures nothing and leaves the file as it was.
    let before = std::fs::read(&file).unwrap();
    let table = ok(&sharpness(
        &sb,
        &["runs"],
        &["--top-eigen", "--eigen-iters", "4"],
    ));
    assert_eq!(table.matches("done before").count(), 4, "{table}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // A killed measurement resumes at its last finished probe: drop the last result,
    // leave progress as if two probes were done (the first one marked), rerun.
    let mut kept = lines(&file);
    let last = kept.pop().unwrap();
    let text: String = kept.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let samples = f64s(&last["samples"]);
    let progress = serde_json::json!({
        "fingerprint": last["fingerprint"],
        "config_key": last["config_key"],
        "samples": [1000.0, samples[1]],
    });
    std::fs::write(
        sb.path().join("runs/sharpness.jsonl.progress.json"),
        progress.to_string(),
    )
    .unwrap();
    let args = ["--top-eigen", "--eigen-iters", "4", "--json"];
    let again: Vec<Value> = serde_json::from_str(&ok(&sharpness(&sb, &["runs"], &args))).unwrap();
    let resumed = f64s(&again[3]["samples"]);
    assert_eq!(resumed[..2], [1000.0, samples[1]]);
    for (a, b) in resumed[2..].iter().zip(&samples[2..]) {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs(),
            "probe drawn again: {a} vs {b}"
        );
    }
    assert!(!sb
        .path()
        .join("runs/sharpness.jsonl.progress.json")
        .exists());

    // Double backward through the binary agrees with the finite differences per probe.
    let exact: Vec<Value> = serde_json::from_str(&ok(&sharpness(
        &sb,
        &["runs/tiny-wso/step-0000024"],
        &["--method", "exact", "--out", "exact.jsonl", "--json"],
    )))
    .unwrap();
    let fd = f64s(&results[3]["samples"]);
    for (e, f) in f64s(&exact[0]["samples"]).iter().zip(&fd) {
        assert!(rel_err(*f, *e) < 1e-3, "fd {f} vs exact {e}");
    }
}

/// `tests/fixtures/trained/tiny-wso` (a `ckpt train` checkpoint) copied into `sb`.
fn trained_checkpoint(sb: &Sandbox, rel: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/tiny-wso");
    let dst = sb.path().join(rel);
    common::copy_dir(&src, &dst);
    dst
}

fn texts(sb: &Sandbox) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/texts.jsonl");
    let dst = sb.path().join("texts.jsonl");
    std::fs::copy(src, &dst).unwrap();
    dst
}

#[test]
fn bad_input_gives_one_clear_line_and_finished_results_stay() {
    let sb = Sandbox::new();
    trained_checkpoint(&sb, "runs/a/step-30");
    texts(&sb);
    let run = |args: &[&str]| {
        let mut all = vec!["sharpness"];
        all.extend(args);
        all.extend(["--samples", "2", "--seq-len", "16", "--max-batches", "1"]);
        sb.run(all)
    };

    let err = failed(&run(&["runs", "--data", "missing.txt"]));
    assert!(
        err.contains("missing.txt") && err.contains("no such file"),
        "{err}"
    );
    sb.write("empty.txt", "\n  \n");
    let err = failed(&run(&["runs", "--data", "empty.txt"]));
    assert!(
        err.contains("empty.txt") && err.contains("no text"),
        "{err}"
    );
    sb.write("short.txt", "tiny\n");
    let err = failed(&run(&["runs", "--data", "short.txt"]));
    assert!(
        err.contains("short.txt") && err.contains("fewer than one batch"),
        "{err}"
    );
    let err = failed(&sb.run([
        "sharpness",
        "runs",
        "--data",
        "texts.jsonl",
        "--seq-len",
        "65",
    ]));
    assert!(err.contains("max_position_embeddings (64)"), "{err}");
    sb.write("notes/readme.txt", "not a checkpoint");
    let err = failed(&run(&["notes", "--data", "texts.jsonl"]));
    assert!(
        err.contains("no checkpoint") && err.contains("notes"),
        "{err}"
    );
    let err = failed(&run(&["nowhere", "--data", "texts.jsonl"]));
    assert!(
        err.contains("nowhere") && err.contains("no such file"),
        "{err}"
    );
    let err = failed(&run(&["runs", "--data", "texts.jsonl", "--dtype", "bf16"]));
    assert!(err.contains("f32 or f64"), "{err}");

    // A checkpoint whose weights are cut short, and one whose loss is NaN: each
    // fails with its own error; the good one is measured and kept.
    let broken = trained_checkpoint(&sb, "runs/b/step-10");
    let weights = broken.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let nan = trained_checkpoint(&sb, "runs/c/step-20");
    let mut tensors =
        candle_core::safetensors::load(nan.join("model.safetensors"), &Device::Cpu).unwrap();
    let norm = "model.norm.weight";
    let poisoned = (tensors[norm].ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert(norm.into(), poisoned);
    ckpt::checkpoint::write_safetensors(&nan.join("model.safetensors"), &tensors).unwrap();

    let out = run(&["runs", "--data", "texts.jsonl"]);
    let err = failed(&out);
    assert!(
        err.contains("runs/b/step-10") && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("runs/c/step-20") && err.contains("NaN"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("runs/a/step-30"));
    let kept = lines(&sb.path().join("runs/sharpness.jsonl"));
    assert_eq!(kept.len(), 1);
    assert!(kept[0]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("runs/a/step-30"));
}

/// With `--store`, results land in the results store and a run with another output file
/// finds them there instead of measuring again.
#[test]
fn results_go_to_the_store_and_are_not_measured_twice() {
    let sb = Sandbox::new();
    common::copy_dir(
        &common::fixture_in("trained", "tiny-wso"),
        &sb.path().join("runs/wso/step-1"),
    );
    std::fs::copy(
        common::fixture_in("trained", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let args = |out: &str| {
        vec![
            "sharpness",
            "runs",
            "--data",
            "texts.jsonl",
            "--seq-len",
            "32",
            "--max-batches",
            "1",
            "--samples",
            "3",
            "--store",
            "s.sqlite",
            "--out",
            out,
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let first = sb.run_json(args("a.jsonl"));
    let second = sb.run_json(args("b.jsonl"));
    assert_eq!(first[0]["estimate"], second[0]["estimate"]);
    assert_eq!(
        first[0]["seconds"], second[0]["seconds"],
        "taken from the store, not re-measured"
    );
    let conn = rusqlite::Connection::open(sb.path().join("s.sqlite")).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM sharpness", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn blocks_top_eigenvalues_and_density_through_the_binary() {
    let sb = trained_runs();
    let more = [
        "--top-k",
        "3",
        "--lanczos-steps",
        "8",
        "--density",
        "--slq-runs",
        "2",
        "--slq-steps",
        "5",
        "--block-plot",
        "blocks.svg",
        "--density-plot",
        "density.svg",
    ];
    let mut json = vec!["--json"];
    json.extend(more);
    let results: Vec<Value> =
        serde_json::from_str(&ok(&sharpness(&sb, &["runs/tiny-wso"], &json))).unwrap();
    assert_eq!(results.len(), 2);
    let cfg = ckpt::model::ModelConfig::from_json(
        &std::fs::read_to_string(sb.path().join("runs/tiny-wso/step-0000024/config.json")).unwrap(),
    )
    .unwrap();
    let layers = cfg.num_hidden_layers;
    for r in &results {
        let samples = f64s(&r["samples"]);
        let blocks = r["blocks"].as_array().unwrap();
        // embed, 3 blocks per layer, final norm (tied head: no head block).
        assert_eq!(blocks.len(), 3 * layers + 2, "{blocks:?}");
        assert_eq!(blocks[0]["name"], "embed");
        for (i, sample) in samples.iter().enumerate() {
            let parts: f64 = blocks.iter().map(|b| f64s(&b["samples"])[i]).sum();
            assert!((parts - sample).abs() <= 1e-9 * sample.abs(), "probe {i}");
        }
        let top = f64s(&r["top_eigenvalues"]["values"]);
        assert_eq!(top.len(), 3);
        assert!(top[0] >= top[1] && top[1] >= top[2], "{top:?}");
        assert_eq!(r["top_eigenvalues"]["steps"], 8);
        let runs = r["density"]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let weights: f64 = run
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["weight"].as_f64().unwrap())
                .sum();
            assert!((weights - 1.0).abs() < 1e-9);
        }
        // The density's largest node is at most the top eigenvalue (both are Ritz
        // values of the same Hessian, the top from more steps).
        let max_node = runs
            .iter()
            .flat_map(|run| {
                run.as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["value"].as_f64().unwrap())
            })
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            max_node <= top[0] * (1.0 + 1e-6) + 1e-9,
            "{max_node} > {}",
            top[0]
        );
        assert_eq!(r["density"]["dimension"], r["parameters"]);
    }
    let heat = std::fs::read_to_string(sb.path().join("blocks.svg")).unwrap();
    assert!(
        heat.contains("tiny-wso") && heat.contains("layer"),
        "heat map"
    );
    let density = std::fs::read_to_string(sb.path().join("density.svg")).unwrap();
    assert!(density.contains("tiny-wso (wso) @ 24"), "density legend");

    // The per-block table, and a rerun measures nothing.
    let mut table = vec!["--blocks"];
    table.extend(more);
    let text = ok(&sharpness(&sb, &["runs/tiny-wso"], &table));
    assert!(
        text.contains("layers.0.mlp") && text.contains("done before"),
        "{text}"
    );
    assert!(text.contains("top eigenvalues (Lanczos)"), "{text}");

    // The spectrum resumes like the probes: a killed measurement's progress (its probes
    // with their block parts, its top eigenvalues, its first SLQ run) is taken as it is,
    // marked here so that a recomputation would show, and only the second run is drawn.
    let file = sb.path().join("runs/tiny-wso/sharpness.jsonl");
    let mut kept = lines(&file);
    let last = kept.pop().unwrap();
    let text: String = kept.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let marked_run = serde_json::json!([{"value": 42.0, "weight": 1.0}]);
    let mut top = last["top_eigenvalues"].clone();
    top["values"][0] = 111.0.into();
    let blocks: Vec<Value> = last["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| serde_json::json!({"name": b["name"], "samples": b["samples"]}))
        .collect();
    let progress = serde_json::json!({
        "fingerprint": last["fingerprint"],
        "config_key": last["config_key"],
        "samples": last["samples"],
        "blocks": blocks,
        "top_eigenvalues": top,
        "density_runs": [marked_run],
    });
    std::fs::write(
        sb.path()
            .join("runs/tiny-wso/sharpness.jsonl.progress.json"),
        progress.to_string(),
    )
    .unwrap();
    let again: Vec<Value> =
        serde_json::from_str(&ok(&sharpness(&sb, &["runs/tiny-wso"], &json))).unwrap();
    let resumed = &again[1];
    assert_eq!(resumed["samples"], last["samples"]);
    assert_eq!(resumed["top_eigenvalues"]["values"][0], 111.0);
    let runs = resumed["density"]["runs"].as_array().unwrap();
    assert_eq!((runs.len(), &runs[0]), (2, &marked_run));
    assert_eq!(runs[1], last["density"]["runs"][1], "run 2 drawn as before");
}

#[test]
fn measures_the_pretraining_and_sft_sets_apart_with_the_assistant_tokens_as_loss() {
    let sb = trained_runs();
    let ckpt_dir = "runs/tiny-wso/step-0000024";
    let args = [
        "sharpness",
        ckpt_dir,
        "--data",
        "pt=data/synth/validation.jsonl",
        "--data",
        "sft=data/synth/sft.jsonl",
        "--seq-len",
        "32",
        "--max-batches",
        "2",
        "--samples",
        "3",
        "--plot",
        "fig.png",
        "--save-batches",
        "batches.json",
        "--json",
    ];
    let results: Vec<Value> = serde_json::from_str(&ok(&sb.run(args))).unwrap();
    let sets: Vec<&str> = results
        .iter()
        .map(|r| r["config"]["set"].as_str().unwrap())
        .collect();
    assert_eq!(sets, ["pt", "sft"]);
    let (pt, sft) = (&results[0], &results[1]);
    assert_ne!(pt["config_key"], sft["config_key"]);
    assert_eq!(pt["target_tokens"], 2 * 31);
    let sft_targets = sft["target_tokens"].as_u64().unwrap();
    assert!(sft_targets > 0 && sft_targets < 2 * 31, "{sft_targets}");
    assert!(sft["estimate"].as_f64().unwrap().is_finite());
    for set in ["pt", "sft"] {
        let png = std::fs::read(sb.path().join(format!("fig.{set}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "Figure 3's {set} panel");
    }

    // The SFT rows are the conversations rendered with the checkpoint's template, and
    // the tokens the loss counts are the assistant's: decoded, they are the assistant's
    // messages (each closed by EOS), in order.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path().join("batches.1.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(saved["batches"][0][0].clone()).unwrap();
    let mask: Vec<f32> = serde_json::from_value(saved["loss_mask"][0][0].clone()).unwrap();
    let tok = ckpt::train::data::tokenizer::TrainTokenizer::load(
        &sb.path().join(ckpt_dir),
        &ckpt::chat::TemplateChoice::Own,
    )
    .unwrap();
    let learned: Vec<u32> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m > 0.0)
        .map(|(&id, _)| id)
        .collect();
    let text = tok.decode(&learned).unwrap();
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(sb.path().join("data/synth/sft.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let answer = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let expected: Vec<&str> = answer.split_whitespace().take(words.len().min(3)).collect();
    assert_eq!(
        words[..expected.len()],
        expected[..],
        "{text:?} vs {answer:?}"
    );
    assert!(
        !text.contains("Tell me"),
        "a user turn counted in the loss: {text:?}"
    );

    // Several sets must be named.
    let out = sb.run([
        "sharpness",
        ckpt_dir,
        "--data",
        "pt=data/synth/validation.jsonl",
        "--data",
        "data/synth/sft.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(failed(&out).contains("name each"), "{}", failed(&out));
}
