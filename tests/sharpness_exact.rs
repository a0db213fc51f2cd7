//! Sharpness (Hutchinson's trace of the Hessian) checked in process against independent
//! references: closed-form Hessians (logistic regression, a non-quadratic), PyTorch's
//! double backward on a tiny Llama (`scripts/make_sharpness_fixture.py`), and the
//! Lanczos/SLQ spectrum against the tiny Llama's exact Hessian.
//!
//! Exact Hessian-vector products need candle to keep the gradient graph, a mode that
//! has to be set before any thread starts (`CANDLE_GRAD_DO_NOT_DETACH`, read once per
//! thread). So this target has its own `main` (`harness = false` in Cargo.toml), which
//! sets the mode first, as `ckpt sharpness --method exact` does, then runs the checks
//! one after another. The end-to-end checks through the binary are in `sharpness.rs`.

use candle_core::{DType, Device, Tensor};
use ckpt::checkpoint::Checkpoint;
use ckpt::sharpness::hutchinson::{BlockMap, TraceEstimate};
use ckpt::sharpness::spectrum::{slq_density, top_eigenvalues};
use ckpt::sharpness::vector::{self, rademacher};
use ckpt::sharpness::{
    hutchinson_trace, top_eigenvalue, Hessian, LlamaObjective, Method, Objective, TraceOptions,
};
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

fn main() {
    ckpt::sharpness::keep_gradient_graphs_from_start();
    let checks: &[(&str, fn())] = &[
        (
            "both_methods_give_the_closed_form_hessian_vector_product_of_logistic_regression",
            both_methods_give_the_closed_form_hessian_vector_product_of_logistic_regression,
        ),
        (
            "hutchinson_converges_to_the_exact_trace_within_its_standard_error",
            hutchinson_converges_to_the_exact_trace_within_its_standard_error,
        ),
        (
            "power_iteration_finds_the_largest_eigenvalue",
            power_iteration_finds_the_largest_eigenvalue,
        ),
        (
            "the_tiny_llamas_trace_blocks_top_eigenvalues_and_density_match_its_exact_hessian",
            the_tiny_llamas_trace_blocks_top_eigenvalues_and_density_match_its_exact_hessian,
        ),
        (
            "both_methods_reproduce_pytorch_double_backward_per_probe",
            both_methods_reproduce_pytorch_double_backward_per_probe,
        ),
        (
            "probes_are_rademacher_and_the_fixture_is_small",
            probes_are_rademacher_and_the_fixture_is_small,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, check) in checks {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        check();
        ran += 1;
        println!(
            "test {name} ... ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}
