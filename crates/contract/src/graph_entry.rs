//! One ONNX graph of an engine and its tensor signature, as every component's manifest entry
//! lists them (the DiT's, the VAE's, the text and image encoders').

use serde::{Deserialize, Serialize};

/// One tensor in a graph's signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Value name (see [`crate::io`]).
    pub name: String,
    /// Element type: `float32`, `float16`, `bfloat16`, `int64`.
    pub dtype: String,
    /// Dims: numbers are fixed, strings are symbolic axes.
    pub shape: Vec<String>,
}

/// One ONNX graph of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphEntry {
    /// Role of the graph inside its component (`embed`, `blocks`, `head`, ...).
    pub name: String,
    /// ONNX file, relative to the engine directory.
    pub file: String,
    /// Inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in order.
    pub outputs: Vec<TensorSpec>,
}
