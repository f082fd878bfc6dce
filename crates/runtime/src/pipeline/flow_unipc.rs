//! Flow-matching UniPC (order 2, `bh2`, x0-prediction, lower order at the last step, final σ = 0)
//! for one latent frame, with both references' σ schedules. Ports of SkyReels-V2's
//! `FlowUniPCMultistepScheduler` (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/scheduler/fm_solvers_unipc.py>)
//! and diffusers' `UniPCMultistepScheduler(use_flow_sigmas=True)`; SPEC.md §5.

use super::plan::Compat;

/// σ values (N+1, last 0) and the integer model timesteps (N) of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaSchedule {
    /// Solver σ_0 … σ_N as float32, σ_N = 0.
    pub sigmas: Vec<f32>,
    /// Model timesteps `trunc(σ_i · 1000)`, i < N.
    pub timesteps: Vec<i64>,
}

fn shift(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

fn linspace(start: f64, end: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| if count == 1 { start } else { start + (end - start) * i as f64 / (count - 1) as f64 })
        .collect()
}

impl SigmaSchedule {
    /// The schedule of `steps` steps with flow `shift` as `compat`'s reference computes it.
    pub fn new(compat: Compat, steps: usize, shift_value: f64) -> SigmaSchedule {
        let sigmas: Vec<f64> = match compat {
            Compat::Upstream => {
                // σ_max is the float32 training σ at t = 999: 1 − 1/1000 rounded to float32.
                let sigma_max = (1.0f32 - 1.0 / 1000.0) as f64;
                let base = linspace(sigma_max, 0.0, steps + 1);
                base[..steps].iter().map(|&s| shift(s, shift_value)).collect()
            }
            Compat::Diffusers => {
                let base = linspace(1.0, 1.0 / 1000.0, steps + 1);
                let mut sigmas: Vec<f64> = base[..steps].iter().map(|&s| shift(s, shift_value)).collect();
                if (sigmas[0] - 1.0).abs() < 1e-6 {
                    sigmas[0] -= 1e-6;
                }
                sigmas
            }
        };
        let timesteps = sigmas.iter().map(|s| (s * 1000.0) as i64).collect();
        let mut solver: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        solver.push(0.0);
        SigmaSchedule { sigmas: solver, timesteps }
    }

    /// Number of steps N.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }
}

fn lambda(sigma: f32) -> f64 {
    let sigma = sigma as f64;
    (1.0 - sigma).ln() - sigma.ln()
}

/// UniPC state for one latent frame: step index, the last two x0 predictions, the last sample.
#[derive(Debug, Clone)]
pub struct FlowUniPc {
    sigmas: Vec<f32>,
    alias_first_sample: bool,
    step_index: usize,
    lower_order_nums: usize,
    this_order: usize,
    /// x0 predictions of the last two steps, oldest first.
    x0_history: [Option<Vec<f32>>; 2],
    last_sample: Option<Vec<f32>>,
}

impl FlowUniPc {
    /// A fresh state at step 0 of `schedule`.
    pub fn new(schedule: &SigmaSchedule) -> FlowUniPc {
        Self::with_aliasing(schedule, false)
    }

    /// A fresh state that reproduces the diffusion-forcing loops of both references: they step
    /// each frame through a *view* of the latents (`latents[:, idx]`), and at step 0 (no
    /// corrector) the scheduler stores that view as its last sample; writing the step's output
    /// back through the view turns the stored sample into x₁, so the step-1 corrector starts from
    /// x₁ instead of x₀. The synchronous T2V/I2V loops rebind the tensor and are unaffected.
    pub fn with_aliasing(schedule: &SigmaSchedule, alias_first_sample: bool) -> FlowUniPc {
        FlowUniPc {
            sigmas: schedule.sigmas.clone(),
            alias_first_sample,
            step_index: 0,
            lower_order_nums: 0,
            this_order: 1,
            x0_history: [None, None],
            last_sample: None,
        }
    }

    /// One solver step: `velocity` is the model output at σ_i for `sample`; returns the sample at σ_{i+1}.
    pub fn step(&mut self, velocity: &[f32], sample: &[f32]) -> Vec<f32> {
        let i = self.step_index;
        let steps = self.sigmas.len() - 1;
        let sigma = self.sigmas[i];
        let x0: Vec<f32> = sample.iter().zip(velocity).map(|(x, v)| x - sigma * v).collect();

        let mut corrected = sample.to_vec();
        if i > 0 {
            if let (Some(last_sample), Some(previous_x0)) = (&self.last_sample, &self.x0_history[1]) {
                corrected = self.corrector(last_sample, &x0, previous_x0);
            }
        }
        self.x0_history[0] = self.x0_history[1].take();
        self.x0_history[1] = Some(x0);
        let order = 2.min(steps - i).min(self.lower_order_nums + 1);
        self.this_order = order;
        self.last_sample = Some(corrected.clone());
        let next = self.predictor(&corrected, order);
        if i == 0 && self.alias_first_sample {
            self.last_sample = Some(next.clone());
        }
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        self.step_index += 1;
        next
    }

    /// UniP-bh2 from σ_i to σ_{i+1}.
    fn predictor(&self, sample: &[f32], order: usize) -> Vec<f32> {
        let i = self.step_index;
        let (sigma_s0, sigma_t) = (self.sigmas[i], self.sigmas[i + 1]);
        let alpha_t = 1.0 - sigma_t as f64;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = h_phi_1;
        let m0 = self.x0_history[1].as_ref().expect("current x0 pushed before predicting");
        let ratio = (sigma_t as f64 / sigma_s0 as f64) as f32;
        let c0 = (alpha_t * h_phi_1) as f32;
        let mut out: Vec<f32> = sample.iter().zip(m0).map(|(x, m)| ratio * x - c0 * m).collect();
        if order == 2 {
            let m1 = self.x0_history[0].as_ref().expect("order 2 needs two predictions");
            let rk = (lambda(self.sigmas[i - 1]) - lambda(sigma_s0)) / h;
            let c1 = (alpha_t * b_h * 0.5 / rk) as f32;
            for ((o, a), b) in out.iter_mut().zip(m1).zip(m0) {
                *o -= c1 * (a - b);
            }
        }
        out
    }

    /// UniC-bh2 correction of the sample stored at the previous step, using this step's x0.
    fn corrector(&self, last_sample: &[f32], x0: &[f32], previous_x0: &[f32]) -> Vec<f32> {
        let i = self.step_index;
        let (sigma_s0, sigma_t) = (self.sigmas[i - 1], self.sigmas[i]);
        let alpha_t = 1.0 - sigma_t as f64;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = h_phi_1;
        let ratio = (sigma_t as f64 / sigma_s0 as f64) as f32;
        let c0 = (alpha_t * h_phi_1) as f32;
        let b1 = (h_phi_1 / hh - 1.0) / b_h;
        let (rho_d, rho_t) = match self.this_order {
            1 => (0.0, 0.5),
            _ => {
                let rk = (lambda(self.sigmas[i - 2]) - lambda(sigma_s0)) / h;
                let b2 = 2.0 * ((h_phi_1 / hh - 1.0) / hh - 0.5) / b_h;
                // Solve [[1, 1], [rk, 1]] · ρ = [b1, b2].
                let rho_0 = (b1 - b2) / (1.0 - rk);
                let rho_1 = b1 - rho_0;
                (rho_0 / rk, rho_1)
            }
        };
        let older = self.x0_history[0].as_deref();
        let scale = alpha_t * b_h;
        (0..last_sample.len())
            .map(|k| {
                let m0 = previous_x0[k];
                let mut x = ratio * last_sample[k] - c0 * m0;
                let mut correction = rho_t * (x0[k] - m0) as f64;
                if let (Some(older), true) = (older, self.this_order == 2) {
                    correction += rho_d * (older[k] - m0) as f64;
                }
                x -= (scale * correction) as f32;
                x
            })
            .collect()
    }
}

/// Flow-matching Euler, `x_{i+1} = x_i + (σ_{i+1} − σ_i)·v`, on the same schedule.
#[derive(Debug, Clone)]
pub struct FlowEuler {
    sigmas: Vec<f32>,
    step_index: usize,
}

impl FlowEuler {
    /// A fresh state at step 0.
    pub fn new(schedule: &SigmaSchedule) -> FlowEuler {
        FlowEuler { sigmas: schedule.sigmas.clone(), step_index: 0 }
    }

    /// One Euler step.
    pub fn step(&mut self, velocity: &[f32], sample: &[f32]) -> Vec<f32> {
        let delta = self.sigmas[self.step_index + 1] - self.sigmas[self.step_index];
        self.step_index += 1;
        sample.iter().zip(velocity).map(|(x, v)| x + delta * v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC.md §5.1: upstream's integer timesteps and 30/8 sigmas.
    #[test]
    fn upstream_schedule_matches_the_spec_tables() {
        let s = SigmaSchedule::new(Compat::Upstream, 30, 8.0);
        assert_eq!(
            s.timesteps,
            [999, 995, 991, 986, 980, 975, 969, 963, 956, 948, 941, 932, 922, 912, 901, 888, 874, 859, 841, 822, 799, 773, 743, 708, 666, 615, 551, 470, 363, 216]
        );
        for (index, expected) in [(0, 0.99987489), (1, 0.99557984), (28, 0.36338836), (29, 0.21604088), (30, 0.0)] {
            assert!((s.sigmas[index] - expected).abs() < 1e-7, "σ_{index} = {}", s.sigmas[index]);
        }
        let s = SigmaSchedule::new(Compat::Upstream, 30, 3.0);
        assert_eq!(
            s.timesteps,
            [999, 988, 976, 963, 950, 937, 922, 907, 891, 874, 856, 837, 817, 796, 773, 749, 723, 696, 666, 634, 599, 562, 521, 476, 428, 374, 315, 249, 176, 93]
        );
        let s = SigmaSchedule::new(Compat::Upstream, 50, 5.0);
        assert_eq!(&s.timesteps[..8], [999, 995, 991, 987, 982, 978, 973, 968]);
        assert_eq!(&s.timesteps[44..], [405, 356, 302, 241, 172, 92]);
    }

    /// SPEC.md §3.7: diffusers' 30-step, shift-8 timesteps.
    #[test]
    fn diffusers_schedule_matches_the_spec() {
        let s = SigmaSchedule::new(Compat::Diffusers, 30, 8.0);
        assert_eq!(
            s.timesteps,
            [999, 995, 991, 986, 981, 975, 969, 963, 956, 949, 941, 932, 923, 912, 901, 889, 875, 859, 842, 822, 800, 774, 744, 709, 667, 616, 553, 473, 367, 221]
        );
        assert!((s.sigmas[0] - (1.0 - 1e-6)).abs() < 1e-7);
    }
}
