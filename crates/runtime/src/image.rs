//! The CLIP image encoder at run time: image → `pixel_values` exactly as the reference
//! preprocesses it, then the exported vision-tower graph (penultimate hidden states `[1, 257, 1280]`).
//!
//! Two preprocessing modes (recorded in the manifest, [`ImageResizeMode`]):
//! - `shortest_side_center_crop` (default, diffusers' SkyReels-V2 I2V pipeline, whose
//!   `CLIPImageProcessor` resizes the shortest side to 224 with PIL bicubic, centre-crops
//!   224×224, scales by 1/255 and normalises with the CLIP mean/std). The resize reproduces
//!   Pillow's `ImagingResample` on 8-bit RGB bit for bit: separable passes (horizontal, then
//!   vertical) with the support-scaled bicubic kernel (a = −0.5, support 2·max(1, in/out), so it
//!   antialiases when downscaling), coefficients normalised per output pixel and rounded to 22-bit
//!   fixed point, and each pass rounded and clipped to 8 bits. The parity fixtures check it
//!   against transformers' PIL backend (`CLIPImageProcessorPil`). transformers ≥ 5 uses the
//!   torchvision backend when torchvision is installed; its uint8 antialiased bicubic follows
//!   Pillow's but is not checked here (torchvision is not in the reference environment).
//! - `squash` (upstream SkyReels / Wan `CLIPModel.encode_video`): the image as [−1, 1] float,
//!   `F.interpolate(size=(224, 224), mode="bicubic", align_corners=False)` (Keys a = −0.75,
//!   no antialiasing, border-clamped taps, float32), then `·0.5 + 0.5` and the CLIP mean/std.
//!   Upstream feeds the image already resized to the video size (Lanczos) and runs it in bf16;
//!   here the caller's image goes in directly, in float32.

use std::path::Path;

use skyreels_contract::image::{
    IMAGE_HIDDEN_STATES, ImageEncoderComponent, ImagePreprocess, ImageResizeMode, PIXEL_VALUES,
};
use skyreels_contract::manifest::Component;

use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::{Backend, GraphSession, TensorPool};
use crate::tensor::Tensor;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width · 3` bytes.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Reads a PNG or JPEG file and converts it to 8-bit RGB (alpha dropped, as PIL's
    /// `convert("RGB")`; 16-bit channels are rounded to 8 bits).
    pub fn open(path: &Path) -> Result<RgbImage> {
        let bytes = skyreels_contract::files::read_bounded(
            path,
            "image",
            skyreels_contract::files::limit::IMAGE,
        )?;
        let decoded = decode_bounded(&bytes).map_err(|e| match e {
            image::ImageError::Limits(_) => RuntimeError::Invalid(format!(
                "image {} is larger than {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels (or decodes to more than {} MiB)\n  fix: resize it to the video's size first",
                path.display(),
                MAX_DECODED_BYTES >> 20
            )),
            e => RuntimeError::Invalid(format!("cannot decode image {}: {e}\n  fix: give a PNG or JPEG file (re-save or re-download it if it is cut short)", path.display())),
        })?;
        let rgb = decoded.to_rgb8();
        Ok(RgbImage {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            pixels: rgb.into_raw(),
        })
    }
}

/// The largest side a picture may have (twice the largest video side the plan accepts: camera
/// photos are cropped and resized); a file's header is checked against it before any pixel is
/// decoded.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// The most memory decoding one picture may take (a 108-megapixel photo fits).
const MAX_DECODED_BYTES: u64 = 512 << 20;

fn decode_bounded(bytes: &[u8]) -> image::ImageResult<image::DynamicImage> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(limits);
    reader.decode()
}

/// Checks, before any model loads, that each given picture (`--image`, `--last-image`) is a
/// regular file within the image size limit; it is decoded only later, when its encoder is loaded.
pub fn check_image_files(paths: &[Option<&Path>]) -> Result<()> {
    for path in paths.iter().flatten() {
        let size = skyreels_contract::files::regular_file_size(path, "image")?;
        let limit = skyreels_contract::files::limit::IMAGE;
        if size > limit {
            return Err(skyreels_contract::files::FileError::TooLarge {
                what: "image".into(),
                path: path.to_path_buf(),
                size,
                limit,
            }
            .into());
        }
    }
    Ok(())
}

/// Upstream's `resizecrop` (`image2video_pipeline.py`): the centred crop of `image` with the
/// aspect ratio of `width`×`height`, not resized. PIL's `crop` rounds the float box half to even.
pub fn crop_to_aspect(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (w, h) = (image.width, image.height);
    if (w, h) == (width, height) {
        return image.clone();
    }
    let (new_w, new_h) = if h as f64 / w as f64 > height as f64 / width as f64 {
        (w, (w as f64 * height as f64 / width as f64) as usize)
    } else {
        ((h as f64 * width as f64 / height as f64) as usize, h)
    };
    let left = ((w as f64 - new_w as f64) / 2.0).round_ties_even() as usize;
    let top = ((h as f64 - new_h as f64) / 2.0).round_ties_even() as usize;
    let right = ((w as f64 + new_w as f64) / 2.0).round_ties_even() as usize;
    let bottom = ((h as f64 + new_h as f64) / 2.0).round_ties_even() as usize;
    let mut pixels = Vec::with_capacity((right - left) * (bottom - top) * 3);
    for y in top..bottom {
        pixels.extend_from_slice(&image.pixels[(y * w + left) * 3..(y * w + right) * 3]);
    }
    RgbImage {
        width: right - left,
        height: bottom - top,
        pixels,
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn pillow_bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output index, the first input
/// index and the fixed-point weights.
fn pillow_coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| pillow_bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    (if scaled < 0.0 {
                        scaled - 0.5
                    } else {
                        scaled + 0.5
                    }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL `Image.resize((width, height), Image.BICUBIC)` on an 8-bit RGB image, bit-exact.
pub fn resize_bicubic_pil(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let horizontal = pillow_coefficients(image.width, width);
    let vertical = pillow_coefficients(image.height, height);
    let need_horizontal = width != image.width;
    let need_vertical = height != image.height;
    let (first_row, rows) = match need_horizontal && need_vertical {
        true => {
            let first = vertical[0].0;
            let (last_start, last_weights) = &vertical[height - 1];
            (first, last_start + last_weights.len() - first)
        }
        false => (0, image.height),
    };
    let source = if need_horizontal {
        let mut out = vec![0u8; rows * width * 3];
        for y in 0..rows {
            let row = &image.pixels[(y + first_row) * image.width * 3..];
            for (xx, (xmin, weights)) in horizontal.iter().enumerate() {
                for c in 0..3 {
                    let mut sum = 1i32 << (PRECISION_BITS - 1);
                    for (i, &w) in weights.iter().enumerate() {
                        sum = sum.wrapping_add(row[(xmin + i) * 3 + c] as i32 * w);
                    }
                    out[(y * width + xx) * 3 + c] = clip8(sum);
                }
            }
        }
        RgbImage {
            width,
            height: rows,
            pixels: out,
        }
    } else {
        image.clone()
    };
    if !need_vertical {
        return source;
    }
    let mut out = vec![0u8; height * width * 3];
    for (yy, (ymin, weights)) in vertical.iter().enumerate() {
        let start = ymin - first_row;
        for x in 0..width {
            for c in 0..3 {
                let mut sum = 1i32 << (PRECISION_BITS - 1);
                for (i, &w) in weights.iter().enumerate() {
                    sum = sum
                        .wrapping_add(source.pixels[((start + i) * width + x) * 3 + c] as i32 * w);
                }
                out[(yy * width + x) * 3 + c] = clip8(sum);
            }
        }
    }
    RgbImage {
        width,
        height,
        pixels: out,
    }
}

fn torch_cubic_weights(t: f32) -> [f32; 4] {
    let a = -0.75f32;
    let near = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `F.interpolate(x, (out_h, out_w), mode="bicubic", align_corners=False)` on one `[C, H, W]`
/// float32 plane stack (torch's CPU kernel: source index `(i + 0.5)·in/out − 0.5`, Keys a = −0.75,
/// taps clamped to the border, rows then columns, float32).
pub fn interpolate_bicubic_torch(
    planes: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let taps = |in_size: usize, out_size: usize| -> Vec<([usize; 4], [f32; 4])> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|o| {
                let source = (o as f32 + 0.5) * scale - 0.5;
                let floor = source.floor();
                let t = source - floor;
                let base = floor as i64;
                let index = |k: i64| (base + k).clamp(0, in_size as i64 - 1) as usize;
                (
                    [index(-1), index(0), index(1), index(2)],
                    torch_cubic_weights(t),
                )
            })
            .collect()
    };
    let rows = taps(in_h, out_h);
    let columns = taps(in_w, out_w);
    let mut out = vec![0f32; channels * out_h * out_w];
    for c in 0..channels {
        let plane = &planes[c * in_h * in_w..(c + 1) * in_h * in_w];
        for (oy, (ry, wy)) in rows.iter().enumerate() {
            for (ox, (rx, wx)) in columns.iter().enumerate() {
                let mut row_values = [0f32; 4];
                for (k, &y) in ry.iter().enumerate() {
                    let line = &plane[y * in_w..];
                    row_values[k] = line[rx[0]] * wx[0]
                        + line[rx[1]] * wx[1]
                        + line[rx[2]] * wx[2]
                        + line[rx[3]] * wx[3];
                }
                out[(c * out_h + oy) * out_w + ox] = row_values[0] * wy[0]
                    + row_values[1] * wy[1]
                    + row_values[2] * wy[2]
                    + row_values[3] * wy[3];
            }
        }
    }
    out
}

/// `pixel_values` `[1, 3, size, size]` for `image` under `preprocess` (see the module docs).
pub fn preprocess_image(image: &RgbImage, size: usize, preprocess: &ImagePreprocess) -> Tensor {
    let plane = size * size;
    let mut data = vec![0f32; 3 * plane];
    match preprocess.resize {
        ImageResizeMode::ShortestSideCenterCrop => {
            let (short, long) = (image.width.min(image.height), image.width.max(image.height));
            let new_long = (size as f64 * long as f64 / short as f64) as usize;
            let (width, height) = if image.width <= image.height {
                (size, new_long)
            } else {
                (new_long, size)
            };
            let resized = resize_bicubic_pil(image, width, height);
            let (top, left) = ((height - size) / 2, (width - size) / 2);
            for y in 0..size {
                for x in 0..size {
                    for c in 0..3 {
                        let value = resized.pixels[((y + top) * width + x + left) * 3 + c];
                        let scaled = (value as f64 * (1.0 / 255.0)) as f32;
                        data[c * plane + y * size + x] =
                            (scaled - preprocess.mean[c]) / preprocess.std[c];
                    }
                }
            }
        }
        ImageResizeMode::Squash => {
            let input_plane = image.width * image.height;
            let mut planes = vec![0f32; 3 * input_plane];
            for (i, pixel) in image.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    planes[c * input_plane + i] = pixel[c] as f32 / 127.5 - 1.0;
                }
            }
            let squashed =
                interpolate_bicubic_torch(&planes, 3, image.height, image.width, size, size);
            for (i, value) in squashed.iter().enumerate() {
                let c = i / plane;
                data[i] = (value * 0.5 + 0.5 - preprocess.mean[c]) / preprocess.std[c];
            }
        }
    }
    Tensor {
        shape: vec![1, 3, size, size],
        data,
    }
}

/// A loaded image encoder.
pub struct ImageEncoder {
    /// Manifest entry.
    pub component: ImageEncoderComponent,
    session: GraphSession,
}

impl ImageEncoder {
    /// Loads the image encoder graph of `engine`.
    pub fn load(engine: &Engine, backend: &Backend) -> Result<ImageEncoder> {
        let component = engine
            .manifest
            .image_encoder
            .clone()
            .ok_or_else(|| engine.missing(Component::ImageEncoder))?;
        let entry = engine.graph(&component.graphs, Component::ImageEncoder, "encoder")?;
        engine.check_backend(backend)?;
        let session = GraphSession::load(&engine.dir, entry, backend)?;
        Ok(ImageEncoder { component, session })
    }

    /// `pixel_values` for `image` as the manifest's preprocessing prescribes.
    pub fn preprocess(&self, image: &RgbImage) -> Tensor {
        preprocess_image(
            image,
            self.component.config.image_size,
            &self.component.preprocess,
        )
    }

    /// Runs the graph on `pixel_values` `[B, 3, size, size]`: `[B, tokens, dim]`.
    pub fn encode_pixels(&mut self, pixels: &Tensor) -> Result<Tensor> {
        let mut pool = TensorPool::new();
        pool.insert_f32(PIXEL_VALUES, pixels)?;
        self.session.run(&mut pool)?;
        let context = pool.to_host(IMAGE_HIDDEN_STATES)?;
        context.check_finite(
            "the image encoder's output for a finite picture",
            crate::tensor::BROKEN_ENGINE_FIX,
        )?;
        Ok(context)
    }

    /// Preprocesses and encodes `image`: `[1, 257, 1280]` for ViT-H/14.
    pub fn encode(&mut self, image: &RgbImage) -> Result<Tensor> {
        let pixels = self.preprocess(image);
        self.encode_pixels(&pixels)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_picture_wider_than_the_limit_is_refused_from_its_header() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("wide.png");
        let wide = image::RgbImage::new(super::MAX_IMAGE_SIDE + 1, 1);
        wide.save(&path).unwrap();
        let Err(error) = super::RgbImage::open(&path) else {
            panic!("a picture wider than the limit was decoded")
        };
        let error = error.to_string();
        assert!(
            error.contains("is larger than 16384×16384 pixels") && error.contains("fix: resize it"),
            "{error}"
        );
        let fits = image::RgbImage::new(super::MAX_IMAGE_SIDE, 1);
        fits.save(&path).unwrap();
        assert_eq!(super::RgbImage::open(&path).unwrap().width, 16384);
    }

    use super::*;

    /// Crop boxes and first pixels as PIL 11 gives them for upstream's `resizecrop` to 960×544
    /// (pixels `i mod 251`, so the first byte tells the crop origin).
    #[test]
    fn crop_to_aspect_matches_pil() {
        for (w, h, size, first) in [
            (1000, 600, (1000, 566), 47u8),
            (500, 1000, (500, 284), 111),
            (961, 545, (961, 544), 0),
        ] {
            let pixels = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
            let cropped = crop_to_aspect(
                &RgbImage {
                    width: w,
                    height: h,
                    pixels,
                },
                960,
                544,
            );
            assert_eq!((cropped.width, cropped.height), size, "{w}x{h}");
            assert_eq!(cropped.pixels[0], first, "{w}x{h}");
        }
    }

    #[test]
    fn pillow_weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(341, 224), (97, 224), (224, 224), (1000, 3)] {
            for (_, weights) in pillow_coefficients(input, output) {
                let total: i64 = weights.iter().map(|&w| w as i64).sum();
                assert!(
                    (total - (1 << PRECISION_BITS)).abs() <= weights.len() as i64,
                    "{input}->{output}: {total}"
                );
            }
        }
    }

    #[test]
    fn resizing_a_flat_image_keeps_it_flat() {
        let image = RgbImage {
            width: 37,
            height: 53,
            pixels: vec![77; 37 * 53 * 3],
        };
        let resized = resize_bicubic_pil(&image, 224, 320);
        assert!(resized.pixels.iter().all(|&p| p == 77));
    }
}
