//! The sampling schedule handed to the window sampler: σ schedule, per-frame UniPC states and
//! timestep matrices, chosen by the compat mode.

use super::flow_unipc::{FlowUniPc, SigmaSchedule};
use super::generate::SamplingSchedule;
use super::plan::Compat;
use super::sampler::{FrameScheduler, Rows};
use super::timestep_matrix::timestep_matrix;
use crate::error::Result;

impl FrameScheduler for FlowUniPc {
    fn step(&mut self, velocity: &[f32], sample: &[f32]) -> Vec<f32> {
        FlowUniPc::step(self, velocity, sample)
    }
}

/// Flow-matching UniPC over `compat`'s σ schedule.
pub struct FlowSchedule {
    /// σ and timesteps.
    pub sigmas: SigmaSchedule,
    /// Reproduce the diffusion-forcing loops' per-frame stepping (see [`FlowUniPc::with_aliasing`]).
    pub diffusion_forcing: bool,
}

impl FlowSchedule {
    /// `steps` steps with flow `shift`, for a diffusion-forcing or a synchronous loop.
    pub fn new(compat: Compat, steps: usize, shift: f64, diffusion_forcing: bool) -> FlowSchedule {
        FlowSchedule { sigmas: SigmaSchedule::new(compat, steps, shift), diffusion_forcing }
    }
}

impl SamplingSchedule for FlowSchedule {
    fn template(&self) -> Vec<f32> {
        self.sigmas.timesteps.iter().map(|&t| t as f32).collect()
    }

    fn frame_scheduler(&self) -> Box<dyn FrameScheduler> {
        Box::new(FlowUniPc::with_aliasing(&self.sigmas, self.diffusion_forcing))
    }

    fn rows(&self, frames: usize, prefix: usize, ar_step: usize, causal_block_size: usize) -> Result<Rows> {
        let matrix = timestep_matrix(frames, &self.sigmas.timesteps, frames, ar_step, prefix, causal_block_size)?;
        Ok(Rows {
            timesteps: matrix.step_matrix.iter().map(|row| row.iter().map(|&t| t as f32).collect()).collect(),
            update: matrix.update_mask,
            interval: matrix.valid_interval,
        })
    }
}
