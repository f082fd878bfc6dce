//! The Wan causal 3D VAE's chunk loop (upstream `WanVAE_.encode/decode`, SPEC.md §7.3): the
//! encoder runs on frame 0, then on frames `1..5`, `5..9`, …; the decoder on one latent frame at a
//! time. Causal-convolution caches are graph inputs and outputs (contract:
//! [`skyreels_contract::vae`]); they live in a state value owned by the caller, so only the caches
//! and one chunk are alive at once and a video of any length decodes in bounded memory.

use std::collections::HashMap;

use ort::value::DynValue;
use skyreels_contract::manifest::Component;
use skyreels_contract::vae::{VaeComponent, VaeConfig, graph, io, stage_name};

use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::{Backend, GraphSession, TensorPool};
use crate::tensor::Tensor;

/// Caches between chunk calls: the previous call's `cache_out.*` values, renamed `cache_in.*`.
#[derive(Default)]
struct Caches {
    values: Vec<(String, DynValue)>,
    /// `[batch, channels, height, width]` of the stream, fixed by its first chunk.
    geometry: Option<[usize; 4]>,
}

impl Caches {
    fn is_started(&self) -> bool {
        self.geometry.is_some()
    }

    /// Checks that a chunk fits the stream started so far (or starts it).
    fn admit(&mut self, what: &str, chunk: &Tensor) -> Result<()> {
        let geometry = [
            chunk.shape[0],
            chunk.shape[1],
            chunk.shape[3],
            chunk.shape[4],
        ];
        match self.geometry {
            Some(started) if started != geometry => Err(RuntimeError::Invalid(format!(
                "{what} chunk has [batch, channels, height, width] = {geometry:?} but the stream started with {started:?}; start a new state for another video"
            ))),
            _ => {
                self.geometry = Some(geometry);
                Ok(())
            }
        }
    }

    /// Runs one chunk call, its graph or its stages in order, on `input` (plus the caches); keeps
    /// the new caches and returns `output`. Each stage gets its own caches and what the stage
    /// before it gave (`features.<k>`); its old caches are freed as soon as it has run.
    fn step(
        &mut self,
        stages: &mut [GraphSession],
        input_name: &str,
        input: &Tensor,
        output_name: &str,
    ) -> Result<Tensor> {
        let mut old: HashMap<String, DynValue> = self.values.drain(..).collect();
        let mut handed_on = TensorPool::new();
        handed_on.insert_f32(input_name, input)?;
        for session in stages.iter_mut() {
            let mut pool = std::mem::take(&mut handed_on);
            for spec in &session.entry.inputs {
                if let Some(value) = old.remove(&spec.name) {
                    pool.insert(&spec.name, value);
                }
            }
            session.run(&mut pool)?;
            for spec in &session.entry.outputs {
                let value = pool
                    .remove(&spec.name)
                    .ok_or_else(|| RuntimeError::Tensor {
                        name: spec.name.clone(),
                        message: format!("graph `{}` did not produce it", session.entry.name),
                    })?;
                match io::cache_input_for(&spec.name) {
                    Some(input) => self.values.push((input, value)),
                    None => handed_on.insert(&spec.name, value),
                }
            }
        }
        handed_on.to_host(output_name)
    }
}

fn check_rank5(what: &str, tensor: &Tensor) -> Result<()> {
    if tensor.shape.len() != 5 {
        return Err(RuntimeError::Invalid(format!(
            "{what} must be [batch, channels, frames, height, width], got {:?}",
            tensor.shape
        )));
    }
    Ok(())
}

/// Frames `start..start + count` of a `[B, C, T, H, W]` tensor.
fn frames(tensor: &Tensor, start: usize, count: usize) -> Tensor {
    let [b, c, t, h, w] = [
        tensor.shape[0],
        tensor.shape[1],
        tensor.shape[2],
        tensor.shape[3],
        tensor.shape[4],
    ];
    let plane = h * w;
    let mut data = Vec::with_capacity(b * c * count * plane);
    for bc in 0..b * c {
        let base = (bc * t + start) * plane;
        data.extend_from_slice(&tensor.data[base..base + count * plane]);
    }
    Tensor {
        shape: vec![b, c, count, h, w],
        data,
    }
}

/// Copies `chunk` `[B, C, n, H, W]` into frames `start..start + n` of `target` `[B, C, T, H, W]`.
fn put_frames(target: &mut Tensor, start: usize, chunk: &Tensor) -> Result<()> {
    let [b, c, t, h, w] = [
        target.shape[0],
        target.shape[1],
        target.shape[2],
        target.shape[3],
        target.shape[4],
    ];
    let n = chunk.shape[2];
    if chunk.shape != [b, c, n, h, w] || start + n > t {
        return Err(RuntimeError::Tensor {
            name: io::VIDEO.into(),
            message: format!(
                "chunk {:?} does not fit frames {start}.. of {:?}",
                chunk.shape, target.shape
            ),
        });
    }
    let plane = h * w;
    for bc in 0..b * c {
        let source = bc * n * plane;
        let destination = (bc * t + start) * plane;
        target.data[destination..destination + n * plane]
            .copy_from_slice(&chunk.data[source..source + n * plane]);
    }
    Ok(())
}

/// Clamps video values to `[-1, 1]` in place, as upstream does after decoding (NaN stays NaN).
pub fn clamp_video(video: &mut Tensor) {
    for v in &mut video.data {
        *v = v.clamp(-1.0, 1.0);
    }
}

fn component(engine: &Engine) -> Result<VaeComponent> {
    engine
        .manifest
        .vae
        .clone()
        .ok_or_else(|| engine.missing(Component::Vae))
}

/// The sessions that run role `name`: its graph, or its stages in order.
fn sessions(
    engine: &Engine,
    component: &VaeComponent,
    name: &str,
    backend: &Backend,
) -> Result<Vec<GraphSession>> {
    let entries = component.stages(name);
    if entries.is_empty() {
        return Err(engine.error(format!(
            "manifest lists no VAE graph `{name}` (nor its stages `{}`, …); re-export the engine",
            stage_name(name, 0)
        )));
    }
    engine.check_backend(backend)?;
    entries
        .into_iter()
        .map(|entry| GraphSession::load(&engine.dir, entry, backend))
        .collect()
}

/// The decoder's state between latent frames: the causal caches of one video.
#[derive(Default)]
pub struct DecodeState {
    caches: Caches,
}

/// A loaded VAE decoder: normalised latents → video in `[-1, 1]`.
pub struct VaeDecoder {
    config: VaeConfig,
    first: Vec<GraphSession>,
    chunk: Vec<GraphSession>,
}

impl VaeDecoder {
    /// Loads `decode_first` and `decode_chunk` (or its stages) from the engine.
    pub fn load(engine: &Engine, backend: &Backend) -> Result<VaeDecoder> {
        let component = component(engine)?;
        let first = sessions(engine, &component, graph::DECODE_FIRST, backend)?;
        let chunk = sessions(engine, &component, graph::DECODE_CHUNK, backend)?;
        Ok(VaeDecoder {
            config: component.config,
            first,
            chunk,
        })
    }

    /// The statistics of the arena the decoder allocates from (the GPU's, with per-session arenas
    /// the first chunk graph's; or the process's CPU arena).
    pub fn arena_stats(&self) -> Result<Option<crate::cuda_arena::ArenaStats>> {
        self.first[0].arena_stats()
    }

    /// Makes the next decode's first run give the CUDA arena's free blocks back to CUDA when it
    /// ends (what the DiT left free before the decode), as
    /// [`GraphSession::shrink_arena_after_next_run`] decides.
    pub fn shrink_arena_after_next_run(&mut self) {
        self.first[0].shrink_arena_after_next_run();
    }

    /// Architecture and latent normalisation.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Decodes one normalised latent frame `[B, z_dim, 1, h, w]` of the video `state` belongs to:
    /// 1 video frame for the first latent, 4 for each later one, `[B, 3, n, 8h, 8w]`, before the clamp.
    pub fn decode_frame(&mut self, state: &mut DecodeState, latent: &Tensor) -> Result<Tensor> {
        check_rank5("a latent frame", latent)?;
        if latent.shape[1] != self.config.z_dim || latent.shape[2] != 1 {
            return Err(RuntimeError::Invalid(format!(
                "a latent frame must be [batch, {}, 1, height, width], got {:?}",
                self.config.z_dim, latent.shape
            )));
        }
        let session = if state.caches.is_started() {
            &mut self.chunk
        } else {
            &mut self.first
        };
        state.caches.admit("latent", latent)?;
        state.caches.step(session, io::LATENTS, latent, io::VIDEO)
    }

    /// Decodes normalised latents `[B, z_dim, F, h, w]` to `[B, 3, 1 + 4(F−1), 8h, 8w]` before the
    /// final clamp (what the graphs compute).
    pub fn decode_unclamped(&mut self, latents: &Tensor) -> Result<Tensor> {
        check_rank5("latents", latents)?;
        latents.check_finite(
            "the latents to decode",
            "decode latents saved from a successful run",
        )?;
        let [b, _, f, h, w] = [
            latents.shape[0],
            latents.shape[1],
            latents.shape[2],
            latents.shape[3],
            latents.shape[4],
        ];
        if f == 0 {
            return Err(RuntimeError::Invalid("latents have no frames".into()));
        }
        let scale = self.config.spatial_compression();
        let mut video = Tensor::zeros(vec![
            b,
            3,
            self.config.video_frames(f),
            h * scale,
            w * scale,
        ]);
        let mut state = DecodeState::default();
        let mut written = 0;
        for index in 0..f {
            let chunk = self.decode_frame(&mut state, &frames(latents, index, 1))?;
            put_frames(&mut video, written, &chunk)?;
            written += chunk.shape[2];
        }
        video.check_finite(
            "the VAE decoder's output for finite latents",
            crate::tensor::BROKEN_ENGINE_FIX,
        )?;
        Ok(video)
    }

    /// Decodes normalised latents `[B, z_dim, F, h, w]` to video `[B, 3, 1 + 4(F−1), 8h, 8w]` in `[-1, 1]`.
    pub fn decode(&mut self, latents: &Tensor) -> Result<Tensor> {
        let mut video = self.decode_unclamped(latents)?;
        clamp_video(&mut video);
        Ok(video)
    }
}

/// The encoder's state between chunks: the causal caches of one video.
#[derive(Default)]
pub struct EncodeState {
    caches: Caches,
}

/// A loaded VAE encoder: video in `[-1, 1]` → normalised latents (the posterior mean).
pub struct VaeEncoder {
    config: VaeConfig,
    first: Vec<GraphSession>,
    chunk: Vec<GraphSession>,
}

impl VaeEncoder {
    /// Loads `encode_first` and `encode_chunk` (or its stages) from the engine.
    pub fn load(engine: &Engine, backend: &Backend) -> Result<VaeEncoder> {
        let component = component(engine)?;
        let first = sessions(engine, &component, graph::ENCODE_FIRST, backend)?;
        let chunk = sessions(engine, &component, graph::ENCODE_CHUNK, backend)?;
        Ok(VaeEncoder {
            config: component.config,
            first,
            chunk,
        })
    }

    /// Architecture and latent normalisation.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Encodes the next chunk of the video `state` belongs to: `[B, 3, 1, H, W]` first, then
    /// `[B, 3, 4, H, W]` chunks; returns one normalised latent frame `[B, z_dim, 1, H/8, W/8]`.
    pub fn encode_chunk(&mut self, state: &mut EncodeState, chunk: &Tensor) -> Result<Tensor> {
        check_rank5("a video chunk", chunk)?;
        let expected = if state.caches.is_started() {
            self.config.temporal_compression()
        } else {
            1
        };
        let scale = self.config.spatial_compression();
        if chunk.shape[1] != 3
            || chunk.shape[2] != expected
            || !chunk.shape[3].is_multiple_of(scale)
            || !chunk.shape[4].is_multiple_of(scale)
        {
            return Err(RuntimeError::Invalid(format!(
                "this video chunk must be [batch, 3, {expected}, height, width] with height and width multiples of {scale}, got {:?}",
                chunk.shape
            )));
        }
        let session = if state.caches.is_started() {
            &mut self.chunk
        } else {
            &mut self.first
        };
        state.caches.admit("video", chunk)?;
        state.caches.step(session, io::VIDEO, chunk, io::LATENTS)
    }

    /// Encodes video `[B, 3, T, H, W]` (T = 1 + 4k; H, W multiples of 8) to normalised latents
    /// `[B, z_dim, 1 + k, H/8, W/8]`.
    pub fn encode(&mut self, video: &Tensor) -> Result<Tensor> {
        check_rank5("video", video)?;
        video.check_finite("the video to encode", "give a video with values in [-1, 1]")?;
        let [b, _, t, h, w] = [
            video.shape[0],
            video.shape[1],
            video.shape[2],
            video.shape[3],
            video.shape[4],
        ];
        let step = self.config.temporal_compression();
        if t == 0 || (t - 1) % step != 0 {
            return Err(RuntimeError::Invalid(format!(
                "the VAE encodes 1 + {step}k frames, got {t}\n  fix: trim or pad the video to {} frames",
                1 + (t.max(1) - 1) / step * step
            )));
        }
        let scale = self.config.spatial_compression();
        let latent_frames = 1 + (t - 1) / step;
        let mut latents = Tensor::zeros(vec![
            b,
            self.config.z_dim,
            latent_frames,
            h / scale,
            w / scale,
        ]);
        let mut state = EncodeState::default();
        for index in 0..latent_frames {
            let (start, count) = if index == 0 {
                (0, 1)
            } else {
                (1 + step * (index - 1), step)
            };
            let latent = self.encode_chunk(&mut state, &frames(video, start, count))?;
            put_frames(&mut latents, index, &latent)?;
        }
        latents.check_finite(
            "the VAE encoder's output for a finite video",
            crate::tensor::BROKEN_ENGINE_FIX,
        )?;
        Ok(latents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let data: Vec<f32> = (0..2 * 3 * 5 * 2 * 2).map(|v| v as f32).collect();
        let tensor = Tensor::new(vec![2, 3, 5, 2, 2], data).unwrap();
        let middle = frames(&tensor, 1, 3);
        assert_eq!(middle.shape, [2, 3, 3, 2, 2]);
        assert_eq!(&middle.data[..4], &[4.0, 5.0, 6.0, 7.0]);
        let mut rebuilt = Tensor::zeros(vec![2, 3, 5, 2, 2]);
        put_frames(&mut rebuilt, 0, &frames(&tensor, 0, 1)).unwrap();
        put_frames(&mut rebuilt, 1, &middle).unwrap();
        put_frames(&mut rebuilt, 4, &frames(&tensor, 4, 1)).unwrap();
        assert_eq!(rebuilt, tensor);
        assert!(put_frames(&mut rebuilt, 3, &middle).is_err());
    }

    #[test]
    fn clamp_keeps_nan() {
        let mut video = Tensor::new(vec![3], vec![-2.0, 0.5, f32::NAN]).unwrap();
        clamp_video(&mut video);
        assert_eq!(&video.data[..2], &[-1.0, 0.5]);
        assert!(video.data[2].is_nan());
    }
}
