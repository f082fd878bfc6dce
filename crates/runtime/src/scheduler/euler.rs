//! Flow-matching Euler, `x_{i+1} = x_i + (σ_{i+1} − σ_i)·v`, on the same σ schedules as UniPC; the
//! update of diffusers' `FlowMatchEulerDiscreteScheduler.step`
//! (<https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py>).
//! No SkyReels-V2 pipeline uses it; it is a cheap first-order baseline.

use ndarray::{ArrayView, ArrayViewMut, Dimension, Zip};

use super::{Schedule, Scheduler, SchedulerError, check_step};

/// Euler state for one sample: only the step index.
#[derive(Debug, Clone)]
pub struct FlowEuler {
    schedule: Schedule,
    step_index: usize,
}

impl FlowEuler {
    /// A fresh state at step 0 of `schedule`.
    pub fn new(schedule: &Schedule) -> FlowEuler {
        FlowEuler {
            schedule: schedule.clone(),
            step_index: 0,
        }
    }
}

impl Scheduler for FlowEuler {
    /// One Euler step, in float32.
    fn step<D: Dimension>(
        &mut self,
        velocity: ArrayView<'_, f32, D>,
        mut sample: ArrayViewMut<'_, f32, D>,
    ) -> Result<(), SchedulerError> {
        check_step(&velocity, &sample, self.step_index, &self.schedule)?;
        let sigmas = self.schedule.sigmas();
        let delta = sigmas[self.step_index + 1] - sigmas[self.step_index];
        Zip::from(&mut sample)
            .and(&velocity)
            .for_each(|x, &v| *x += delta * v);
        self.step_index += 1;
        Ok(())
    }

    fn step_index(&self) -> usize {
        self.step_index
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array1;

    use super::*;
    use crate::scheduler::SigmaSchedule;

    /// A constant velocity moves the sample along a straight line, ending (σ_N = 0) at `x_start − σ_0·v`.
    #[test]
    fn constant_velocity_lands_on_the_straight_line_end() {
        let schedule = Schedule::new(SigmaSchedule::Diffusers, 10, 5.0).unwrap();
        let mut state = FlowEuler::new(&schedule);
        let velocity = Array1::from(vec![1.5f32, -0.5]);
        let mut sample = Array1::from(vec![0.5f32, 1.0]);
        let start = sample.clone();
        while !state.is_finished() {
            state.step(velocity.view(), sample.view_mut()).unwrap();
        }
        let sigma_0 = schedule.sigmas()[0];
        for ((x, x_start), v) in sample.iter().zip(&start).zip(&velocity) {
            assert!((x - (x_start - sigma_0 * v)).abs() < 1e-6, "{x}");
        }
        assert_eq!(
            state.step(velocity.view(), sample.view_mut()),
            Err(SchedulerError::Finished { num_steps: 10 })
        );
    }
}
