//! The encoder and decoder walked in upstream's forward order (`Encoder3d`, `Decoder3d`,
//! `WanVAE_.encode/decode`), one chunk per call, with the latent normalisation folded in. Chunk
//! calls after the first run in stages: one per residual block at the video's full resolution,
//! where the caches are largest (200 MB each at 544×960 in fp16), and one for everything at lower
//! resolutions. Finer stages would free little more, and every stage is a CUDA session with
//! device memory of its own.

use skyreels_contract::io::axis;
use skyreels_contract::vae::{VaeConfig, io};
use skyreels_graph::Dim;

use super::layers::{ChunkGraph, scaled_axis};
use crate::error::Result;

fn encoder_dims(config: &VaeConfig) -> Vec<usize> {
    std::iter::once(1)
        .chain(config.dim_mult.iter().copied())
        .map(|m| m * config.base_dim)
        .collect()
}

fn decoder_dims(config: &VaeConfig) -> Vec<usize> {
    let last = *config
        .dim_mult
        .last()
        .expect("validated: dim_mult is not empty");
    std::iter::once(last)
        .chain(config.dim_mult.iter().rev().copied())
        .map(|m| m * config.base_dim)
        .collect()
}

fn latent_shape(config: &VaeConfig) -> Vec<Dim> {
    vec![
        Dim::named(axis::BATCH),
        Dim::Known(config.z_dim as i64),
        Dim::Known(1),
        Dim::named(axis::HEIGHT),
        Dim::named(axis::WIDTH),
    ]
}

fn video_shape(config: &VaeConfig, frames: usize) -> Vec<Dim> {
    let scale = config.spatial_compression();
    vec![
        Dim::named(axis::BATCH),
        Dim::Known(3),
        Dim::Known(frames as i64),
        scaled_axis(axis::HEIGHT, scale),
        scaled_axis(axis::WIDTH, scale),
    ]
}

/// Video frames per encoder call (1 for the first chunk).
pub(super) fn encode_frames(config: &VaeConfig, first: bool) -> usize {
    if first {
        1
    } else {
        config.temporal_compression()
    }
}

/// Encoder chunk: `video` → normalised `latents` (μ only), plus caches.
pub(super) fn build_encoder(cg: &mut ChunkGraph<'_, '_>, config: &VaeConfig) -> Result<()> {
    let full = config.spatial_compression();
    let dims = encoder_dims(config);
    let levels = config.dim_mult.len();
    let video = cg.input(
        io::VIDEO,
        video_shape(config, encode_frames(config, cg.first)),
    )?;
    let mut x = cg.causal_conv3(&video, "encoder.conv1", 3, dims[0])?;
    let mut index = 0;
    for level in 0..levels {
        let (mut in_dim, out_dim) = (dims[level], dims[level + 1]);
        for _ in 0..config.num_res_blocks {
            x = cg.residual_block(&x, &format!("encoder.downsamples.{index}"), in_dim, out_dim)?;
            if cg.scale == full {
                x = cg.end_stage(&x)?;
            }
            in_dim = out_dim;
            index += 1;
        }
        if level + 1 != levels {
            x = cg.downsample(
                &x,
                &format!("encoder.downsamples.{index}"),
                out_dim,
                config.temporal_downsample[level],
            )?;
            index += 1;
        }
    }
    let width = dims[levels];
    x = cg.residual_block(&x, "encoder.middle.0", width, width)?;
    x = cg.attention_block(&x, "encoder.middle.1", width)?;
    x = cg.residual_block(&x, "encoder.middle.2", width, width)?;
    x = cg.norm_silu(&x, "encoder.head.0.gamma", width)?;
    let z = 2 * config.z_dim;
    x = cg.causal_conv3(&x, "encoder.head.2", width, z)?;
    x = cg.conv1(&x, "conv1", z, z)?;
    let mu = cg.graph.slice(&x, 1, 0, config.z_dim as i64)?;
    let mean = cg.channel_constant(&config.latents_mean)?;
    let inverse_std: Vec<f32> = config.latents_std.iter().map(|s| 1.0 / s).collect();
    let inverse_std = cg.channel_constant(&inverse_std)?;
    let centered = cg.graph.sub(&mu, &mean)?;
    let latents = cg.graph.mul(&centered, &inverse_std)?;
    cg.output(io::LATENTS, &latents, latent_shape(config))
}

/// Video frames per decoder call (1 for the first latent frame).
pub(super) fn decode_frames(config: &VaeConfig, first: bool) -> usize {
    if first {
        1
    } else {
        config.temporal_compression()
    }
}

/// Decoder chunk: one normalised latent frame → video frames (before the final clamp), plus caches.
pub(super) fn build_decoder(cg: &mut ChunkGraph<'_, '_>, config: &VaeConfig) -> Result<()> {
    let full = config.spatial_compression();
    let dims = decoder_dims(config);
    let levels = config.dim_mult.len();
    let latents = cg.input(io::LATENTS, latent_shape(config))?;
    let mean = cg.channel_constant(&config.latents_mean)?;
    let inverse_std: Vec<f32> = config.latents_std.iter().map(|s| 1.0 / s).collect();
    let inverse_std = cg.channel_constant(&inverse_std)?;
    let scaled = cg.graph.div(&latents, &inverse_std)?;
    let mu = cg.graph.add(&scaled, &mean)?;
    let mut x = cg.conv1(&mu, "conv2", config.z_dim, config.z_dim)?;
    x = cg.causal_conv3(&x, "decoder.conv1", config.z_dim, dims[0])?;
    x = cg.residual_block(&x, "decoder.middle.0", dims[0], dims[0])?;
    x = cg.attention_block(&x, "decoder.middle.1", dims[0])?;
    x = cg.residual_block(&x, "decoder.middle.2", dims[0], dims[0])?;
    let mut index = 0;
    for level in 0..levels {
        let (mut in_dim, out_dim) = (dims[level], dims[level + 1]);
        if level > 0 {
            in_dim /= 2;
        }
        for _ in 0..=config.num_res_blocks {
            x = cg.residual_block(&x, &format!("decoder.upsamples.{index}"), in_dim, out_dim)?;
            if cg.scale == full {
                x = cg.end_stage(&x)?;
            }
            in_dim = out_dim;
            index += 1;
        }
        if level + 1 != levels {
            let temporal = config.temporal_downsample[levels - 2 - level];
            x = cg.upsample(&x, &format!("decoder.upsamples.{index}"), out_dim, temporal)?;
            if cg.scale == full {
                x = cg.end_stage(&x)?;
            }
            index += 1;
        }
    }
    let width = dims[levels];
    x = cg.norm_silu(&x, "decoder.head.0.gamma", width)?;
    x = cg.causal_conv3(&x, "decoder.head.2", width, 3)?;
    cg.output(
        io::VIDEO,
        &x,
        video_shape(config, decode_frames(config, cg.first)),
    )
}
