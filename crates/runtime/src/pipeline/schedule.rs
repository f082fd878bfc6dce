//! The sampling schedule handed to the window sampler: the σ schedule of the chosen reference,
//! per-frame flow-UniPC states and timestep matrices (`crate::scheduler`, `crate::timestep_matrix`).

use super::plan::Compat;
use super::sampler::Rows;
use crate::error::{Result, RuntimeError};
use crate::scheduler::{FirstStepSample, FlowUniPc, Schedule, SigmaSchedule};
use crate::timestep_matrix::timestep_matrix;

/// Flow-matching UniPC over the chosen reference's σ schedule.
pub struct FlowSchedule {
    /// σ and timesteps.
    pub schedule: Schedule,
    /// Reproduce the diffusion-forcing loops' per-frame stepping (the step-0 sample aliasing of
    /// both references, [`FirstStepSample::Output`]); the synchronous loops do not alias.
    pub diffusion_forcing: bool,
}

impl FlowSchedule {
    /// `steps` steps with flow `shift`, for a diffusion-forcing or a synchronous loop.
    pub fn new(
        compat: Compat,
        steps: usize,
        shift: f64,
        diffusion_forcing: bool,
    ) -> Result<FlowSchedule> {
        let sigmas = match compat {
            Compat::Upstream => SigmaSchedule::Upstream,
            Compat::Diffusers => SigmaSchedule::Diffusers,
        };
        let schedule = Schedule::new(sigmas, steps, shift)
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        Ok(FlowSchedule {
            schedule,
            diffusion_forcing,
        })
    }
}

impl FlowSchedule {
    /// The N model timesteps, descending.
    pub fn template(&self) -> Vec<f32> {
        self.schedule
            .timesteps()
            .iter()
            .map(|&t| t as f32)
            .collect()
    }

    /// A scheduler state for one latent frame, at step 0.
    pub fn frame_scheduler(&self) -> FlowUniPc {
        let first = if self.diffusion_forcing {
            FirstStepSample::Output
        } else {
            FirstStepSample::Input
        };
        FlowUniPc::with_first_step_sample(&self.schedule, first)
    }

    /// The timestep matrix of a window of `frames` latent frames with `prefix` ready frames.
    pub fn rows(
        &self,
        frames: usize,
        prefix: usize,
        ar_step: usize,
        causal_block_size: usize,
    ) -> Result<Rows> {
        let matrix = timestep_matrix(
            frames,
            self.schedule.timesteps(),
            frames,
            ar_step,
            prefix,
            causal_block_size,
            false,
        )
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        Ok(Rows {
            timesteps: matrix
                .step_matrix
                .rows()
                .into_iter()
                .map(|row| row.iter().map(|&t| t as f32).collect())
                .collect(),
            update: matrix
                .update_mask
                .rows()
                .into_iter()
                .map(|row| row.to_vec())
                .collect(),
            interval: matrix
                .valid_interval
                .iter()
                .map(|r| (r.start, r.end))
                .collect(),
        })
    }
}
