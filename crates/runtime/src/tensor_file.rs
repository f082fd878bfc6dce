//! Reading float tensors from safetensors files given on the command line (noise, latents).

use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;

/// A float tensor's values as float32 (f16 and bf16 upcast); `None` for other dtypes.
pub(crate) fn float_values(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// All tensors of `path` as float32 (f16/bf16 are upcast), sorted by name.
pub fn read_f32_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = skyreels_contract::files::read_bounded(
        path,
        "tensor file",
        skyreels_contract::files::physical_memory(),
    )?;
    let bad = |message: String| {
        RuntimeError::Invalid(format!(
            "{} is not a valid safetensors file: {message}\n  fix: give a safetensors file of float tensors (saved with safetensors.torch.save_file)",
            path.display()
        ))
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        let values = float_values(&view).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has dtype {:?}; expected a float type",
                view.dtype()
            ))
        })?;
        let tensor = Tensor::new(view.shape().to_vec(), values)?;
        tensor.check_finite(
            &format!("{}: tensor `{name}`", path.display()),
            "record the values again; NaN or inf cannot be sampled from",
        )?;
        out.push((name, tensor));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
