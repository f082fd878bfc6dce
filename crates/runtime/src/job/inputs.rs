//! The files that condition a job, read as tensors: a video to extend (`.mp4` or safetensors)
//! and first/last images prepared as upstream's CLI prepares them.

use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::image::{RgbImage, crop_to_aspect, resize_bicubic_pil};
use crate::output;
use crate::pipeline::image_condition::image_frame;
use crate::tensor::Tensor;
use crate::vae::VaeEncoder;

/// A video from an `.mp4` (frames mapped to [-1, 1] as `x/127.5 − 1`, and resized bicubically to
/// `size` = (width, height) when given, as upstream's reader resizes on load) or from a safetensors
/// tensor `video` `[B, 3, T, H, W]` (which must already have `size`).
pub fn read_video(path: &Path, size: Option<(usize, usize)>) -> Result<Tensor> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
    {
        let clip = output::read_mp4(path)?;
        let (width, height) = size.unwrap_or((clip.width(), clip.height()));
        check_video_memory(
            path,
            clip.num_frames(),
            width,
            height,
            skyreels_contract::files::physical_memory(),
        )?;
        let (t, plane) = (clip.num_frames(), width * height);
        let mut data = vec![0.0f32; 3 * t * plane];
        for (f, frame) in clip.frames().enumerate() {
            let mut picture = RgbImage {
                width: clip.width(),
                height: clip.height(),
                pixels: frame.to_vec(),
            };
            if (picture.width, picture.height) != (width, height) {
                picture = resize_bicubic_pil(&picture, width, height);
            }
            for (i, rgb) in picture.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    data[(c * t + f) * plane + i] = rgb[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        return Tensor::new(vec![1, 3, t, height, width], data);
    }
    let expected = match size {
        Some((width, height)) => [Some(1), Some(3), None, Some(height), Some(width)],
        None => [None; 5],
    };
    Ok(output::read_tensor(path, "video", &expected)?)
}

/// Refuses a video of `frames` frames whose float32 copy at `width`×`height` would take more than
/// half of `memory` bytes (a long clip resized up), before it is allocated: the allocation would
/// otherwise abort the process.
fn check_video_memory(
    path: &Path,
    frames: usize,
    width: usize,
    height: usize,
    memory: u64,
) -> Result<()> {
    let bytes = frames as u128 * width as u128 * height as u128 * 3 * 4;
    if bytes > u128::from(memory / 2) {
        return Err(RuntimeError::Invalid(format!(
            "--video {} has {frames} frames, which at {width}x{height} take {:.1} GiB as float32, more than half of this machine's {:.1} GiB of memory\n  fix: cut the video to its last seconds (only its last --overlap-history frames are continued), e.g. `ffmpeg -sseof -3 -i IN -c:v libx264 OUT.mp4`",
            path.display(),
            bytes as f64 / f64::from(1u32 << 30),
            memory as f64 / f64::from(1u32 << 30)
        )));
    }
    Ok(())
}

/// The video to extend, at the generation's size (see [`read_video`]), with at least one frame.
pub fn read_video_sized(path: &Path, width: usize, height: usize) -> Result<Tensor> {
    let video = read_video(path, Some((width, height)))?;
    if video.shape[2] == 0 {
        return Err(RuntimeError::Invalid(format!(
            "--video {} has no frames\n  fix: give a video with at least --overlap-history frames",
            path.display()
        )));
    }
    Ok(video)
}

/// `[1, 3, 1, H, W]` of an image prepared as upstream's CLI does (`resizecrop` to the video's
/// aspect, then a bicubic resize).
pub fn image_pixels(picture: &RgbImage, width: usize, height: usize) -> Tensor {
    image_frame(&crop_to_aspect(picture, width, height), width, height)
}

/// The normalised latent `[1, 16, 1, h, w]` of the image at `path`, prepared as [`image_pixels`].
pub fn encode_image_latent(
    encoder: &mut VaeEncoder,
    path: &Path,
    width: usize,
    height: usize,
) -> Result<Tensor> {
    let picture = RgbImage::open(path)?;
    encoder.encode(&image_pixels(&picture, width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_whose_float_copy_passes_half_the_memory_is_refused_before_allocating() {
        let path = Path::new("clip.mp4");
        let per_frame = 960 * 544 * 3 * 4;
        assert!(check_video_memory(path, 100, 960, 544, 200 * per_frame).is_ok());
        let error = check_video_memory(path, 101, 960, 544, 200 * per_frame)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--video clip.mp4 has 101 frames, which at 960x544 take 0.6 GiB as float32, more than half of this machine's 1.2 GiB of memory\n  fix: cut the video"),
            "{error}"
        );
        assert!(check_video_memory(path, usize::MAX, 8192, 8192, u64::MAX).is_err());
    }
}
