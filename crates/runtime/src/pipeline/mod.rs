//! Generation pipelines over an engine directory: plan, sample windows, decode, write.

pub mod denoiser;
pub mod plan;
pub mod sampler;
pub mod segments;
