//! A small typed ONNX graph builder: every op is wired through a method that infers and checks
//! shapes on the spot, so a mistake reads ``blocks.3.ffn: MatMul inner dims 64 vs 32`` at export
//! time instead of an opaque failure inside ONNX Runtime. Weights live in ONNX external data.
//!
//! The protobuf types in [`proto`] are generated once from `proto/onnx.proto` (ONNX 1.23.2) by
//! `tools/onnx-proto-gen` and committed, as tract does, so builds need no `protoc`.

mod builder;
mod dtype;
mod dump;
mod error;
mod model;
mod ops;
mod shape;

#[allow(clippy::all, unreachable_pub, missing_docs)]
#[rustfmt::skip]
pub mod proto {
    //! Prost types generated from `onnx.proto`.
    include!("onnx_proto.rs");
}

pub use builder::{ExternalData, Graph, Value};
pub use dtype::DType;
pub use dump::dump_model;
pub use error::GraphError;
pub use model::{Model, OPSET_DEFAULT, OPSET_MICROSOFT};
pub use ops::{AttentionBias, GeluApproximation};
pub use shape::{Dim, Shape};

/// Result alias for graph-building operations.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;
