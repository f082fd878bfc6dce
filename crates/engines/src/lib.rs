//! The builder (`skyreels-build`): turns an engine directory's exported ONNX graphs into artifacts
//! for one backend ahead of time and records the build in `manifest.yaml` (`docs/ENGINES.md`).
//! The runtime then loads the built graphs and refuses a build for another backend, GPU or ONNX
//! Runtime version (`skyreels_runtime::engine`).

pub mod build;
pub mod error;
pub mod operators;
pub mod plan;
pub mod profile;

pub use build::{BuildReport, BuiltGraph, build};
pub use error::{BuildError, Result};
pub use plan::{BuildOptions, BuildPlan, Precision, Target};
pub use skyreels_runtime::requirements;
