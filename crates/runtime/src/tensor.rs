//! Host tensors: float32 data with a shape, the currency between the runtime's stages.

use crate::error::{Result, RuntimeError};

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
        if shape.iter().product::<usize>() != data.len() {
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
