//! The sharpness objective of a Llama checkpoint: the mean next-token loss of fixed
//! token batches, as a function of every parameter.
//!
//! Tied embeddings are one parameter (the embedding matrix, also the output
//! projection), as in the trained model.

use super::hvp::Objective;
use super::vector::ParamVector;
use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
use crate::model::{parameter_shapes, Model, ModelConfig};
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
        })
    }

    /// Parameter names, in the order of the parameter vectors.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parameter shapes, in the same order.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
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
        Ok(self.model(params, twice)?.next_token_loss(ids)?)
    }
}
