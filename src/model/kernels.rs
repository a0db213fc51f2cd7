//! Which kernels a forward pass runs: the one switch between inference, training and
//! exact Hessian-vector products.

/// Which kernels a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// candle's fused kernels: fastest, no gradient.
    Inference,
    /// Our fused kernels with a backward pass (training).
    Trainable,
    /// candle's elementary ops only: the backward is itself differentiable when candle
    /// keeps the gradient graph (`CANDLE_GRAD_DO_NOT_DETACH`).
    Composite,
}

impl Kernels {
    pub(crate) fn differentiable(self) -> bool {
        self != Kernels::Inference
    }
}
