//! Flow-matching samplers for SkyReels-V2: the σ schedule (SPEC.md §5.1, §3.7), the order-2
//! UniPC solver every reference pipeline uses (SPEC.md §5.2) and a plain Euler step.
//!
//! Upstream: <https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/scheduler/fm_solvers_unipc.py>;
//! diffusers: <https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_unipc_multistep.py>.
//!
//! A scheduler state is a value owned by the sampling loop. Diffusion forcing keeps one state per
//! latent frame and steps the `[16, H, W]` view of that frame in place:
//! `states[frame].step(velocity.index_axis(Axis(1), frame), latents.index_axis_mut(Axis(1), frame))`.

mod euler;
mod schedule;
mod unipc;

pub use euler::FlowEuler;
pub use schedule::{Schedule, SigmaSchedule};
pub use unipc::{FirstStepSample, FlowUniPc};

use ndarray::{ArrayView, ArrayViewMut, Dimension};

/// Why a schedule could not be built or a step could not be taken; each message names the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// `num_inference_steps` was 0.
    #[error("num_inference_steps must be at least 1, got 0")]
    NoSteps,
    /// The flow shift is not a finite positive number.
    #[error(
        "shift must be a finite number > 0 (SkyReels-V2 uses 8.0 for T2V, 5.0 for I2V), got {shift}"
    )]
    InvalidShift {
        /// The rejected shift.
        shift: f64,
    },
    /// The velocity and the sample have different shapes.
    #[error(
        "velocity shape {velocity:?} differs from sample shape {sample:?}: pass the model output for exactly this sample"
    )]
    ShapeMismatch {
        /// Shape of the velocity.
        velocity: Vec<usize>,
        /// Shape of the sample.
        sample: Vec<usize>,
    },
    /// The sample has a different element count than at the state's earlier steps.
    #[error(
        "this scheduler state was stepped with {expected} elements, now {found}: keep one state per latent frame"
    )]
    SizeChanged {
        /// Element count of the earlier steps.
        expected: usize,
        /// Element count of this step.
        found: usize,
    },
    /// Every step of the schedule has been taken.
    #[error(
        "all {num_steps} steps of the schedule were already taken: start a new scheduler state for a new window"
    )]
    Finished {
        /// Steps in the schedule.
        num_steps: usize,
    },
}

/// A flow-matching sampler state that moves one sample from σ_i to σ_{i+1} per call.
pub trait Scheduler {
    /// Replaces `sample` (at σ_i) by the sample at σ_{i+1}, given the model's `velocity` for it.
    fn step<D: Dimension>(
        &mut self,
        velocity: ArrayView<'_, f32, D>,
        sample: ArrayViewMut<'_, f32, D>,
    ) -> Result<(), SchedulerError>;

    /// Steps taken so far, `i` (the next step goes from σ_i to σ_{i+1}).
    fn step_index(&self) -> usize;

    /// The schedule this state walks.
    fn schedule(&self) -> &Schedule;

    /// The model timestep of the next step, `None` once every step is taken.
    fn next_timestep(&self) -> Option<i64> {
        self.schedule().timesteps().get(self.step_index()).copied()
    }

    /// Whether every step of the schedule has been taken.
    fn is_finished(&self) -> bool {
        self.step_index() >= self.schedule().num_steps()
    }
}

/// Checks the shapes of one step; returns the element count.
fn check_step<D: Dimension>(
    velocity: &ArrayView<'_, f32, D>,
    sample: &ArrayViewMut<'_, f32, D>,
    step_index: usize,
    schedule: &Schedule,
) -> Result<usize, SchedulerError> {
    if velocity.shape() != sample.shape() {
        return Err(SchedulerError::ShapeMismatch {
            velocity: velocity.shape().to_vec(),
            sample: sample.shape().to_vec(),
        });
    }
    if step_index >= schedule.num_steps() {
        return Err(SchedulerError::Finished {
            num_steps: schedule.num_steps(),
        });
    }
    Ok(sample.len())
}
