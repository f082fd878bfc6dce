//! The models of one engine as ONNX Runtime sessions, loaded when a job first needs them and kept
//! for the next job (a server loads once) or freed as soon as a one-job process is done with them.

use std::path::Path;

use super::plan::JobPlan;
use crate::dit::Dit;
use crate::dit::placement::WeightPlacement;
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::image::ImageEncoder;
use crate::pipeline::progress::{Observer, Stage, in_stage};
use crate::session::Backend;
use crate::tensor::Tensor;
use crate::text::TextEncoder;
use crate::vae::{VaeDecoder, VaeEncoder};

/// How long loaded models live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// One job per process: each model loads when first needed and the text encoder is freed once
    /// the prompts are encoded, so it never shares memory with the DiT (the lowest peak).
    OneJob,
    /// Many jobs: every model stays loaded for the next job.
    KeepLoaded,
}

/// An engine's models, loaded on demand.
pub struct Models {
    engine: Engine,
    backend: Backend,
    residency: Residency,
    text_encoder: Option<TextEncoder>,
    /// The DiT and the causal block size its block-causal attention was loaded with (its weight
    /// placement it tells itself).
    dit: Option<(Dit, Option<usize>)>,
    vae_decoder: Option<VaeDecoder>,
    vae_encoder: Option<VaeEncoder>,
    image_encoder: Option<ImageEncoder>,
    /// This process's rank of a multi-rank run (`--cfg-parallel`).
    rank: Option<Box<crate::parallel::start::RankContext>>,
}

impl Models {
    /// Opens the engine at `engine_dir` (its manifest only; nothing is loaded yet).
    pub fn open(engine_dir: &Path, backend: Backend, residency: Residency) -> Result<Models> {
        Ok(Models::new(Engine::open(engine_dir)?, backend, residency))
    }

    /// Holds `engine`'s models, none loaded yet.
    pub fn new(engine: Engine, backend: Backend, residency: Residency) -> Models {
        Models {
            engine,
            backend,
            residency,
            text_encoder: None,
            dit: None,
            vae_decoder: None,
            vae_encoder: None,
            image_encoder: None,
            rank: None,
        }
    }

    /// Makes the jobs run as `rank` of a multi-rank run.
    pub fn set_rank(&mut self, rank: Box<crate::parallel::start::RankContext>) {
        self.rank = Some(rank);
    }

    /// Whether this process writes the outputs (always, unless it is a rank other than 0).
    pub fn writes_output(&self) -> bool {
        self.rank.as_ref().is_none_or(|r| r.writes_output())
    }

    /// Collective on several ranks: rank 0's prompt contexts (`encoded`, which only it passes)
    /// on every rank; on one rank, `encoded` itself.
    pub fn share_contexts(
        &mut self,
        encoded: Option<(Tensor, Option<Tensor>)>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match &mut self.rank {
            None => encoded.ok_or_else(|| {
                RuntimeError::Invalid("the prompt was not encoded on a single rank".into())
            }),
            Some(rank) => {
                let tensors = encoded.map(|(context, negative)| {
                    std::iter::once(context).chain(negative).collect::<Vec<_>>()
                });
                let mut shared = rank.broadcast_tensors(tensors.as_deref())?.into_iter();
                let context = shared.next().ok_or_else(|| {
                    RuntimeError::Invalid("rank 0 shared no prompt context".into())
                })?;
                Ok((context, shared.next()))
            }
        }
    }

    /// Collective on several ranks: the finished windows rank 0 read from its work directory
    /// (`saved`), by index, on every rank; on one rank, `saved` itself.
    pub fn share_windows(
        &mut self,
        saved: Option<Vec<(usize, Tensor)>>,
    ) -> Result<std::collections::HashMap<usize, Tensor>> {
        let Some(rank) = &mut self.rank else {
            return Ok(saved.unwrap_or_default().into_iter().collect());
        };
        // Sent as one list: the window indices (exact in f32: far below 2^24), then the windows.
        let tensors = saved
            .map(|windows| -> Result<Vec<Tensor>> {
                let indices = windows.iter().map(|(index, _)| *index as f32).collect();
                let indices = Tensor::new(vec![windows.len()], indices)?;
                Ok(std::iter::once(indices)
                    .chain(windows.into_iter().map(|(_, window)| window))
                    .collect())
            })
            .transpose()?;
        let mut shared = rank.broadcast_tensors(tensors.as_deref())?.into_iter();
        let indices = shared
            .next()
            .ok_or_else(|| RuntimeError::Invalid("rank 0 shared no window list".into()))?;
        let indices: Vec<usize> = indices.data.iter().map(|&index| index as usize).collect();
        let windows: Vec<Tensor> = shared.collect();
        if windows.len() != indices.len() {
            return Err(RuntimeError::Invalid(format!(
                "rank 0 shared {} windows for {} indices",
                windows.len(),
                indices.len()
            )));
        }
        Ok(indices.into_iter().zip(windows).collect())
    }

    /// Whether this process is one rank of a multi-rank run.
    pub fn is_multi_rank(&self) -> bool {
        self.rank.is_some()
    }

    pub(crate) fn take_rank(&mut self) -> Option<Box<crate::parallel::start::RankContext>> {
        self.rank.take()
    }

    pub(crate) fn put_rank(&mut self, rank: Option<Box<crate::parallel::start::RankContext>>) {
        self.rank = rank;
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where the graphs run.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// How long loaded models live.
    pub fn residency(&self) -> Residency {
        self.residency
    }

    /// Loads every model `plan` needs that is not loaded yet (a server's warm-up, or to measure
    /// loading apart from the job). With [`Residency::OneJob`] the text encoder is left to load
    /// when the prompts are encoded, so that it can be freed before the DiT loads.
    pub fn load_for(&mut self, plan: &JobPlan, observer: &mut dyn Observer) -> Result<()> {
        if self.residency == Residency::KeepLoaded {
            self.text_encoder(plan, observer)?;
        }
        self.dit(
            plan.causal_block_size(),
            plan.dit_memory.placement,
            observer,
        )?;
        self.vae_decoder(observer)?;
        if plan.needs_vae_encoder() {
            self.vae_encoder(observer)?;
        }
        if plan.model_type == skyreels_contract::ModelType::I2v {
            self.image_encoder(observer)?;
        }
        Ok(())
    }

    /// The text encoder with its block weights placed as `plan` says, loaded (or reloaded) if
    /// needed.
    pub fn text_encoder(
        &mut self,
        plan: &JobPlan,
        observer: &mut dyn Observer,
    ) -> Result<&mut TextEncoder> {
        let placement = plan
            .text_memory
            .map_or(WeightPlacement::Resident, |m| m.placement);
        self.text_encoder_placed(placement, observer)
    }

    /// The text encoder with its block weights placed as `placement` says, loaded (or reloaded)
    /// if needed.
    pub fn text_encoder_placed(
        &mut self,
        placement: WeightPlacement,
        observer: &mut dyn Observer,
    ) -> Result<&mut TextEncoder> {
        if self.text_encoder.as_ref().map(TextEncoder::placement) != Some(placement) {
            self.text_encoder = None;
            let loaded = in_stage(observer, Stage::Loading, "text encoder", |_| {
                TextEncoder::load_with(&self.engine, &self.backend, placement)
            })?;
            self.text_encoder = Some(loaded);
        }
        Ok(self.text_encoder.as_mut().expect("loaded above"))
    }

    /// Frees the text encoder unless models are kept loaded.
    pub fn done_with_text_encoder(&mut self) {
        if self.residency == Residency::OneJob {
            self.text_encoder = None;
        }
    }

    /// The DiT with block-causal attention over `causal_block_size` frames (or full attention)
    /// and its layer weights placed as `placement` says, loaded (or reloaded) if needed.
    pub fn dit(
        &mut self,
        causal_block_size: Option<usize>,
        placement: WeightPlacement,
        observer: &mut dyn Observer,
    ) -> Result<&mut Dit> {
        let loaded_with = self
            .dit
            .as_ref()
            .map(|(dit, causal)| (*causal, dit.placement()));
        if loaded_with != Some((causal_block_size, placement)) {
            self.dit = None;
            let what = match (causal_block_size, placement) {
                (None, WeightPlacement::Resident) => "dit",
                (Some(_), WeightPlacement::Resident) => "dit (block-causal)",
                (None, WeightPlacement::Streamed) => "dit (streamed weights)",
                (Some(_), WeightPlacement::Streamed) => "dit (block-causal, streamed weights)",
            };
            let dit = in_stage(observer, Stage::Loading, what, |_| {
                Dit::load_with(&self.engine, &self.backend, causal_block_size, placement)
            })?;
            self.dit = Some((dit, causal_block_size));
        }
        Ok(&mut self.dit.as_mut().expect("loaded above").0)
    }

    /// The VAE decoder, loaded if needed.
    pub fn vae_decoder(&mut self, observer: &mut dyn Observer) -> Result<&mut VaeDecoder> {
        if self.vae_decoder.is_none() {
            let loaded = in_stage(observer, Stage::Loading, "vae decoder", |_| {
                VaeDecoder::load(&self.engine, &self.backend)
            })?;
            self.vae_decoder = Some(loaded);
        }
        Ok(self.vae_decoder.as_mut().expect("loaded above"))
    }

    /// The VAE encoder, loaded if needed.
    pub fn vae_encoder(&mut self, observer: &mut dyn Observer) -> Result<&mut VaeEncoder> {
        if self.vae_encoder.is_none() {
            let loaded = in_stage(observer, Stage::Loading, "vae encoder", |_| {
                VaeEncoder::load(&self.engine, &self.backend)
            })?;
            self.vae_encoder = Some(loaded);
        }
        Ok(self.vae_encoder.as_mut().expect("loaded above"))
    }

    /// The image encoder, loaded if needed.
    pub fn image_encoder(&mut self, observer: &mut dyn Observer) -> Result<&mut ImageEncoder> {
        if self.image_encoder.is_none() {
            let loaded = in_stage(observer, Stage::Loading, "image encoder", |_| {
                ImageEncoder::load(&self.engine, &self.backend)
            })?;
            self.image_encoder = Some(loaded);
        }
        Ok(self.image_encoder.as_mut().expect("loaded above"))
    }

    /// Takes the DiT out for a generation, loading it if needed; give it back with
    /// [`Models::return_dit`].
    pub(super) fn take_dit(
        &mut self,
        causal_block_size: Option<usize>,
        placement: WeightPlacement,
        observer: &mut dyn Observer,
    ) -> Result<Dit> {
        self.dit(causal_block_size, placement, observer)?;
        Ok(self.dit.take().expect("loaded above").0)
    }

    /// The CUDA arena's statistics as a loaded model's sessions see them (every session on a
    /// GPU shares the arena by default); `None` on the CPU or when none is loaded.
    pub fn arena_stats(&self) -> Option<crate::cuda_arena::ArenaStats> {
        self.backend.device()?;
        let stats = match (&self.vae_decoder, &self.dit) {
            (Some(decoder), _) => decoder.arena_stats(),
            (None, Some((dit, _))) => dit.arena_stats(),
            (None, None) => Ok(None),
        };
        stats.unwrap_or_else(|error| {
            tracing::debug!("reading the CUDA arena's statistics: {error}");
            None
        })
    }

    /// Puts back a DiT taken with [`Models::take_dit`].
    /// A DiT whose layer weights were released after sampling is dropped instead (a later job
    /// loads it again).
    pub(super) fn return_dit(&mut self, dit: Dit, causal_block_size: Option<usize>) {
        self.dit = (!dit.is_released()).then_some((dit, causal_block_size));
    }

    /// Both VAE halves at once (the encoder only when `with_encoder`), loaded if needed.
    pub(super) fn vae_halves(
        &mut self,
        with_encoder: bool,
        observer: &mut dyn Observer,
    ) -> Result<(&mut VaeDecoder, Option<&mut VaeEncoder>)> {
        self.vae_decoder(observer)?;
        if with_encoder {
            self.vae_encoder(observer)?;
        }
        let decoder = self.vae_decoder.as_mut().expect("loaded above");
        let encoder = if with_encoder {
            self.vae_encoder.as_mut()
        } else {
            None
        };
        Ok((decoder, encoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server moves the loaded models into the thread that runs its jobs.
    #[test]
    fn loaded_models_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Models>();
        assert_send::<JobPlan>();
    }
}
