//! Sharpness: the trace of the Hessian of the mean next-token loss over held-out texts
//! (DESIGN.md section 8; the paper's Definition 6.1 and Appendix H).
//!
//! ```text
//! texts --data--> token batches --objective--> loss(theta)
//!       --hvp--> H v (finite differences | double backward)
//!       --hutchinson--> Tr(H) +- stderr, running mean   (--power--> top eigenvalue)
//!       --spectrum--> top-k eigenvalues, spectral density (Lanczos, SLQ)
//!       --results--> JSONL keyed by (fingerprint, config)   --figure--> Figure 3
//! ```
//!
//! Cost of one probe with finite differences: two gradient evaluations (one forward and
//! one backward each) per batch, and memory for the parameters, the probe, the shifted
//! parameters and a gradient (4 copies of the weights) plus one training step's
//! activations. The exact path adds the graph of the first backward and runs composite
//! kernels.

pub mod data;
pub(crate) mod figure;
pub mod hutchinson;
pub mod hvp;
pub mod job;
pub(crate) mod measure;
pub(crate) mod objective;
pub(crate) mod power;
pub(crate) mod results;
pub(crate) mod sets;
pub mod sft;
pub mod spectrum;
pub mod vector;

pub use data::{DataOptions, TokenBatches};
pub use hutchinson::{hutchinson_trace, TraceEstimate, TraceOptions};
pub use hvp::{keep_gradient_graphs_from_start, with_graph_kept, Hessian, Method, Objective};
pub use job::{SftPlot, SharpnessJob, SharpnessOutcome};
pub use measure::{
    measure_all, measure_revisions, measure_units, Event, Outcome, SharpnessOptions, Unit,
};
pub use objective::LlamaObjective;
pub use power::{top_eigenvalue, TopEigen};
pub use results::{ResultsFile, SharpnessConfig, SharpnessResult};
pub use spectrum::{
    lanczos, slq_density, top_eigenvalues, Node, Operator, SpectralDensity, TopEigenvalues,
    Tridiagonal,
};
