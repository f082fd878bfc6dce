use crate::output::OutputError;
use crate::tensor::Tensor;

/// The reference's float-to-byte conversion, `((x / 2 + 0.5).clamp(0, 1) * 255).astype(uint8)`,
/// evaluated in f32 as torch does: truncation toward zero, not rounding; NaN maps to 0. (On every
/// f32 in [-1, 1] this equals the `(x + 1) / 2` form; checked exhaustively once.)
pub fn to_uint8(value: f32) -> u8 {
    ((value / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0) as u8
}

/// Decoded video as 8-bit RGB: `num_frames` frames of `height × width × 3` bytes each, rows top
/// to bottom, channels interleaved (`R, G, B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Video {
    /// A video from packed frames; `pixels.len()` must be a whole number of `width × height × 3` frames.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Video, OutputError> {
        let frame_len = width * height * 3;
        if frame_len == 0 || !pixels.len().is_multiple_of(frame_len) {
            return Err(OutputError::InvalidVideo(format!(
                "{} bytes are not a whole number of {width}×{height} RGB frames",
                pixels.len()
            )));
        }
        Ok(Video {
            width,
            height,
            pixels,
        })
    }

    /// Converts the VAE output for one batch element, float32 `[3, T, H, W]` in [-1, 1], to RGB
    /// bytes with [`to_uint8`].
    pub fn from_tensor(tensor: &Tensor) -> Result<Video, OutputError> {
        let &[3, num_frames, height, width] = tensor.shape.as_slice() else {
            return Err(OutputError::InvalidVideo(format!(
                "expected a decoded video of shape [3, frames, height, width], got {:?}\n  fix: pass one batch element of the VAE output",
                tensor.shape
            )));
        };
        if tensor.data.len() != 3 * num_frames * height * width {
            return Err(OutputError::InvalidVideo(format!(
                "{} elements do not fill shape {:?}",
                tensor.data.len(),
                tensor.shape
            )));
        }
        let plane = num_frames * height * width;
        let mut pixels = vec![0u8; plane * 3];
        for (index, rgb) in pixels.chunks_exact_mut(3).enumerate() {
            for (channel, byte) in rgb.iter_mut().enumerate() {
                *byte = to_uint8(tensor.data[channel * plane + index]);
            }
        }
        Video::new(width, height, pixels)
    }

    /// Frame width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of frames.
    pub fn num_frames(&self) -> usize {
        self.pixels.len() / (self.width * self.height * 3)
    }

    /// The RGB bytes of frame `index` (`height × width × 3`); panics when out of range.
    pub fn frame(&self, index: usize) -> &[u8] {
        let frame_len = self.width * self.height * 3;
        &self.pixels[index * frame_len..(index + 1) * frame_len]
    }

    /// The frames in order, each `height × width × 3` bytes.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.pixels.chunks_exact(self.width * self.height * 3)
    }

    /// All frames packed, `[T, H, W, 3]` row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint8_conversion_matches_reference_values() {
        assert_eq!(to_uint8(-1.0), 0);
        assert_eq!(to_uint8(1.0), 255);
        assert_eq!(to_uint8(0.0), 127);
        assert_eq!(to_uint8(-7.0), 0);
        assert_eq!(to_uint8(7.0), 255);
        assert_eq!(to_uint8(f32::NAN), 0);
        assert_eq!(to_uint8(f32::INFINITY), 255);
        assert_eq!(to_uint8(f32::NEG_INFINITY), 0);
        assert_eq!(to_uint8(0.999), 254);
        assert_eq!(to_uint8(-0.999), 0);
    }

    #[test]
    fn uint8_conversion_truncates_at_every_level() {
        for level in 1..=255u32 {
            let boundary = 2.0 * f64::from(level) / 255.0 - 1.0;
            let below = (boundary - 1e-5) as f32;
            let above = (boundary + 1e-5) as f32;
            assert_eq!(
                u32::from(to_uint8(below)),
                level - 1,
                "just below level {level}"
            );
            assert_eq!(
                u32::from(to_uint8(above)),
                level,
                "just above level {level}"
            );
            let fractional = (2.0 * (f64::from(level) - 0.1) / 255.0 - 1.0) as f32;
            assert_eq!(
                u32::from(to_uint8(fractional)),
                level - 1,
                "{level} - 0.1 truncates, not rounds"
            );
        }
    }

    #[test]
    fn uint8_conversion_agrees_with_the_x_plus_1_over_2_form() {
        let mut bits = (-1.0f32).to_bits();
        while f32::from_bits(bits) < 0.0 {
            let x = f32::from_bits(bits);
            assert_eq!(
                to_uint8(x),
                (((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8,
                "{x}"
            );
            assert_eq!(
                to_uint8(-x),
                (((1.0 - x) / 2.0).clamp(0.0, 1.0) * 255.0) as u8,
                "{}",
                -x
            );
            bits -= 4099;
        }
    }

    #[test]
    fn from_tensor_moves_channels_last_and_converts() {
        let (frames, height, width) = (2, 2, 3);
        let plane = frames * height * width;
        let data: Vec<f32> = (0..3 * plane)
            .map(|i| i as f32 / (3 * plane) as f32 * 2.0 - 1.0)
            .collect();
        let tensor = Tensor::new(vec![3, frames, height, width], data.clone()).unwrap();
        let video = Video::from_tensor(&tensor).unwrap();
        assert_eq!(
            (video.num_frames(), video.height(), video.width()),
            (frames, height, width)
        );
        for t in 0..frames {
            for y in 0..height {
                for x in 0..width {
                    for channel in 0..3 {
                        let source = data[((channel * frames + t) * height + y) * width + x];
                        assert_eq!(
                            video.frame(t)[(y * width + x) * 3 + channel],
                            to_uint8(source)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn from_tensor_rejects_other_layouts() {
        let tensor = Tensor::zeros(vec![1, 3, 2, 4, 4]);
        let message = Video::from_tensor(&tensor).unwrap_err().to_string();
        assert!(message.contains("[3, frames, height, width]"), "{message}");
        assert!(Video::new(4, 4, vec![0; 47]).is_err());
    }
}
