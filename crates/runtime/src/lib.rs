//! The runtime: loads an engine directory and runs SkyReels-V2 pipelines on ONNX Runtime.
//! It depends on neither the exporter nor the builder, so the deployed binary stays small.

pub mod components;
pub mod cuda_arena;
pub mod device_upload;
pub mod direct_allocator;
pub mod dit;
pub mod engine;
pub mod engine_info;
pub mod error;
pub mod image;
pub mod interrupt;
pub mod job;
pub mod loaded_libraries;
pub mod logging;
pub mod noise;
pub mod onnxruntime;
pub mod output;
pub mod parallel;
pub mod pipeline;
pub mod requirements;
pub mod scheduler;
pub mod session;
pub mod snapshot;
pub mod teacache;
pub mod tensor;
pub mod tensor_file;
pub mod text;
pub mod text_layers;
pub mod text_placement;
pub mod timestep_matrix;
pub mod vae;
pub mod vae_tiling;

pub use error::{Result, RuntimeError};
pub use tensor::Tensor;
