//! Image-to-video conditioning (diffusers `SkyReelsV2ImageToVideoPipeline.prepare_latents`,
//! SkyReels-V2 `Image2VideoPipeline`; SPEC.md §4.2): the first frame followed by black frames is
//! VAE-encoded, and a 4-channel mask marks latent frame 0 as given.

use crate::error::{Result, RuntimeError};
use crate::image::{RgbImage, resize_bicubic_pil};
use crate::tensor::Tensor;
use crate::vae::VaeEncoder;

/// `[1, 3, 1, H, W]` in `[-1, 1]` from an image resized to `width`×`height` (`x/127.5 − 1`).
///
/// The references resize with PIL's Lanczos filter; this uses PIL's bicubic filter (bit-exact with
/// Pillow's), so resized images differ slightly unless the image already has the video's size.
pub fn image_frame(image: &RgbImage, width: usize, height: usize) -> Tensor {
    let resized = if image.width == width && image.height == height {
        image.clone()
    } else {
        resize_bicubic_pil(image, width, height)
    };
    let plane = width * height;
    let mut data = vec![0.0f32; 3 * plane];
    for (i, rgb) in resized.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = rgb[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor {
        shape: vec![1, 3, 1, height, width],
        data,
    }
}

/// The 20-channel condition `[1, 4 + z, F, h, w]`: a mask that is 1 on latent frame 0, then the
/// normalised latents of `[frame, black × (num_frames − 1)]`.
pub fn image_condition(
    encoder: &mut VaeEncoder,
    frame: &Tensor,
    num_frames: usize,
) -> Result<Tensor> {
    if frame.shape.len() != 5 || frame.shape[0] != 1 || frame.shape[2] != 1 {
        return Err(RuntimeError::Invalid(format!(
            "the conditioning image must be [1, 3, 1, H, W], got {:?}",
            frame.shape
        )));
    }
    let (height, width) = (frame.shape[3], frame.shape[4]);
    let plane = height * width;
    let mut video = Tensor::zeros(vec![1, 3, num_frames, height, width]);
    for c in 0..3 {
        video.data[c * num_frames * plane..c * num_frames * plane + plane]
            .copy_from_slice(&frame.data[c * plane..(c + 1) * plane]);
    }
    let latents = encoder.encode(&video)?;
    let (z, frames, latent_plane) = (
        latents.shape[1],
        latents.shape[2],
        latents.shape[3] * latents.shape[4],
    );
    let mut data = vec![0.0f32; 4 * frames * latent_plane];
    for c in 0..4 {
        data[c * frames * latent_plane..c * frames * latent_plane + latent_plane].fill(1.0);
    }
    data.extend_from_slice(&latents.data);
    Ok(Tensor {
        shape: vec![1, 4 + z, frames, latents.shape[3], latents.shape[4]],
        data,
    })
}
