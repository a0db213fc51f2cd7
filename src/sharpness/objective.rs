//! The sharpness objective of a Llama checkpoint: the mean next-token loss of fixed
//! token batches, as a function of every parameter.
//!
//! Tied embeddings are one parameter (the embedding matrix, also the output
//! projection), as in the trained model.

use super::hutchinson::BlockMap;
use super::hvp::Objective;
use super::vector::ParamVector;
use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
use crate::model::{parameter_blocks, parameter_shapes, Model, ModelConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

/// Mean next-token loss of `batches` (each `[rows, seq]` u32 ids) under a Llama.
pub struct LlamaObjective {
    config: ModelConfig,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    dtype: DType,
    device: Device,
    batches: Vec<Tensor>,
    /// Conversations: each batch's target weights `[rows, seq - 1]` and their sum.
    masks: Option<Vec<(Tensor, f64)>>,
}

impl LlamaObjective {
    /// The objective of a model with `config` on token batches (row-major ids, each
    /// `rows x seq_len`), computed in `dtype` on `device`.
    pub fn new(
        config: &ModelConfig,
        batches: &[Vec<u32>],
        rows: usize,
        seq_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (names, shapes) = parameter_shapes(config).into_iter().unzip();
        let batches = batches
            .iter()
            .map(|ids| Ok(Tensor::from_slice(ids, (rows, seq_len), device)?))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            names,
            shapes,
            dtype,
            device: device.clone(),
            batches,
            masks: None,
        })
    }

    /// The loss of each batch is the mean over the targets `masks` weigh (row-major
    /// `[rows, seq_len]` per batch, the SFT convention: entry `i` weighs token `i` as a
    /// target), as SFT trains on the assistant's tokens only.
    pub(crate) fn with_masks(mut self, masks: &[Vec<f32>]) -> Result<Self> {
        let (rows, seq) = self.batches.first().map_or(Ok((0, 0)), |b| b.dims2())?;
        if masks.len() != self.batches.len() {
            return Err(Error::Invalid(format!(
                "{} loss masks for {} batches",
                masks.len(),
                self.batches.len()
            )));
        }
        let weights = masks
            .iter()
            .map(|m| {
                let w = Tensor::from_slice(m, (rows, seq), &self.device)?
                    .narrow(1, 1, seq - 1)?
                    .to_dtype(self.dtype)?;
                let total = w.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
                if total <= 0.0 {
                    return Err(Error::Invalid("a batch has no target to weigh".into()));
                }
                Ok((w, total))
            })
            .collect::<Result<_>>()?;
        self.masks = Some(weights);
        Ok(self)
    }

    /// Parameter names, in the order of the parameter vectors.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parameter shapes, in the same order.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The block of each parameter (embeddings, each layer's attention, MLP and norms,
    /// the final norm, the head).
    pub fn blocks(&self) -> BlockMap {
        BlockMap::new(&parameter_blocks(&self.config))
    }

    /// The checkpoint's parameters, in [`Self::names`] order, in this objective's dtype.
    pub fn load_parameters(&self, ckpt: &Checkpoint) -> Result<ParamVector> {
        let weights = ckpt.weights()?;
        checkpoint::validate_shapes(&self.config, &weights)?;
        self.names
            .iter()
            .map(|name| {
                checkpoint::load_parameter(&self.config, &weights, name, self.dtype, &self.device)
            })
            .collect()
    }

    /// The model over `params` with the kernels the pass needs.
    fn model(&self, params: &[Tensor], twice: bool) -> Result<Model> {
        if params.len() != self.names.len() {
            return Err(Error::Invalid(format!(
                "{} parameter tensors for a model of {}",
                params.len(),
                self.names.len()
            )));
        }
        let tensors: HashMap<String, Tensor> = self
            .names
            .iter()
            .cloned()
            .zip(params.iter().cloned())
            .collect();
        let vb = VarBuilder::from_tensors(tensors, self.dtype, &self.device);
        let mut model = Model::load(&self.config, vb)?;
        if twice {
            model.set_twice_differentiable(true);
        } else {
            model.set_differentiable(true);
        }
        Ok(model)
    }
}

impl Objective for LlamaObjective {
    fn num_batches(&self) -> usize {
        self.batches.len()
    }

    fn loss(&self, params: &[Tensor], batch: usize, twice: bool) -> Result<Tensor> {
        let ids = self
            .batches
            .get(batch)
            .ok_or_else(|| Error::Invalid(format!("batch {batch} of {}", self.batches.len())))?;
        let model = self.model(params, twice)?;
        match &self.masks {
            None => Ok(model.next_token_loss(ids)?),
            Some(masks) => {
                let (weights, total) = &masks[batch];
                let losses = model.next_token_losses(ids)?;
                Ok(((losses * weights)?.sum_all()? / *total)?)
            }
        }
    }
}
