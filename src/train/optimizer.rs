//! AdamW with decoupled weight decay, parameter groups, global-norm clipping and
//! gradient accumulation, whose state saves to `optimizer.safetensors`.
//!
//! Candle ships an AdamW, but it cannot save its moments (so a run cannot resume
//! exactly) and it decays every parameter, norms and biases included. The update here
//! follows PyTorch's `torch.optim.AdamW` step for step:
//!
//! ```text
//! p <- p * (1 - lr * wd)                       (decoupled decay, only in the decay group)
//! m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
//! p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```
//!
//! Master weights and moments are f32. On the CPU the update is one fused pass over
//! each parameter (candle would allocate a temporary per elementary op); elsewhere it is
//! composed from candle ops so it runs on any device.

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// File name of the optimizer state inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Name of the scalar tensor holding the number of steps taken.
const STEP_TENSOR: &str = "step";

/// The recipe's `[optimizer]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Only `adamw` for now; the key exists so recipes say what they mean.
    pub(crate) name: String,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
    pub weight_decay: f64,
    /// Global-norm clipping threshold; 0 turns clipping off.
    pub(crate) grad_clip: f64,
    /// Parameters whose name contains any of these strings get no weight decay.
    pub(crate) no_decay: Vec<String>,
}

impl Default for OptimizerConfig {
    /// The paper's pre-training optimizer.
    fn default() -> Self {
        Self {
            name: "adamw".into(),
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            no_decay: vec!["norm".into(), "bias".into()],
        }
    }
}

impl OptimizerConfig {
    /// Checks every value, naming the key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::bad_value(
                format!("optimizer.{key}"),
                format!("optimizer.{key} {why}"),
            ))
        };
        if self.name != "adamw" {
            return bad(
                "name",
                format!("= {:?}: only \"adamw\" is supported", self.name),
            );
        }
        for (key, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return bad(key, format!("= {value} is outside [0, 1)"));
            }
        }
        for (key, value) in [
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("grad_clip", self.grad_clip),
        ] {
            if !value.is_finite() || value < 0.0 {
                return bad(key, format!("= {value} must be finite and >= 0"));
            }
        }
        // Decoupled decay multiplies the weights by 1 - lr x weight_decay each step.
        if self.weight_decay > 1.0 {
            return bad(
                "weight_decay",
                format!(
                    "= {} is above 1 (AdamW's usual range is 0 to 0.1)",
                    self.weight_decay
                ),
            );
        }
        Ok(())
    }

    fn decays(&self, name: &str) -> bool {
        self.weight_decay > 0.0 && !self.no_decay.iter().any(|p| name.contains(p.as_str()))
    }
}

/// What one optimizer step did, for the metrics log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor gradients were scaled by (1 when not clipped).
    pub(crate) clip_scale: f64,
}

/// Exponential moving averages of one parameter's gradient and squared gradient.
enum Moments {
    /// CPU: plain vectors, updated in the fused pass.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Any other device: tensors, updated with candle ops.
    Device { m: Tensor, v: Tensor },
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// AdamW over named f32 variables.
pub struct AdamW {
    cfg: OptimizerConfig,
    params: Vec<Param>,
    /// Optimizer steps taken so far (PyTorch's `state["step"]`).
    steps: u64,
}

impl AdamW {
    /// An optimizer with zero moments over `vars` (f32, on one device).
    pub fn new(cfg: OptimizerConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        cfg.validate()?;
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    return Err(Error::Invalid(format!(
                        "{name}: master weights must be f32, got {:?}",
                        var.dtype()
                    )));
                }
                let moments = zero_moments(var.as_tensor())?;
                Ok(Param {
                    decay: cfg.decays(&name),
                    name,
                    var,
                    moments,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            params,
            steps: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Names of the parameters that get weight decay.
    pub fn decayed_names(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// One update with learning rate `lr` from the (already accumulated) gradients.
    /// A parameter without a gradient is left alone, like PyTorch does.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepReport> {
        let grad_norm = global_norm(self.params.iter().filter_map(|p| grads.get(&p.var)))?;
        // Refuse before touching any weight, so the last good state survives.
        if !grad_norm.is_finite() {
            return Err(Error::NonFinite {
                what: "the gradient norm",
                value: grad_norm,
                step: self.steps + 1,
            });
        }
        let clip_scale = if self.cfg.grad_clip > 0.0 && grad_norm > self.cfg.grad_clip {
            // PyTorch's clip_grad_norm_: max_norm / (total_norm + 1e-6).
            self.cfg.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let hyper = Hyper::new(&self.cfg, lr, self.steps, clip_scale);
        for p in &mut self.params {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            update(p, grad, &hyper).map_err(|e| {
                Error::Invalid(format!(
                    "optimizer step for {}: {}",
                    p.name,
                    crate::error::candle_message(&e)
                ))
            })?;
        }
        Ok(StepReport {
            grad_norm,
            clip_scale,
        })
    }

    /// Writes the moments and step count to `path` (safetensors), atomically. Tensor
    /// names are `<param>.exp_avg` and `<param>.exp_avg_sq`, as in PyTorch's state, and
    /// `step` (i64 scalar).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for p in &self.params {
            let (m, v) = p.moments_as_tensors()?;
            tensors.insert(format!("{}.exp_avg", p.name), m);
            tensors.insert(format!("{}.exp_avg_sq", p.name), v);
        }
        // The step count is a tensor, not metadata: safetensors writes its metadata map
        // in hash order, and one key keeps the file byte-for-byte reproducible.
        let steps =
            i64::try_from(self.steps).map_err(|_| Error::Invalid("step overflow".into()))?;
        tensors.insert(
            STEP_TENSOR.to_string(),
            Tensor::new(steps, &candle_core::Device::Cpu)?,
        );
        let metadata = HashMap::from([("format".to_string(), "ckpt-adamw".to_string())]);
        crate::checkpoint::write_safetensors_with_metadata(path, &tensors, metadata)
    }

    /// Restores moments and step count written by [`AdamW::save`]. Every parameter must
    /// be present with its own shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = crate::error::read_file(path)?;
        let dev = self.params.first().map(|p| p.var.device().clone());
        let dev = dev.unwrap_or(candle_core::Device::Cpu);
        let mut stored = candle_core::safetensors::load_buffer(&bytes, &dev)
            .map_err(|e| Error::bad_file(path, crate::error::candle_message(&e)))?;
        let steps = stored
            .remove(STEP_TENSOR)
            .and_then(|t| t.to_dtype(DType::I64).ok()?.to_scalar::<i64>().ok())
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| Error::bad_file(path, format!("no `{STEP_TENSOR}` scalar")))?;
        for p in &mut self.params {
            let mut take = |suffix: &str| {
                let key = format!("{}.{suffix}", p.name);
                let t = stored
                    .remove(&key)
                    .ok_or_else(|| Error::bad_file(path, format!("missing tensor {key}")))?;
                if t.dims() != p.var.dims() || t.dtype() != DType::F32 {
                    return Err(Error::bad_file(
                        path,
                        format!(
                            "{key} is {:?} {:?}, the parameter is F32 {:?}",
                            t.dtype(),
                            t.dims(),
                            p.var.dims()
                        ),
                    ));
                }
                Ok(t)
            };
            let (m, v) = (take("exp_avg")?, take("exp_avg_sq")?);
            p.moments = moments_from(m, v).map_err(Error::Candle)?;
        }
        self.steps = steps;
        Ok(())
    }
}

impl Param {
    fn moments_as_tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok(match &self.moments {
            Moments::Host { m, v } => {
                let shape = self.var.shape();
                let cpu = &candle_core::Device::Cpu;
                (
                    Tensor::from_slice(m, shape, cpu)?,
                    Tensor::from_slice(v, shape, cpu)?,
                )
            }
            Moments::Device { m, v } => (m.clone(), v.clone()),
        })
    }
}

fn zero_moments(param: &Tensor) -> candle_core::Result<Moments> {
    moments_from(param.zeros_like()?, param.zeros_like()?)
}

fn moments_from(m: Tensor, v: Tensor) -> candle_core::Result<Moments> {
    Ok(if m.device().is_cpu() {
        Moments::Host {
            m: m.flatten_all()?.to_vec1()?,
            v: v.flatten_all()?.to_vec1()?,
        }
    } else {
        Moments::Device { m, v }
    })
}

/// `sqrt(sum of squares)` over all gradients, accumulated in f64.
fn global_norm<'a>(grads: impl Iterator<Item = &'a Tensor>) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads {
        let g = g.to_dtype(DType::F32)?;
        sum += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}

/// The scalars of one update, computed once per step.
#[derive(Debug, Clone, Copy)]
struct Hyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Bias corrections `1 - beta^t`.
    correction1: f64,
    correction2: f64,
    clip_scale: f64,
}

impl Hyper {
    fn new(cfg: &OptimizerConfig, lr: f64, step: u64, clip_scale: f64) -> Self {
        let t = step as i32;
        Self {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            correction1: 1.0 - cfg.beta1.powi(t),
            correction2: 1.0 - cfg.beta2.powi(t),
            clip_scale,
        }
    }
}

fn update(p: &mut Param, grad: &Tensor, h: &Hyper) -> candle_core::Result<()> {
    let wd = if p.decay { h.weight_decay } else { 0.0 };
    let grad = grad.to_dtype(DType::F32)?;
    match &mut p.moments {
        Moments::Host { m, v } => {
            let op = FusedAdamW {
                h: *h,
                wd,
                moments: Mutex::new((m, v)),
            };
            p.var.as_tensor().inplace_op2(&grad.contiguous()?, &op)
        }
        Moments::Device { m, v } => {
            let (new_p, new_m, new_v) = composed_update(p.var.as_tensor(), &grad, m, v, h, wd)?;
            *m = new_m;
            *v = new_v;
            p.var.set(&new_p)
        }
    }
}

/// The update from candle ops: runs on any device.
fn composed_update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &Hyper,
    wd: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let g = (grad * h.clip_scale)?;
    let m = ((m * h.beta1)? + (&g * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let denom = ((&v / h.correction2)?.sqrt()? + h.eps)?;
    let step = ((&m / h.correction1)? / denom)?;
    let decayed = (param * (1.0 - h.lr * wd))?;
    let new_p = (decayed - (step * h.lr)?)?;
    Ok((new_p, m, v))
}

/// The whole update of one CPU parameter in one pass over its elements.
struct FusedAdamW<'a> {
    h: Hyper,
    wd: f64,
    /// Interior mutability: candle hands the op to the kernel by shared reference.
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl candle_core::InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (param, grad) else {
            candle_core::bail!("fused AdamW needs f32 parameters and gradients");
        };
        let (Some((p0, p1)), Some((g0, g1))) =
            (param_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle_core::bail!("fused AdamW needs contiguous tensors");
        };
        let mut guard = self.moments.lock().expect("moments lock");
        let (m, v) = &mut *guard;
        adamw_slices(&mut param[p0..p1], &grad[g0..g1], m, v, &self.h, self.wd);
        Ok(())
    }
}

/// The AdamW update over slices, in f32 with the scalars in f64 rounded once, as
/// PyTorch's single-tensor implementation does.
fn adamw_slices(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper, wd: f64) {
    let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
    let decay = (1.0 - h.lr * wd) as f32;
    let clip = h.clip_scale as f32;
    let step_size = (h.lr / h.correction1) as f32;
    let sqrt_c2 = h.correction2.sqrt() as f32;
    let eps = h.eps as f32;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * clip;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / sqrt_c2 + eps;
        *p = *p * decay - step_size * *m / denom;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn vars(dev: &Device) -> Vec<(String, Var)> {
        let w = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], dev).unwrap();
        let b = Tensor::new(&[0.1f32, -0.2], dev).unwrap();
        vec![
            ("layer.weight".into(), Var::from_tensor(&w).unwrap()),
            ("layer.bias".into(), Var::from_tensor(&b).unwrap()),
        ]
    }

    fn loss(vars: &[(String, Var)]) -> Tensor {
        let x = Tensor::new(&[[1.0f32, 2.0], [-3.0, 0.5]], vars[0].1.device()).unwrap();
        let y = x
            .matmul(&vars[0].1.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(vars[1].1.as_tensor())
            .unwrap();
        y.sqr().unwrap().sum_all().unwrap()
    }

    /// Reference AdamW in f64, written from the formula in the module docs.
    fn reference(
        params: &mut [f64],
        grads: &[f64],
        state: &mut [(f64, f64)],
        t: i32,
        lr: f64,
        wd: f64,
        clip: f64,
    ) {
        for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            let g = g * clip;
            *p *= 1.0 - lr * wd;
            *m = 0.9 * *m + 0.1 * g;
            *v = 0.95 * *v + 0.05 * g * g;
            let mhat = *m / (1.0 - 0.9f64.powi(t));
            let vhat = *v / (1.0 - 0.95f64.powi(t));
            *p -= lr * mhat / (vhat.sqrt() + 1e-8);
        }
    }

    #[test]
    fn matches_the_formula_with_groups_and_clipping() {
        let dev = Device::Cpu;
        let vars = vars(&dev);
        let mut opt = AdamW::new(OptimizerConfig::default(), vars.clone()).unwrap();
        assert_eq!(opt.decayed_names(), vec!["layer.weight"]);
        let mut w: Vec<f64> = vec![0.5, -1.0, 2.0, 0.25];
        let mut b: Vec<f64> = vec![0.1, -0.2];
        let (mut sw, mut sb) = (vec![(0.0, 0.0); 4], vec![(0.0, 0.0); 2]);
        for t in 1..=3 {
            let grads = loss(&vars).backward().unwrap();
            let gw: Vec<f64> = grads
                .get(&vars[0].1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            let gb: Vec<f64> = grads
                .get(&vars[1].1)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            let norm = gw.iter().chain(&gb).map(|g| g * g).sum::<f64>().sqrt();
            let report = opt.step(&grads, 1e-2).unwrap();
            assert!((report.grad_norm - norm).abs() < 1e-4 * norm);
            let clip = if norm > 1.0 { 1.0 / (norm + 1e-6) } else { 1.0 };
            assert!((report.clip_scale - clip).abs() < 1e-6);
            reference(&mut w, &gw, &mut sw, t, 1e-2, 0.1, clip);
            reference(&mut b, &gb, &mut sb, t, 1e-2, 0.0, clip);
            let got: Vec<f32> = vars[0].1.flatten_all().unwrap().to_vec1().unwrap();
            for (g, r) in got.iter().zip(&w) {
                assert!((*g as f64 - r).abs() < 1e-5, "step {t}: {g} vs {r}");
            }
            let got: Vec<f32> = vars[1].1.to_vec1().unwrap();
            for (g, r) in got.iter().zip(&b) {
                assert!((*g as f64 - r).abs() < 1e-5, "step {t}: {g} vs {r}");
            }
        }
    }

    #[test]
    fn fused_and_composed_updates_agree() {
        let dev = Device::Cpu;
        let (fused, composed) = (vars(&dev), vars(&dev));
        let mut a = AdamW::new(OptimizerConfig::default(), fused.clone()).unwrap();
        let mut b = AdamW::new(OptimizerConfig::default(), composed.clone()).unwrap();
        for p in &mut b.params {
            let (m, v) = p.moments_as_tensors().unwrap();
            p.moments = Moments::Device { m, v };
        }
        for _ in 0..4 {
            a.step(&loss(&fused).backward().unwrap(), 3e-2).unwrap();
            b.step(&loss(&composed).backward().unwrap(), 3e-2).unwrap();
        }
        for (x, y) in fused.iter().zip(&composed) {
            let d = (x.1.as_tensor() - y.1.as_tensor()).unwrap().abs().unwrap();
            let max: f32 = d
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(max < 1e-6, "{}: {max}", x.0);
        }
    }

    #[test]
    fn state_round_trips_and_resumes_exactly() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OPTIMIZER_FILE);
        let straight = vars(&dev);
        let mut a = AdamW::new(OptimizerConfig::default(), straight.clone()).unwrap();
        for _ in 0..2 {
            a.step(&loss(&straight).backward().unwrap(), 1e-2).unwrap();
        }
        a.save(&path).unwrap();
        // A second optimizer over a copy of the weights, restored from the file.
        let copy: Vec<(String, Var)> = straight
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(),
                )
            })
            .collect();
        let mut b = AdamW::new(OptimizerConfig::default(), copy.clone()).unwrap();
        b.load(&path).unwrap();
        assert_eq!(b.steps(), 2);
        for _ in 0..2 {
            a.step(&loss(&straight).backward().unwrap(), 1e-2).unwrap();
            b.step(&loss(&copy).backward().unwrap(), 1e-2).unwrap();
        }
        for (x, y) in straight.iter().zip(&copy) {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                x.1.flatten_all().unwrap().to_vec1().unwrap(),
                y.1.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(x, y, "resumed weights must be bit-identical");
        }
    }

    #[test]
    fn rejects_bad_state_files_and_values() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OPTIMIZER_FILE);
        std::fs::write(&path, b"junk").unwrap();
        let mut opt = AdamW::new(OptimizerConfig::default(), vars(&dev)).unwrap();
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(err.contains(OPTIMIZER_FILE), "{err}");

        let other = vec![("other.weight".to_string(), vars(&dev)[0].1.clone())];
        AdamW::new(OptimizerConfig::default(), other)
            .unwrap()
            .save(&path)
            .unwrap();
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(err.contains("missing tensor layer.weight.exp_avg"), "{err}");

        let cfg = OptimizerConfig {
            beta2: 1.0,
            ..Default::default()
        };
        let err = AdamW::new(cfg, vars(&dev)).err().unwrap().to_string();
        assert!(err.contains("optimizer.beta2"), "{err}");
    }
}
