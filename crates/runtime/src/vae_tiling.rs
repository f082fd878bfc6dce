//! Tiled VAE decode for small GPUs (`--vae-tiling`): diffusers' `AutoencoderKLWan.enable_tiling`
//! (`tiled_decode` in
//! <https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/autoencoders/autoencoder_kl_wan.py>).
//! The latents are cut into overlapping spatial tiles, each decoded on its own through every
//! frame (its own causal caches), so the decoder's activations are a tile's, not the frame's.
//! Tiles are then blended where they overlap, in diffusers' order and in place: tile (i, j) first
//! takes the already blended tile above it into its top rows, then the already blended tile to
//! its left into its left columns, each linearly over the overlap; each tile contributes its
//! top-left stride-sized corner, and the whole video is clamped once at the end. The result is
//! diffusers' tiled decode, not the untiled one: seams are blended, not absent.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use crate::vae::{VaeDecoder, clamp_video};

/// Tile size and stride in video pixels, (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaeTiling {
    /// A tile's height and width (diffusers' `tile_sample_min_height`/`_width`).
    pub tile: [usize; 2],
    /// The distance between tile starts (`tile_sample_stride_height`/`_width`); tiles overlap
    /// by `tile − stride`.
    pub stride: [usize; 2],
}

impl VaeTiling {
    /// diffusers' defaults: 256×256 tiles every 192 pixels (64 pixels of overlap).
    pub const DIFFUSERS: VaeTiling = VaeTiling {
        tile: [256, 256],
        stride: [192, 192],
    };

    /// Refuses sizes that are not whole latent pixels (`scale`, 8) or a stride past the tile
    /// (which would leave gaps).
    pub fn check(&self, scale: usize) -> Result<()> {
        for (axis, (tile, stride)) in ["height", "width"]
            .into_iter()
            .zip(self.tile.into_iter().zip(self.stride))
        {
            if tile == 0 || stride == 0 || tile % scale != 0 || stride % scale != 0 {
                return Err(RuntimeError::Invalid(format!(
                    "VAE tile {axis} {tile} with stride {stride}: both must be positive multiples of {scale} pixels\n  fix: use diffusers' 256 with stride 192"
                )));
            }
            if stride > tile {
                return Err(RuntimeError::Invalid(format!(
                    "VAE tile {axis} {tile} with stride {stride}: a stride past the tile leaves gaps\n  fix: use a stride at most the tile, e.g. 256 with stride 192"
                )));
            }
        }
        Ok(())
    }

    /// Whether latents of `height`×`width` are tiled at all (diffusers: when either side exceeds
    /// a tile); smaller ones decode whole.
    pub fn applies(&self, height: usize, width: usize, scale: usize) -> bool {
        height > self.tile[0] / scale || width > self.tile[1] / scale
    }
}

/// Decodes normalised latents `[B, z_dim, F, h, w]` tile by tile as `tiling` says, to video
/// `[B, 3, 1 + 4(F−1), 8h, 8w]` in `[-1, 1]`.
pub fn decode_tiled(
    decoder: &mut VaeDecoder,
    latents: &Tensor,
    tiling: &VaeTiling,
) -> Result<Tensor> {
    let scale = decoder.config().spatial_compression();
    tiling.check(scale)?;
    if latents.shape.len() != 5 {
        return Err(RuntimeError::Invalid(format!(
            "latents must be [batch, channels, frames, height, width], got {:?}",
            latents.shape
        )));
    }
    let (h, w) = (latents.shape[3], latents.shape[4]);
    if !tiling.applies(h, w, scale) {
        return decoder.decode(latents);
    }
    let (tile_h, tile_w) = (tiling.tile[0] / scale, tiling.tile[1] / scale);
    let (step_h, step_w) = (tiling.stride[0] / scale, tiling.stride[1] / scale);
    let row_starts: Vec<usize> = (0..h).step_by(step_h).collect();
    let column_starts: Vec<usize> = (0..w).step_by(step_w).collect();
    let columns = column_starts.len();
    let mut tiles = Vec::with_capacity(row_starts.len() * columns);
    for &top in &row_starts {
        for &left in &column_starts {
            let tile = crop(
                latents,
                top..(top + tile_h).min(h),
                left..(left + tile_w).min(w),
            );
            tiles.push(decoder.decode_unclamped(&tile)?);
        }
    }
    let blend = [
        tiling.tile[0] - tiling.stride[0],
        tiling.tile[1] - tiling.stride[1],
    ];
    for index in 0..tiles.len() {
        let (i, j) = (index / columns, index % columns);
        let (before, rest) = tiles.split_at_mut(index);
        let tile = &mut rest[0];
        if i > 0 {
            blend_rows(&before[index - columns], tile, blend[0]);
        }
        if j > 0 {
            blend_columns(&before[index - 1], tile, blend[1]);
        }
    }
    let mut shape = tiles[0].shape.clone();
    shape[3] = h * scale;
    shape[4] = w * scale;
    let mut video = Tensor::zeros(shape);
    for (index, tile) in tiles.iter().enumerate() {
        let (i, j) = (index / columns, index % columns);
        place(
            &mut video,
            tile,
            i * tiling.stride[0],
            j * tiling.stride[1],
            tiling.stride,
        );
    }
    clamp_video(&mut video);
    Ok(video)
}

/// `latents[..., rows, columns]`.
fn crop(latents: &Tensor, rows: std::ops::Range<usize>, columns: std::ops::Range<usize>) -> Tensor {
    let (h, w) = (latents.shape[3], latents.shape[4]);
    let planes = latents.shape[..3].iter().product::<usize>();
    let mut data = Vec::with_capacity(planes * rows.len() * columns.len());
    for plane in 0..planes {
        for y in rows.clone() {
            let start = (plane * h + y) * w;
            data.extend_from_slice(&latents.data[start + columns.start..start + columns.end]);
        }
    }
    let mut shape = latents.shape.clone();
    shape[3] = rows.len();
    shape[4] = columns.len();
    Tensor { shape, data }
}

/// The weights of the overlap's row or column `y` of `extent`: (the earlier tile's, this one's),
/// as diffusers computes them (a Python float, applied to float32 values).
fn weights(y: usize, extent: usize) -> (f32, f32) {
    let t = y as f64 / extent as f64;
    ((1.0 - t) as f32, t as f32)
}

/// diffusers' `blend_v`: the top `extent` rows of `tile` from the bottom rows of `above`.
fn blend_rows(above: &Tensor, tile: &mut Tensor, extent: usize) {
    let (above_h, h, w) = (above.shape[3], tile.shape[3], tile.shape[4]);
    let extent = extent.min(above_h).min(h);
    let planes = tile.shape[..3].iter().product::<usize>();
    for plane in 0..planes {
        for y in 0..extent {
            let (a, b) = weights(y, extent);
            let source = (plane * above_h + above_h - extent + y) * w;
            let target = (plane * h + y) * w;
            for x in 0..w {
                let value = &mut tile.data[target + x];
                *value = above.data[source + x] * a + *value * b;
            }
        }
    }
}

/// diffusers' `blend_h`: the left `extent` columns of `tile` from the right columns of `left`.
fn blend_columns(left: &Tensor, tile: &mut Tensor, extent: usize) {
    let (left_w, h, w) = (left.shape[4], tile.shape[3], tile.shape[4]);
    let extent = extent.min(left_w).min(w);
    let planes = tile.shape[..3].iter().product::<usize>();
    for plane in 0..planes {
        for y in 0..h {
            let source = (plane * h + y) * left_w;
            let target = (plane * h + y) * w;
            for x in 0..extent {
                let (a, b) = weights(x, extent);
                let value = &mut tile.data[target + x];
                *value = left.data[source + left_w - extent + x] * a + *value * b;
            }
        }
    }
}

/// Copies `tile`'s top-left `stride` corner into `video` at (`top`, `left`), inside the video.
fn place(video: &mut Tensor, tile: &Tensor, top: usize, left: usize, stride: [usize; 2]) {
    let (video_h, video_w) = (video.shape[3], video.shape[4]);
    let (tile_h, tile_w) = (tile.shape[3], tile.shape[4]);
    let rows = tile_h.min(stride[0]).min(video_h.saturating_sub(top));
    let columns = tile_w.min(stride[1]).min(video_w.saturating_sub(left));
    let planes = tile.shape[..3].iter().product::<usize>();
    for plane in 0..planes {
        for y in 0..rows {
            let source = (plane * tile_h + y) * tile_w;
            let target = (plane * video_h + top + y) * video_w + left;
            video.data[target..target + columns]
                .copy_from_slice(&tile.data[source..source + columns]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_whole_latent_pixels_with_no_gaps() {
        assert!(VaeTiling::DIFFUSERS.check(8).is_ok());
        let bad = |tile, stride| VaeTiling {
            tile: [tile, 256],
            stride: [stride, 192],
        };
        for (tile, stride) in [(250, 192), (256, 190), (0, 0), (256, 0)] {
            let error = bad(tile, stride).check(8).unwrap_err().to_string();
            assert!(error.contains("multiples of 8"), "{error}");
        }
        let error = bad(128, 192).check(8).unwrap_err().to_string();
        assert!(error.contains("leaves gaps"), "{error}");
        // 544x960 (68x120 latents) is tiled; 256x256 (32x32) is not.
        assert!(VaeTiling::DIFFUSERS.applies(68, 120, 8));
        assert!(!VaeTiling::DIFFUSERS.applies(32, 32, 8));
        assert!(VaeTiling::DIFFUSERS.applies(32, 33, 8));
    }

    #[test]
    fn blending_follows_diffusers_linear_ramp_in_place() {
        // Two [1,1,1,1,4] tiles side by side: the left one all 1, this one all 0; overlap 4.
        let left = Tensor::new(vec![1, 1, 1, 1, 4], vec![1.0; 4]).unwrap();
        let mut tile = Tensor::new(vec![1, 1, 1, 1, 4], vec![0.0; 4]).unwrap();
        blend_columns(&left, &mut tile, 4);
        assert_eq!(tile.data, vec![1.0, 0.75, 0.5, 0.25]);
        // Rows: the overlap is cut to the shorter tile (2 rows).
        let above = Tensor::new(vec![1, 1, 1, 3, 1], vec![9.0, 4.0, 8.0]).unwrap();
        let mut tile = Tensor::new(vec![1, 1, 1, 2, 1], vec![0.0, 2.0]).unwrap();
        blend_rows(&above, &mut tile, 4);
        assert_eq!(tile.data, vec![4.0, 8.0 * 0.5 + 2.0 * 0.5]);
    }

    #[test]
    fn crop_and_place_move_the_right_pixels() {
        let data: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        let latents = Tensor::new(vec![1, 2, 1, 3, 4], data).unwrap();
        let tile = crop(&latents, 1..3, 2..4);
        assert_eq!(tile.shape, vec![1, 2, 1, 2, 2]);
        assert_eq!(
            tile.data,
            vec![6.0, 7.0, 10.0, 11.0, 18.0, 19.0, 22.0, 23.0]
        );
        let mut video = Tensor::zeros(vec![1, 2, 1, 3, 4]);
        place(&mut video, &tile, 2, 3, [1, 4]);
        // One row (the stride) and one column (the video's edge) of each plane.
        let mut expected = vec![0.0; 24];
        expected[2 * 4 + 3] = 6.0;
        expected[12 + 2 * 4 + 3] = 18.0;
        assert_eq!(video.data, expected);
    }
}
