//! Host bytes into ONNX Runtime values in GPU memory, and float32 values back out. `ort`'s own
//! `Tensor::to` copies through an `Identity` model of an opset without bfloat16, so bf16 weights
//! cannot take that way; this allocates the value with the session's CUDA allocator and fills it
//! with one driver copy. Back to the host, `Tensor::to` knows only values whose memory ONNX
//! Runtime names `Cuda`; values from CUDA's own memory pool (`SKYREELS_CUDA_ARENA=mempool`) are
//! named otherwise and come back through [`download_f32`].
#![expect(
    unsafe_code,
    reason = "the copies read and write through raw pointers of values ONNX Runtime allocated"
)]

use std::sync::Arc;

use cudarc::driver::CudaContext;
use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, TensorElementType};

use crate::error::{Result, RuntimeError};

/// Copies host bytes into newly allocated device values on one GPU.
pub struct DeviceUpload {
    context: Arc<CudaContext>,
    allocator: Allocator,
}

impl DeviceUpload {
    /// Uploads to GPU `device` into values from `allocator` (a CUDA allocator of a session on it).
    pub fn new(device: i32, allocator: Allocator) -> Result<DeviceUpload> {
        let ordinal = usize::try_from(device)
            .map_err(|_| RuntimeError::Invalid(format!("GPU index {device} is negative")))?;
        let context = CudaContext::new(ordinal).map_err(|e| RuntimeError::Ort {
            context: format!("opening GPU {device} for weight uploads"),
            message: e.to_string(),
        })?;
        Ok(DeviceUpload { context, allocator })
    }

    /// A device tensor of `element_type` and `shape` holding `bytes` (their length must be the
    /// tensor's byte size).
    pub fn upload(
        &self,
        element_type: TensorElementType,
        shape: &[usize],
        bytes: &[u8],
        what: &str,
    ) -> Result<DynValue> {
        let error = |message: String| RuntimeError::Ort {
            context: format!("uploading {what} to the GPU"),
            message,
        };
        let elements: usize = shape.iter().product();
        if element_type.byte_size(elements) != Some(bytes.len()) {
            return Err(error(format!(
                "{} bytes for {elements} elements of {element_type:?}",
                bytes.len()
            )));
        }
        let mut tensor = DynTensor::new(&self.allocator, element_type, shape.to_vec())
            .map_err(|e| error(e.to_string()))?;
        if bytes.is_empty() {
            return Ok(tensor.into_dyn());
        }
        let destination = tensor.data_ptr_mut();
        if destination.is_null() {
            return Err(error("ONNX Runtime gave a null device pointer".into()));
        }
        self.context
            .bind_to_thread()
            .map_err(|e| error(e.to_string()))?;
        // SAFETY: `destination` is the start of the device buffer ONNX Runtime just allocated for
        // `tensor`, whose byte size was checked above to equal `bytes.len()`; the copy is
        // synchronous, so `bytes` outlives it and the value is complete when this returns.
        unsafe {
            cudarc::driver::result::memcpy_htod_sync(
                destination as cudarc::driver::sys::CUdeviceptr,
                bytes,
            )
        }
        .map_err(|e| error(e.to_string()))?;
        Ok(tensor.into_dyn())
    }
}

/// Copies `elements` float32 values at device address `source` on GPU `device` to the host. The
/// value must be complete: ONNX Runtime synchronises its stream at the end of every run.
pub fn download_f32(
    device: i32,
    source: *const std::ffi::c_void,
    elements: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let error = |message: String| RuntimeError::Ort {
        context: format!("copying {what} from GPU {device} to the host"),
        message,
    };
    let mut host = vec![0f32; elements];
    if elements == 0 {
        return Ok(host);
    }
    if source.is_null() {
        return Err(error("ONNX Runtime gave a null device pointer".into()));
    }
    let ordinal =
        usize::try_from(device).map_err(|_| error(format!("GPU index {device} is negative")))?;
    let context = CudaContext::new(ordinal).map_err(|e| error(e.to_string()))?;
    context.bind_to_thread().map_err(|e| error(e.to_string()))?;
    // SAFETY: `source` is the start of a device tensor of `elements` float32 values that the
    // caller borrows for the call; the copy is synchronous and `host` has exactly that length.
    unsafe {
        cudarc::driver::result::memcpy_dtoh_sync(
            &mut host,
            source as cudarc::driver::sys::CUdeviceptr,
        )
    }
    .map_err(|e| error(e.to_string()))?;
    Ok(host)
}
