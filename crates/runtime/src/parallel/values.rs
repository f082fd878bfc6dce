//! ONNX Runtime values in and out of a communicator's buffers: the seam between the graphs' pool
//! and the collectives. Host values (the CPU backend) are copied as bytes; the NCCL transport
//! copies device values in place (`nccl.rs`), pointers taken from ORT's I/O-bound outputs.

use std::ops::Range;

use ort::memory::Allocator;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::communicator::Communicator;
use crate::error::{Result, RuntimeError, ort_error};

/// Moves tensors between the pool and a communicator's buffers.
pub trait ValueTransfer: Communicator {
    /// Copies the elements of the tensor `value` into the start of `buffer`.
    fn write_value(&mut self, buffer: &mut Self::Buffer, value: &DynValue) -> Result<()>;

    /// Copies bytes `bytes` of the tensor `value`'s elements into the start of `buffer` (a
    /// rank's rows of a `[1, L, D]` tensor, without a round trip through the host).
    fn write_value_range(
        &mut self,
        buffer: &mut Self::Buffer,
        value: &DynValue,
        bytes: Range<usize>,
    ) -> Result<()>;

    /// A new tensor of `dtype` and `shape` holding the start of `buffer`: in host memory, or in
    /// the memory of `allocator` (a GPU's) when given.
    fn read_value(
        &mut self,
        buffer: &Self::Buffer,
        dtype: TensorElementType,
        shape: &[usize],
        allocator: Option<&Allocator>,
    ) -> Result<DynValue>;
}

/// Bytes per element of the float dtypes the DiT's graphs exchange.
pub fn element_bytes(dtype: TensorElementType) -> Result<usize> {
    match dtype {
        TensorElementType::Float32 => Ok(4),
        TensorElementType::Float16 | TensorElementType::Bfloat16 => Ok(2),
        other => Err(RuntimeError::Invalid(format!(
            "sequence parallel exchanges float tensors, not {other:?}"
        ))),
    }
}

/// The element type and shape of the tensor `value`.
pub fn tensor_type(value: &DynValue) -> Result<(TensorElementType, Vec<usize>)> {
    match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            Ok((*ty, shape.iter().map(|&d| d as usize).collect()))
        }
        other => Err(RuntimeError::Invalid(format!(
            "sequence parallel exchanges tensors, not {other:?}"
        ))),
    }
}

/// The elements of a host tensor as bytes.
pub fn host_bytes(value: &DynValue) -> Result<Vec<u8>> {
    let context = "reading a tensor for a collective";
    let (dtype, _) = tensor_type(value)?;
    Ok(match dtype {
        TensorElementType::Float32 => bytemuck::cast_slice(
            value
                .try_extract_tensor::<f32>()
                .map_err(ort_error(context))?
                .1,
        )
        .to_vec(),
        TensorElementType::Float16 => bytemuck::cast_slice(
            value
                .try_extract_tensor::<half::f16>()
                .map_err(ort_error(context))?
                .1,
        )
        .to_vec(),
        TensorElementType::Bfloat16 => bytemuck::cast_slice(
            value
                .try_extract_tensor::<half::bf16>()
                .map_err(ort_error(context))?
                .1,
        )
        .to_vec(),
        other => {
            return Err(RuntimeError::Invalid(format!(
                "sequence parallel exchanges float tensors, not {other:?}"
            )));
        }
    })
}

/// A host tensor of `dtype` and `shape` from its bytes.
pub fn host_value(bytes: &[u8], dtype: TensorElementType, shape: &[usize]) -> Result<DynValue> {
    let context = "creating a tensor from a collective";
    let shape = shape.to_vec();
    Ok(match dtype {
        TensorElementType::Float32 => {
            OrtTensor::from_array((shape, bytemuck::pod_collect_to_vec::<u8, f32>(bytes)))
                .map_err(ort_error(context))?
                .into_dyn()
        }
        TensorElementType::Float16 => {
            OrtTensor::from_array((shape, bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)))
                .map_err(ort_error(context))?
                .into_dyn()
        }
        TensorElementType::Bfloat16 => {
            OrtTensor::from_array((shape, bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes)))
                .map_err(ort_error(context))?
                .into_dyn()
        }
        other => {
            return Err(RuntimeError::Invalid(format!(
                "sequence parallel exchanges float tensors, not {other:?}"
            )));
        }
    })
}

impl ValueTransfer for super::tcp::TcpCommunicator {
    fn write_value(&mut self, buffer: &mut Vec<u8>, value: &DynValue) -> Result<()> {
        let bytes = host_bytes(value)?;
        Ok(self.write(buffer, &bytes)?)
    }

    fn write_value_range(
        &mut self,
        buffer: &mut Vec<u8>,
        value: &DynValue,
        bytes: Range<usize>,
    ) -> Result<()> {
        let all = host_bytes(value)?;
        let part = all.get(bytes.clone()).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "bytes {bytes:?} of a tensor of {} bytes",
                all.len()
            ))
        })?;
        Ok(self.write(buffer, part)?)
    }

    fn read_value(
        &mut self,
        buffer: &Vec<u8>,
        dtype: TensorElementType,
        shape: &[usize],
        _allocator: Option<&Allocator>,
    ) -> Result<DynValue> {
        let bytes = shape.iter().product::<usize>() * element_bytes(dtype)?;
        let mut host = vec![0u8; bytes];
        self.read(buffer, &mut host)?;
        host_value(&host, dtype, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_round_trip_through_bytes_in_every_float_dtype() {
        crate::onnxruntime::environment().expect("ONNX Runtime (scripts/setup.sh)");
        let data = [1.5f32, -2.25, 0.0, 3.0e-3];
        for dtype in [
            TensorElementType::Float32,
            TensorElementType::Float16,
            TensorElementType::Bfloat16,
        ] {
            let bytes: Vec<u8> = match dtype {
                TensorElementType::Float32 => bytemuck::cast_slice(&data).to_vec(),
                TensorElementType::Float16 => data
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => data
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            };
            let value = host_value(&bytes, dtype, &[1, 2, 2]).unwrap();
            assert_eq!(tensor_type(&value).unwrap(), (dtype, vec![1, 2, 2]));
            assert_eq!(host_bytes(&value).unwrap(), bytes, "{dtype:?}");
            assert_eq!(element_bytes(dtype).unwrap() * 4, bytes.len());
        }
    }
}
