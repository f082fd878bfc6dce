//! What an engine is made for: the backend it targets, its numeric precision and its attention
//! form. Each is spelled in manifests and on the command line as it always was (`tensorrt`,
//! `bf16`, `contrib-mha`), so older manifests load unchanged; with the `clap` feature they are
//! the binaries' command-line values too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The backend an engine is exported or built for (ONNX Runtime execution providers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// ONNX Runtime's CPU provider.
    #[serde(rename = "cpu")]
    Cpu,
    /// ONNX Runtime's CUDA provider.
    #[serde(rename = "cuda")]
    Cuda,
    /// ONNX Runtime's TensorRT provider (with CUDA for nodes TensorRT does not take).
    #[serde(rename = "tensorrt")]
    #[cfg_attr(feature = "clap", value(name = "tensorrt"))]
    TensorRt,
}

impl Target {
    /// Spelling in manifests, file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
            Target::TensorRt => "tensorrt",
        }
    }
}

/// Numeric precision of weights, matmuls and attention (norms and modulation stay float32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// float32.
    #[serde(rename = "fp32")]
    Fp32,
    /// float16.
    #[serde(rename = "fp16")]
    Fp16,
    /// bfloat16.
    #[serde(rename = "bf16")]
    Bf16,
}

impl Precision {
    /// Manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// How the graphs compute multi-head attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Attention {
    /// MatMul + Softmax + MatMul: runs on every provider (the CPU default).
    #[serde(rename = "matmul")]
    #[cfg_attr(feature = "clap", value(name = "matmul"))]
    MatMul,
    /// `com.microsoft.MultiHeadAttention` and `com.microsoft.RotaryEmbedding`: ONNX Runtime's
    /// fused CUDA kernels (the CUDA default); TensorRT does not parse them.
    #[serde(rename = "contrib-mha")]
    ContribMha,
    /// The opset-23 `Attention` operator, which TensorRT 10.15 parses into its fused attention
    /// (the TensorRT default).
    #[serde(rename = "onnx-attention")]
    OnnxAttention,
}

impl Attention {
    /// Manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            Attention::MatMul => "matmul",
            Attention::ContribMha => "contrib-mha",
            Attention::OnnxAttention => "onnx-attention",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_spellings_are_the_names() {
        for target in [Target::Cpu, Target::Cuda, Target::TensorRt] {
            assert_eq!(crate::to_yaml(&target).unwrap().trim(), target.name());
            let parsed: Target =
                crate::parse_yaml(target.name(), std::path::Path::new("test"), "target").unwrap();
            assert_eq!(parsed, target);
        }
        for precision in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
            assert_eq!(crate::to_yaml(&precision).unwrap().trim(), precision.name());
        }
        for attention in [
            Attention::MatMul,
            Attention::ContribMha,
            Attention::OnnxAttention,
        ] {
            assert_eq!(crate::to_yaml(&attention).unwrap().trim(), attention.name());
            let parsed: Attention =
                crate::parse_yaml(attention.name(), std::path::Path::new("test"), "attention")
                    .unwrap();
            assert_eq!(parsed, attention);
        }
    }
}
