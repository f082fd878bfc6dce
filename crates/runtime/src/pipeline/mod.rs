//! Generation pipelines over an engine directory: plan, sample windows, decode, write.

pub mod defaults;
pub mod denoiser;
pub mod generate;
pub mod image_condition;
pub mod limits;
pub mod plan;
pub mod progress;
pub mod sampler;
pub mod schedule;
pub mod segments;
