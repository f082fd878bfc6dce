//! σ schedules and model timesteps of the two references (SPEC.md §5.1, §3.7): SkyReels-V2's
//! `FlowUniPCMultistepScheduler.set_timesteps`
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/scheduler/fm_solvers_unipc.py>)
//! and diffusers' `UniPCMultistepScheduler.set_timesteps` with `use_flow_sigmas=True`
//! (<https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_unipc_multistep.py>).

use super::SchedulerError;

/// Number of training timesteps of every SkyReels-V2 / Wan model.
const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// Which reference's σ schedule to reproduce; the two differ by up to 5 timesteps (SPEC.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigmaSchedule {
    /// SkyReels-V2 / Wan: `linspace(0.999, 0, N+1)[:-1]`, shifted; 30/8 gives `[999, 995, 991, 986, 980, …, 216]`.
    Upstream,
    /// diffusers: `linspace(1, 0.001, N+1)[:-1]`, shifted, then `σ₀ −= 1e-6`; 30/8 gives `[999, 995, 991, 986, 981, …, 221]`.
    Diffusers,
}

/// The σ values and model timesteps of an `N`-step run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    sigma_schedule: SigmaSchedule,
    shift: f64,
    sigmas: Vec<f32>,
    timesteps: Vec<i64>,
}

impl Schedule {
    /// The schedule of `num_inference_steps` steps with flow `shift` (`s·σ / (1 + (s−1)·σ)`), as `sigma_schedule`'s reference computes it.
    pub fn new(
        sigma_schedule: SigmaSchedule,
        num_inference_steps: usize,
        shift: f64,
    ) -> Result<Schedule, SchedulerError> {
        if num_inference_steps == 0 {
            return Err(SchedulerError::NoSteps);
        }
        if !(shift.is_finite() && shift > 0.0) {
            return Err(SchedulerError::InvalidShift { shift });
        }
        let shifted = |sigma: f64| shift * sigma / (1.0 + (shift - 1.0) * sigma);
        let sigmas_f64: Vec<f64> = match sigma_schedule {
            SigmaSchedule::Upstream => {
                // The training σ table is float32: σ_max = float32(1 − 1/1000) = 0.9990000128746033, σ_min = 0.
                let sigma_max = f64::from((1.0 - 1.0 / NUM_TRAIN_TIMESTEPS as f64) as f32);
                linspace_without_stop(sigma_max, 0.0, num_inference_steps + 1)
                    .into_iter()
                    .map(shifted)
                    .collect()
            }
            SigmaSchedule::Diffusers => {
                let mut sigmas: Vec<f64> = linspace_without_stop(
                    1.0,
                    1.0 / NUM_TRAIN_TIMESTEPS as f64,
                    num_inference_steps + 1,
                )
                .into_iter()
                .map(shifted)
                .collect();
                let epsilon = 1e-6;
                if (sigmas[0] - 1.0).abs() < epsilon {
                    sigmas[0] -= epsilon;
                }
                sigmas
            }
        };
        let timesteps = sigmas_f64
            .iter()
            .map(|&sigma| (sigma * NUM_TRAIN_TIMESTEPS as f64) as i64)
            .collect();
        let sigmas = sigmas_f64
            .iter()
            .map(|&sigma| sigma as f32)
            .chain([0.0])
            .collect();
        Ok(Schedule {
            sigma_schedule,
            shift,
            sigmas,
            timesteps,
        })
    }

    /// σ_0 … σ_N as float32, the exact values the solver uses; σ_N = 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The N model timesteps `trunc(σ_i · 1000)` (σ_i in float64), descending; also the diffusion-forcing step template.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Number of steps N.
    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The reference flavour this schedule reproduces.
    pub fn sigma_schedule(&self) -> SigmaSchedule {
        self.sigma_schedule
    }

    /// The flow shift it was built with.
    pub fn shift(&self) -> f64 {
        self.shift
    }
}

/// `numpy.linspace(start, stop, num_points)[:-1]`, evaluated as numpy does (`i·step + start`).
fn linspace_without_stop(start: f64, stop: f64, num_points: usize) -> Vec<f64> {
    let step = (stop - start) / (num_points - 1) as f64;
    (0..num_points - 1)
        .map(|i| i as f64 * step + start)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_timesteps(num_inference_steps: usize, shift: f64) -> Vec<i64> {
        Schedule::new(SigmaSchedule::Upstream, num_inference_steps, shift)
            .unwrap()
            .timesteps()
            .to_vec()
    }

    /// SPEC.md §3.1 / §5.1, copied from the spec.
    #[test]
    fn upstream_30_steps_shift_8_matches_spec() {
        assert_eq!(
            upstream_timesteps(30, 8.0),
            [
                999, 995, 991, 986, 980, 975, 969, 963, 956, 948, 941, 932, 922, 912, 901, 888,
                874, 859, 841, 822, 799, 773, 743, 708, 666, 615, 551, 470, 363, 216
            ]
        );
    }

    #[test]
    fn upstream_50_steps_shift_8_matches_spec() {
        assert_eq!(
            upstream_timesteps(50, 8.0),
            [
                999, 997, 994, 991, 989, 986, 983, 979, 976, 973, 969, 965, 961, 957, 953, 948,
                944, 939, 934, 928, 922, 916, 910, 903, 896, 888, 880, 871, 862, 852, 841, 830,
                817, 804, 789, 773, 756, 737, 716, 692, 666, 636, 603, 565, 521, 470, 409, 337,
                249, 140
            ]
        );
    }

    #[test]
    fn upstream_30_steps_shift_5_matches_spec() {
        assert_eq!(
            upstream_timesteps(30, 5.0),
            [
                999, 992, 985, 978, 969, 961, 952, 942, 931, 920, 908, 895, 882, 867, 850, 833,
                813, 792, 768, 742, 713, 681, 644, 603, 555, 499, 434, 356, 262, 146
            ]
        );
    }

    #[test]
    fn upstream_50_steps_shift_5_matches_spec() {
        assert_eq!(
            upstream_timesteps(50, 5.0),
            [
                999, 995, 991, 987, 982, 978, 973, 968, 963, 957, 952, 946, 940, 934, 927, 920,
                913, 906, 898, 890, 882, 873, 863, 854, 843, 833, 821, 809, 796, 783, 768, 753,
                737, 720, 701, 681, 660, 636, 611, 584, 555, 522, 487, 448, 405, 356, 302, 241,
                172, 92
            ]
        );
    }

    #[test]
    fn upstream_50_steps_shift_3_matches_spec() {
        assert_eq!(
            upstream_timesteps(50, 3.0),
            [
                999, 992, 985, 978, 971, 963, 956, 948, 939, 931, 922, 913, 904, 894, 884, 874,
                864, 853, 841, 829, 817, 805, 792, 778, 764, 749, 734, 718, 701, 684, 666, 647,
                627, 606, 585, 562, 538, 512, 486, 458, 428, 396, 363, 327, 290, 249, 206, 160,
                111, 57
            ]
        );
    }

    #[test]
    fn upstream_30_steps_shift_3_matches_spec() {
        assert_eq!(
            upstream_timesteps(30, 3.0),
            [
                999, 988, 976, 963, 950, 937, 922, 907, 891, 874, 856, 837, 817, 796, 773, 749,
                723, 696, 666, 634, 599, 562, 521, 476, 428, 374, 315, 249, 176, 93
            ]
        );
    }

    /// SPEC.md §5.1: `σ₀ = 0.99987489, σ₁ = 0.99557984 … σ₂₈ = 0.36338836, σ₂₉ = 0.21604088, σ₃₀ = 0` (8 digits).
    #[test]
    fn upstream_30_steps_shift_8_sigmas_match_spec() {
        let schedule = Schedule::new(SigmaSchedule::Upstream, 30, 8.0).unwrap();
        let sigmas = schedule.sigmas();
        assert_eq!(sigmas.len(), 31);
        for (index, expected) in [
            (0, 0.99987489),
            (1, 0.99557984),
            (28, 0.36338836),
            (29, 0.21604088),
        ] {
            let difference = (f64::from(sigmas[index]) - expected).abs();
            assert!(
                difference <= 5e-9,
                "σ_{index} = {} differs from {expected} by {difference:e}",
                sigmas[index]
            );
        }
        assert_eq!(sigmas[30], 0.0);
    }

    /// SPEC.md §3.7: diffusers' 30-step, shift-8 timesteps.
    #[test]
    fn diffusers_30_steps_shift_8_matches_spec() {
        let schedule = Schedule::new(SigmaSchedule::Diffusers, 30, 8.0).unwrap();
        assert_eq!(
            schedule.timesteps(),
            [
                999, 995, 991, 986, 981, 975, 969, 963, 956, 949, 941, 932, 923, 912, 901, 889,
                875, 859, 842, 822, 800, 774, 744, 709, 667, 616, 553, 473, 367, 221
            ]
        );
        assert_eq!(schedule.sigmas()[0], (1.0f64 - 1e-6) as f32);
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        assert_eq!(
            Schedule::new(SigmaSchedule::Upstream, 0, 8.0),
            Err(SchedulerError::NoSteps)
        );
        for shift in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Schedule::new(SigmaSchedule::Diffusers, 30, shift),
                Err(SchedulerError::InvalidShift { .. })
            ));
        }
    }

    #[test]
    fn linspace_matches_numpy_evaluation_order() {
        assert_eq!(
            linspace_without_stop(1.0, 0.001, 4),
            [1.0, 1.0 + 1.0 * (-0.999 / 3.0), 1.0 + 2.0 * (-0.999 / 3.0)]
        );
    }
}
