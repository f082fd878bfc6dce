use crate::proto::tensor_proto::DataType;

/// Element types the project's graphs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
    /// float64 (only in small embedding subgraphs; TensorRT has none).
    F64,
    /// int64 (shapes, indices).
    I64,
    /// int32.
    I32,
    /// boolean.
    Bool,
    /// uint8.
    U8,
}

impl DType {
    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx(self) -> i32 {
        (match self {
            DType::F32 => DataType::Float,
            DType::F16 => DataType::Float16,
            DType::BF16 => DataType::Bfloat16,
            DType::F64 => DataType::Double,
            DType::I64 => DataType::Int64,
            DType::I32 => DataType::Int32,
            DType::Bool => DataType::Bool,
            DType::U8 => DataType::Uint8,
        }) as i32
    }

    /// Inverse of [`DType::onnx`].
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match DataType::try_from(code).ok()? {
            DataType::Float => DType::F32,
            DataType::Float16 => DType::F16,
            DataType::Bfloat16 => DType::BF16,
            DataType::Double => DType::F64,
            DataType::Int64 => DType::I64,
            DataType::Int32 => DType::I32,
            DataType::Bool => DType::Bool,
            DataType::Uint8 => DType::U8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::Bool | DType::U8 => 1,
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Lower-case name used in manifests: `float32`, `float16`, `bfloat16`, `int64`...
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::Bool => "bool",
            DType::U8 => "uint8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
