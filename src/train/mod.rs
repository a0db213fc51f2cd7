//! Training: the data pipeline (more trainer modules join as they are written).

pub mod data;
