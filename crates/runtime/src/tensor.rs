//! Host tensors: float32 data with a shape, the currency between the runtime's stages.

use crate::error::{Result, RuntimeError};

/// The fix when a graph of the engine turned finite inputs into NaN or infinite values.
pub const BROKEN_ENGINE_FIX: &str = "the engine's weights hold NaN or overflow at their precision; re-export it from a checkpoint with finite weights (or with --dtype fp32)";

/// A dense row-major float32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from parts; the element count must match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let count = shape
            .iter()
            .try_fold(1usize, |count, &d| count.checked_mul(d));
        if count != Some(data.len()) {
            return Err(RuntimeError::Tensor {
                name: "<new>".into(),
                message: format!("{} elements do not fill shape {shape:?}", data.len()),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// All zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let count = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; count],
        }
    }

    /// Fails when the tensor holds NaN or infinite values, naming `source` (where the values came
    /// from) and `fix`; a generation never continues on such values (it would end in a black or
    /// noise-grey "video" and exit 0).
    pub fn check_finite(&self, source: &str, fix: &str) -> Result<()> {
        let count = self.data.iter().filter(|value| !value.is_finite()).count();
        if count == 0 {
            return Ok(());
        }
        Err(RuntimeError::Invalid(format!(
            "{source} holds {count} non-finite values (NaN or ±inf) among its {}\n  fix: {fix}",
            self.data.len()
        )))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Largest absolute elementwise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}
