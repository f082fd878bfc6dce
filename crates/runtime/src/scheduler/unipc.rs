//! Flow-matching UniPC, as both references configure it (SPEC.md §5.2): order 2, `bh2`, x0
//! prediction, order 1 at the last step, final σ = 0, corrector on every step after the first.
//! Ports `step`, `multistep_uni_p_bh_update` and `multistep_uni_c_bh_update` of SkyReels-V2's
//! `FlowUniPCMultistepScheduler`
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/scheduler/fm_solvers_unipc.py>),
//! identical in substance to diffusers' `UniPCMultistepScheduler`
//! (<https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_unipc_multistep.py>).
//!
//! Precision follows the references with float32 latents: σ is float32 and every scalar
//! (λ, h, the φ and B(h) terms, the ρ solve) and every element operation is float32.

use ndarray::{ArrayView, ArrayViewMut, Dimension};

use super::{Schedule, Scheduler, SchedulerError, check_step};

/// The sample the step-1 corrector starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirstStepSample {
    /// The sample given to step 0, as UniPC intends; what a loop that rebinds `sample = step(…)` gets.
    Input,
    /// The sample step 0 returned. Both references' diffusion-forcing loops pass a view of the
    /// latents (`latents[:, idx]`) and write the output back through it; at step 0 (no corrector)
    /// the scheduler keeps that view as its last sample, so the write-back replaces it.
    Output,
}

/// UniPC state for one sample (one latent frame in diffusion forcing); step it with [`Scheduler::step`].
#[derive(Debug, Clone)]
pub struct FlowUniPc {
    schedule: Schedule,
    first_step_sample: FirstStepSample,
    step_index: usize,
    /// Steps taken so far, saturating at the solver order (the references' warm-up counter).
    lower_order_nums: usize,
    /// Order of the last predictor, which is the order of the next corrector.
    last_order: usize,
    /// x0 prediction of the last step.
    x0_latest: Option<Vec<f32>>,
    /// x0 prediction of the step before it.
    x0_before: Option<Vec<f32>>,
    /// The (corrected) sample the last predictor started from.
    last_sample: Option<Vec<f32>>,
}

impl FlowUniPc {
    /// Solver order.
    const ORDER: usize = 2;

    /// A fresh state at step 0 of `schedule`, correcting step 1 from step 0's input.
    pub fn new(schedule: &Schedule) -> FlowUniPc {
        FlowUniPc::with_first_step_sample(schedule, FirstStepSample::Input)
    }

    /// A fresh state at step 0 of `schedule`; `first_step_sample` picks what the step-1 corrector starts from.
    pub fn with_first_step_sample(
        schedule: &Schedule,
        first_step_sample: FirstStepSample,
    ) -> FlowUniPc {
        FlowUniPc {
            schedule: schedule.clone(),
            first_step_sample,
            step_index: 0,
            lower_order_nums: 0,
            last_order: 1,
            x0_latest: None,
            x0_before: None,
            last_sample: None,
        }
    }

    /// λ(σ) = ln α − ln σ with α = 1 − σ, in float32.
    fn lambda(&self, index: usize) -> f32 {
        let sigma = self.schedule.sigmas()[index];
        (1.0 - sigma).ln() - sigma.ln()
    }

    /// UniC-bh2: corrects the last sample, now that the x0 prediction `x0` at σ_i is known.
    fn correct<'a>(
        &self,
        x0: &[f32],
        last_sample: &[f32],
        x0_latest: &[f32],
        sample: impl Iterator<Item = &'a mut f32>,
    ) {
        let i = self.step_index;
        let sigmas = self.schedule.sigmas();
        let (sigma_t, sigma_s0) = (sigmas[i], sigmas[i - 1]);
        let alpha_t = 1.0 - sigma_t;
        let h = self.lambda(i) - self.lambda(i - 1);
        let coefficients = Coefficients::new(h);
        let ratio = sigma_t / sigma_s0;
        let x0_weight = alpha_t * coefficients.h_phi_1;
        let correction_weight = alpha_t * coefficients.b_h;
        match (self.last_order, &self.x0_before) {
            (2, Some(x0_before)) => {
                let rk = (self.lambda(i - 2) - self.lambda(i - 1)) / h;
                let [rho_d, rho_t] = solve_2x2([[1.0, 1.0], [rk, 1.0]], coefficients.b);
                let elements = sample
                    .zip(x0)
                    .zip(last_sample)
                    .zip(x0_latest)
                    .zip(x0_before);
                for ((((out, &x0_now), &last), &m0), &m1) in elements {
                    let predicted = ratio * last - x0_weight * m0;
                    let d1 = (m1 - m0) / rk;
                    *out = predicted - correction_weight * (rho_d * d1 + rho_t * (x0_now - m0));
                }
            }
            _ => {
                for (((out, &x0_now), &last), &m0) in sample.zip(x0).zip(last_sample).zip(x0_latest)
                {
                    let predicted = ratio * last - x0_weight * m0;
                    *out = predicted - correction_weight * (0.5 * (x0_now - m0));
                }
            }
        }
    }

    /// UniP-bh2 of the given `order` from σ_i to σ_{i+1}, in place; `x0_latest` is x0 at σ_i.
    fn predict<'a>(
        &self,
        order: usize,
        x0_latest: &[f32],
        sample: impl Iterator<Item = &'a mut f32>,
    ) {
        let i = self.step_index;
        let sigmas = self.schedule.sigmas();
        let (sigma_t, sigma_s0) = (sigmas[i + 1], sigmas[i]);
        let alpha_t = 1.0 - sigma_t;
        let h = self.lambda(i + 1) - self.lambda(i);
        let coefficients = Coefficients::new(h);
        let ratio = sigma_t / sigma_s0;
        let x0_weight = alpha_t * coefficients.h_phi_1;
        match (order, &self.x0_before) {
            (2, Some(x0_before)) => {
                let rk = (self.lambda(i - 1) - self.lambda(i)) / h;
                let correction_weight = alpha_t * coefficients.b_h;
                for ((out, &m0), &m1) in sample.zip(x0_latest).zip(x0_before) {
                    let predicted = ratio * *out - x0_weight * m0;
                    *out = predicted - correction_weight * (0.5 * ((m1 - m0) / rk));
                }
            }
            _ => {
                for (out, &m0) in sample.zip(x0_latest) {
                    *out = ratio * *out - x0_weight * m0;
                }
            }
        }
    }
}

impl Scheduler for FlowUniPc {
    /// One UniPC step: x0 = x − σ_i·v, corrector (from step 1 on), then the predictor to σ_{i+1}.
    fn step<D: Dimension>(
        &mut self,
        velocity: ArrayView<'_, f32, D>,
        mut sample: ArrayViewMut<'_, f32, D>,
    ) -> Result<(), SchedulerError> {
        let len = check_step(&velocity, &sample, self.step_index, &self.schedule)?;
        if let Some(expected) = self
            .x0_latest
            .as_ref()
            .map(Vec::len)
            .filter(|&expected| expected != len)
        {
            return Err(SchedulerError::SizeChanged {
                expected,
                found: len,
            });
        }
        let i = self.step_index;
        let sigma = self.schedule.sigmas()[i];
        let x0: Vec<f32> = sample
            .iter()
            .zip(velocity.iter())
            .map(|(&x, &v)| x - sigma * v)
            .collect();

        if let (Some(last_sample), Some(x0_latest)) = (&self.last_sample, &self.x0_latest) {
            self.correct(&x0, last_sample, x0_latest, sample.iter_mut());
        }
        self.x0_before = self.x0_latest.replace(x0);

        let order = Self::ORDER
            .min(self.schedule.num_steps() - i)
            .min(self.lower_order_nums + 1);
        let copy_input = i > 0 || self.first_step_sample == FirstStepSample::Input;
        self.last_sample = copy_input.then(|| sample.iter().copied().collect());
        let x0_latest = self
            .x0_latest
            .as_deref()
            .expect("x0 of this step was just stored");
        self.predict(order, x0_latest, sample.iter_mut());
        if self.last_sample.is_none() {
            self.last_sample = Some(sample.iter().copied().collect());
        }

        self.lower_order_nums = (self.lower_order_nums + 1).min(Self::ORDER);
        self.last_order = order;
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

/// The `bh2` scalars of one update over a λ-step `h` (`hh = −h` for x0 prediction).
struct Coefficients {
    /// φ₁ term `expm1(hh)`.
    h_phi_1: f32,
    /// B(h) = `expm1(hh)` for `bh2`.
    b_h: f32,
    /// Right-hand side of the order-2 ρ system.
    b: [f32; 2],
}

impl Coefficients {
    fn new(h: f32) -> Coefficients {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let h_phi_k_1 = h_phi_1 / hh - 1.0;
        let h_phi_k_2 = h_phi_k_1 / hh - 0.5;
        Coefficients {
            h_phi_1,
            b_h,
            b: [h_phi_k_1 / b_h, h_phi_k_2 * 2.0 / b_h],
        }
    }
}

/// Solves the 2×2 system `matrix · x = rhs` by Gaussian elimination with partial pivoting, in float32.
fn solve_2x2(matrix: [[f32; 2]; 2], rhs: [f32; 2]) -> [f32; 2] {
    let ([[a, b], [c, d]], [e, f]) = if matrix[1][0].abs() > matrix[0][0].abs() {
        ([matrix[1], matrix[0]], [rhs[1], rhs[0]])
    } else {
        (matrix, rhs)
    };
    let multiplier = c / a;
    let pivot = d - multiplier * b;
    let second = (f - multiplier * e) / pivot;
    [(e - b * second) / a, second]
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array3, Axis};

    use super::*;
    use crate::scheduler::SigmaSchedule;

    fn schedule(num_inference_steps: usize) -> Schedule {
        Schedule::new(SigmaSchedule::Upstream, num_inference_steps, 8.0).unwrap()
    }

    #[test]
    fn solve_2x2_pivots() {
        let [x, y] = solve_2x2([[1.0, 1.0], [-3.0, 1.0]], [2.0, -2.0]);
        assert!((x - 1.0).abs() < 1e-6 && (y - 1.0).abs() < 1e-6, "{x} {y}");
        let [x, y] = solve_2x2([[1.0, 1.0], [0.5, 1.0]], [3.0, 2.0]);
        assert!((x - 2.0).abs() < 1e-6 && (y - 1.0).abs() < 1e-6, "{x} {y}");
    }

    /// At the last step σ_N = 0, so the output is exactly the x0 prediction `x − σ_{N−1}·v`.
    #[test]
    fn last_step_returns_the_x0_prediction() {
        let schedule = schedule(3);
        let mut state = FlowUniPc::new(&schedule);
        let mut sample = Array1::from(vec![0.3f32, -1.2, 2.0]);
        let velocity = Array1::from(vec![0.5f32, 0.25, -1.0]);
        for _ in 0..2 {
            state.step(velocity.view(), sample.view_mut()).unwrap();
        }
        let sigma = schedule.sigmas()[2];
        let expected: Vec<f32> = sample
            .iter()
            .zip(&velocity)
            .map(|(x, v)| x - sigma * v)
            .collect();
        state.step(velocity.view(), sample.view_mut()).unwrap();
        assert_eq!(sample.to_vec(), expected);
        assert!(state.is_finished());
        assert_eq!(state.next_timestep(), None);
        assert_eq!(
            state.step(velocity.view(), sample.view_mut()),
            Err(SchedulerError::Finished { num_steps: 3 })
        );
    }

    /// A frame stepped through a strided view of `[C, F, H, W]` latents equals the same frame stepped alone.
    #[test]
    fn strided_views_step_like_contiguous_samples() {
        let schedule = schedule(4);
        let latents = Array3::from_shape_fn((3, 2, 4), |(c, f, w)| {
            (c * 8 + f * 4 + w) as f32 * 0.1 - 1.0
        });
        let velocity = latents.mapv(|x| 0.5 - x);
        let mut strided = latents.clone();
        let mut states = [FlowUniPc::new(&schedule), FlowUniPc::new(&schedule)];
        let mut alone: Vec<_> = (0..2)
            .map(|frame| latents.index_axis(Axis(1), frame).to_owned())
            .collect();
        let mut alone_states = states.clone();
        for _ in 0..4 {
            let frames = states.iter_mut().zip(&mut alone_states).zip(&mut alone);
            for (frame, ((state, alone_state), alone_sample)) in frames.enumerate() {
                let frame_velocity = velocity.index_axis(Axis(1), frame);
                state
                    .step(frame_velocity, strided.index_axis_mut(Axis(1), frame))
                    .unwrap();
                alone_state
                    .step(frame_velocity, alone_sample.view_mut())
                    .unwrap();
            }
        }
        for (frame, alone_sample) in alone.iter().enumerate() {
            assert_eq!(strided.index_axis(Axis(1), frame), alone_sample);
        }
    }

    #[test]
    fn mismatched_inputs_are_rejected() {
        let schedule = schedule(4);
        let mut state = FlowUniPc::new(&schedule);
        let mut sample = Array1::<f32>::zeros(4);
        let error = state
            .step(Array1::<f32>::zeros(3).view(), sample.view_mut())
            .unwrap_err();
        assert_eq!(
            error,
            SchedulerError::ShapeMismatch {
                velocity: vec![3],
                sample: vec![4]
            }
        );
        state
            .step(Array1::<f32>::zeros(4).view(), sample.view_mut())
            .unwrap();
        let mut other = Array1::<f32>::zeros(5);
        let error = state
            .step(Array1::<f32>::zeros(5).view(), other.view_mut())
            .unwrap_err();
        assert_eq!(
            error,
            SchedulerError::SizeChanged {
                expected: 4,
                found: 5
            }
        );
    }

    /// The two first-step variants agree at step 0 and differ from step 1 on.
    #[test]
    fn first_step_sample_only_changes_the_step_1_corrector() {
        let schedule = schedule(5);
        let start = Array1::from(vec![1.0f32, -0.5, 0.25]);
        let velocity = Array1::from(vec![0.2f32, 0.4, -0.3]);
        let run = |first_step_sample, steps| {
            let mut state = FlowUniPc::with_first_step_sample(&schedule, first_step_sample);
            let mut sample = start.clone();
            for _ in 0..steps {
                state.step(velocity.view(), sample.view_mut()).unwrap();
            }
            sample
        };
        assert_eq!(
            run(FirstStepSample::Input, 1),
            run(FirstStepSample::Output, 1)
        );
        assert_ne!(
            run(FirstStepSample::Input, 2),
            run(FirstStepSample::Output, 2)
        );
    }
}
