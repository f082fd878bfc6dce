//! One diffusion-forcing window: rows of the timestep matrix, classifier-free guidance, prefix
//! re-noising, and an independent scheduler state per latent frame (SPEC.md §3.2). Synchronous
//! text-to-video is the special case of one window with every frame on the same row.

use ndarray::{ArrayView1, ArrayViewMut1};

use super::denoiser::Denoiser;
use crate::error::{Result, RuntimeError};
use crate::noise::NoiseSource;
use crate::scheduler::Scheduler;
use crate::teacache::{Branch, TeaCache, TeaCacheConfig};
use crate::tensor::Tensor;

/// The timestep matrix of a window (see `crate::timestep_matrix`).
pub struct Rows {
    /// Timestep per row and frame.
    pub timesteps: Vec<Vec<f32>>,
    /// Frames stepped by the scheduler per row.
    pub update: Vec<Vec<bool>>,
    /// Frame range `[start, end)` fed to the model per row.
    pub interval: Vec<(usize, usize)>,
}

/// Settings shared by every window.
pub struct WindowSettings {
    /// Guidance scale; the unconditional pass runs only when > 1 and a negative context exists.
    pub guidance: f32,
    /// Prefix re-noise level (0 = off).
    pub addnoise_condition: f32,
    /// TeaCache, if enabled.
    pub teacache: Option<TeaCacheConfig>,
}

/// What a window cost.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    /// Model forward passes.
    pub forwards: usize,
    /// Passes whose transformer blocks ran.
    pub blocks_computed: usize,
    /// Passes whose transformer blocks were skipped by TeaCache.
    pub blocks_skipped: usize,
}

/// Latent frame `f` of `[1, C, F, H, W]` as a `[C, H, W]` vector.
pub(crate) fn frame(latents: &Tensor, f: usize) -> Vec<f32> {
    let (channels, frames, plane) = (
        latents.shape[1],
        latents.shape[2],
        latents.shape[3] * latents.shape[4],
    );
    let mut out = Vec::with_capacity(channels * plane);
    for c in 0..channels {
        let start = (c * frames + f) * plane;
        out.extend_from_slice(&latents.data[start..start + plane]);
    }
    out
}

/// Writes a `[C, H, W]` vector into latent frame `f`.
pub(crate) fn set_frame(latents: &mut Tensor, f: usize, values: &[f32]) {
    let (channels, frames, plane) = (
        latents.shape[1],
        latents.shape[2],
        latents.shape[3] * latents.shape[4],
    );
    for c in 0..channels {
        let start = (c * frames + f) * plane;
        latents.data[start..start + plane].copy_from_slice(&values[c * plane..(c + 1) * plane]);
    }
}

/// Frames `[start, end)` of `[1, C, F, H, W]`.
pub(crate) fn frames(latents: &Tensor, start: usize, end: usize) -> Tensor {
    let (channels, count, plane) = (
        latents.shape[1],
        latents.shape[2],
        latents.shape[3] * latents.shape[4],
    );
    let mut data = Vec::with_capacity(channels * (end - start) * plane);
    for c in 0..channels {
        data.extend_from_slice(
            &latents.data[(c * count + start) * plane..(c * count + end) * plane],
        );
    }
    Tensor {
        shape: vec![1, channels, end - start, latents.shape[3], latents.shape[4]],
        data,
    }
}

/// The shape of the prefix re-noising draw a row makes, if it makes one.
fn addnoise_draw(
    settings: &WindowSettings,
    (start, _end): (usize, usize),
    prefix_frames: usize,
    latent_shape: &[usize],
) -> Option<[usize; 5]> {
    (settings.addnoise_condition > 0.0 && start < prefix_frames).then(|| {
        [
            1,
            latent_shape[1],
            prefix_frames - start,
            latent_shape[3],
            latent_shape[4],
        ]
    })
}

/// Consumes the noise draws a window's rows would make, without running the model: how a
/// resumed job keeps the noise stream of later windows identical to an uninterrupted run.
pub fn replay_window_draws(
    rows: &Rows,
    prefix_frames: usize,
    settings: &WindowSettings,
    latent_shape: &[usize],
    noise: &mut NoiseSource,
) -> Result<()> {
    for &interval in &rows.interval {
        if let Some(shape) = addnoise_draw(settings, interval, prefix_frames, latent_shape) {
            noise.draw(&shape)?;
        }
    }
    Ok(())
}

/// Samples one window in place. `latents` `[1, 16, F, H, W]` holds the initial noise with any
/// prefix frames already written; `schedulers` has one state per frame. `after_step` is told the
/// number of steps done after each one; its error (a cancellation) stops the window.
#[expect(
    clippy::too_many_arguments,
    reason = "the window's state, passed explicitly rather than bundled"
)]
pub fn sample_window(
    denoiser: &mut dyn Denoiser,
    latents: &mut Tensor,
    prefix_frames: usize,
    rows: &Rows,
    schedulers: &mut [impl Scheduler],
    settings: &WindowSettings,
    noise: &mut NoiseSource,
    after_step: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<WindowStats> {
    let guided = settings.guidance > 1.0 && denoiser.has_unconditional();
    let mut cache = settings
        .teacache
        .clone()
        .map(|config| TeaCache::new(config, rows.timesteps.len()));
    let mut stats = WindowStats::default();
    for (row, timesteps) in rows.timesteps.iter().enumerate() {
        let (start, end) = rows.interval[row];
        let mut input = frames(latents, start, end);
        let mut row_timesteps = timesteps[start..end].to_vec();
        if let Some(shape) = addnoise_draw(settings, (start, end), prefix_frames, &input.shape) {
            let factor = 0.001 * settings.addnoise_condition;
            let (channels, plane, width) =
                (input.shape[1], input.shape[3] * input.shape[4], end - start);
            let fresh = noise.draw(&shape)?;
            for c in 0..channels {
                for f in 0..prefix_frames - start {
                    let target = (c * width + f) * plane;
                    let source = (c * (prefix_frames - start) + f) * plane;
                    for i in 0..plane {
                        input.data[target + i] = input.data[target + i] * (1.0 - factor)
                            + fresh.data[source + i] * factor;
                    }
                }
            }
            for t in &mut row_timesteps[..prefix_frames - start] {
                *t = settings.addnoise_condition;
            }
        }
        let velocity = if guided {
            let (conditional, unconditional) =
                denoiser.guided_velocities(&input, &row_timesteps, row, cache.as_mut())?;
            stats.forwards += 2;
            let g = settings.guidance;
            let data = unconditional
                .data
                .iter()
                .zip(&conditional.data)
                .map(|(u, c)| u + g * (c - u))
                .collect();
            Tensor {
                shape: conditional.shape,
                data,
            }
        } else {
            stats.forwards += 1;
            denoiser.velocity(
                &input,
                &row_timesteps,
                Branch::Conditional,
                row,
                cache.as_mut(),
            )?
        };
        #[expect(
            clippy::needless_range_loop,
            reason = "f indexes the update mask, the schedulers and two tensors"
        )]
        for f in start..end {
            if rows.update[row][f] {
                let mut sample = frame(latents, f);
                schedulers[f]
                    .step(
                        ArrayView1::from(&frame(&velocity, f - start)),
                        ArrayViewMut1::from(sample.as_mut_slice()),
                    )
                    .map_err(|e| RuntimeError::Invalid(format!("latent frame {f}: {e}")))?;
                set_frame(latents, f, &sample);
            }
        }
        after_step(row + 1)?;
    }
    if let Some(cache) = cache {
        stats.blocks_computed = cache.computed;
        stats.blocks_skipped = cache.skipped;
    } else {
        stats.blocks_computed = stats.forwards;
    }
    Ok(stats)
}
