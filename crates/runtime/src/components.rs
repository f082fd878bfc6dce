//! The component commands (`text-encode`, `vae-encode`, `vae-decode`, `image-encode`,
//! `dit-forward`): one model
//! of an engine run on any backend, from files to files, with the checks `generate` makes first.

use std::path::Path;

use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::image::{ImageEncoder, RgbImage};
use crate::job::inputs::read_video;
use crate::job::outputs::check_output_path;
use crate::job::plan::check_runnable;
use crate::job::run::first_video;
use crate::output::{self, Mp4Options};
use crate::session::Backend;
use crate::text::TextEncoder;
use crate::vae::{VaeDecoder, VaeEncoder};

/// Opens the engine for one component command writing `out`: the output's directory exists and
/// the backend can run the engine.
fn open(engine_dir: &Path, backend: &Backend, out: &Path) -> Result<Engine> {
    check_output_path("--out", out)?;
    let engine = Engine::open(engine_dir)?;
    check_runnable(&engine, backend)?;
    Ok(engine)
}

/// Encodes `prompt` (block by block with streamed weights for `offload`); writes tensor
/// `context` `[1, 512, dim]` to `out`.
pub fn text_encode(
    engine_dir: &Path,
    backend: &Backend,
    prompt: &str,
    offload: bool,
    out: &Path,
) -> Result<()> {
    let engine = open(engine_dir, backend, out)?;
    let placement = if offload {
        crate::dit::placement::WeightPlacement::Streamed
    } else {
        crate::dit::placement::WeightPlacement::Resident
    };
    let context = TextEncoder::load_with(&engine, backend, placement)?.encode(prompt)?;
    output::save_latents(out, [("context", &context)])?;
    Ok(())
}

/// Encodes a video (`.mp4`, or safetensors tensor `video`) to normalised latents; writes tensor
/// `latents` to `out`.
pub fn vae_encode(engine_dir: &Path, backend: &Backend, video: &Path, out: &Path) -> Result<()> {
    let engine = open(engine_dir, backend, out)?;
    let video = read_video(video, None)?;
    let latents = VaeEncoder::load(&engine, backend)?.encode(&video)?;
    output::save_latents(out, [("latents", &latents)])?;
    Ok(())
}

/// Decodes latents (safetensors tensor `latents`), in tiles when `tiling` is given, to an `.mp4`
/// at `frames_per_second`, or to a safetensors tensor `video` for any other `out`.
pub fn vae_decode(
    engine_dir: &Path,
    backend: &Backend,
    latents: &Path,
    tiling: Option<crate::vae_tiling::VaeTiling>,
    out: &Path,
    mp4: &Mp4Options,
) -> Result<()> {
    let engine = open(engine_dir, backend, out)?;
    let latents = output::read_tensor(latents, "latents", &[None; 5])?;
    let to_mp4 = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"));
    if to_mp4 {
        check_mp4_decode(&engine, &latents, out, mp4)?;
    }
    let mut decoder = VaeDecoder::load(&engine, backend)?;
    let video = match tiling {
        Some(tiling) => crate::vae_tiling::decode_tiled(&mut decoder, &latents, &tiling)?,
        None => decoder.decode(&latents)?,
    };
    if to_mp4 {
        output::write_mp4(&first_video(&video)?, out, mp4)?;
    } else {
        output::save_latents(out, [("video", &video)])?;
    }
    Ok(())
}

/// What the MP4 writer would refuse after the decode, checked before it: batch 1 latents, a frame
/// size the encoder takes (the latents' size times the VAE's compression) and the frame rate.
fn check_mp4_decode(
    engine: &Engine,
    latents: &crate::tensor::Tensor,
    out: &Path,
    mp4: &Mp4Options,
) -> Result<()> {
    if latents.shape[0] != 1 {
        return Err(RuntimeError::Invalid(format!(
            "--out .mp4 needs batch 1 latents, got batch {}\n  fix: write a .safetensors instead",
            latents.shape[0]
        )));
    }
    let scale = engine
        .manifest
        .vae
        .as_ref()
        .map_or(8, |vae| vae.config.spatial_compression());
    output::check_video_destination(
        out,
        latents.shape[4].saturating_mul(scale),
        latents.shape[3].saturating_mul(scale),
        // A float-to-int `as` saturates: a NaN or negative rate becomes 0 and is refused there.
        mp4.frames_per_second.round() as u32,
    )?;
    Ok(())
}

/// Encodes a PNG or JPEG with the CLIP vision tower; writes tensor `image_context` to `out`.
pub fn image_encode(engine_dir: &Path, backend: &Backend, image: &Path, out: &Path) -> Result<()> {
    let engine = open(engine_dir, backend, out)?;
    let picture = RgbImage::open(image)?;
    let context = ImageEncoder::load(&engine, backend)?.encode(&picture)?;
    output::save_latents(out, [("image_context", &context)])?;
    Ok(())
}

/// One DiT forward pass over the contract inputs in `inputs` (block-causal with
/// `causal_block_size`; layer weights streamed for `offload` or when they do not fit
/// `max_gpu_memory`); writes tensor `velocity` to `out`.
pub fn dit_forward(
    engine_dir: &Path,
    backend: &Backend,
    inputs: &Path,
    causal_block_size: Option<usize>,
    offload: bool,
    max_gpu_memory: Option<&str>,
    out: &Path,
) -> Result<()> {
    let engine = open(engine_dir, backend, out)?;
    let memory =
        crate::dit::placement::DitMemoryPlan::for_engine(&engine, offload, max_gpu_memory)?;
    let velocity = crate::dit::forward_file::forward_file(
        &engine,
        backend,
        inputs,
        causal_block_size,
        memory.placement,
    )?;
    output::save_latents(out, [("velocity", &velocity)])?;
    Ok(())
}
