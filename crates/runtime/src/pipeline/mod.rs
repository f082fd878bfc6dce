//! Generation pipelines over an engine directory: plan, sample windows, decode, write.

pub mod plan;
pub mod segments;
