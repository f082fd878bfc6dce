//! Flow UniPC and its σ schedules against diffusers' `UniPCMultistepScheduler(use_flow_sigmas=True)`
//! (`tools/reference/make_scheduler_fixtures.py`).

use anyhow::{Context, Result, ensure};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::Deserialize;
use skyreels_runtime::scheduler::{FirstStepSample, FlowUniPc, Schedule, Scheduler, SigmaSchedule};

use super::fixture_path;

/// Largest accepted |Rust − diffusers| on a σ.
const SIGMA_TOLERANCE: f64 = 1e-7;
/// Largest accepted |Rust − diffusers| on any sample of a whole trajectory.
const TRAJECTORY_TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleCase {
    steps: usize,
    shift: f64,
    sigmas: Vec<f64>,
    timesteps: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrajectoryCase {
    name: String,
    steps: usize,
    shift: f64,
    shape: Vec<usize>,
    #[serde(rename = "loop")]
    loop_kind: String,
    #[expect(dead_code, reason = "documents the generator's seed")]
    seed: u64,
}

fn read_json<T: serde::de::DeserializeOwned>(name: &str) -> Result<T> {
    let path = fixture_path(&format!("scheduler/{name}"));
    let bytes = fs_err::read(&path)?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Reads a float32 tensor of a safetensors file.
fn read_tensor(tensors: &safetensors::SafeTensors<'_>, name: &str) -> Result<ArrayD<f32>> {
    let view = tensors.tensor(name)?;
    ensure!(
        view.dtype() == safetensors::Dtype::F32,
        "`{name}` is {:?}, expected F32",
        view.dtype()
    );
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap()))
        .collect();
    Ok(ArrayD::from_shape_vec(IxDyn(view.shape()), values)?)
}

fn max_abs_difference(a: &ArrayD<f32>, b: ndarray::ArrayViewD<'_, f32>) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn diffusers_schedules_match() -> Result<()> {
    let cases: Vec<ScheduleCase> = read_json("schedules.json")?;
    ensure!(cases.len() == 4);
    for case in cases {
        let schedule = Schedule::new(SigmaSchedule::Diffusers, case.steps, case.shift)?;
        assert_eq!(
            schedule.timesteps(),
            case.timesteps,
            "timesteps of {}/{}",
            case.steps,
            case.shift
        );
        assert_eq!(schedule.sigmas().len(), case.sigmas.len());
        let difference = schedule
            .sigmas()
            .iter()
            .zip(&case.sigmas)
            .map(|(&ours, &theirs)| (f64::from(ours) - theirs).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "diffusers σ {}/{}: max |Δ| = {difference:e}",
            case.steps, case.shift
        );
        assert!(
            difference <= SIGMA_TOLERANCE,
            "σ of {}/{} differ by {difference:e}",
            case.steps,
            case.shift
        );
    }
    Ok(())
}

/// Steps the fixture's velocities from its first sample and compares every later sample.
#[test]
fn unipc_trajectories_match_diffusers() -> Result<()> {
    let cases: Vec<TrajectoryCase> = read_json("trajectories.json")?;
    ensure!(cases.len() == 5);
    for case in cases {
        let bytes = fs_err::read(fixture_path(&format!(
            "scheduler/{}.safetensors",
            case.name
        )))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)?;
        let samples = read_tensor(&tensors, "samples")?;
        let velocities = read_tensor(&tensors, "velocities")?;
        assert_eq!(samples.shape()[1..], case.shape[..], "{}", case.name);
        assert_eq!(samples.shape()[0], case.steps + 1, "{}", case.name);
        let schedule = Schedule::new(SigmaSchedule::Diffusers, case.steps, case.shift)?;

        let worst = match case.loop_kind.as_str() {
            "rebind" => run_trajectory(
                &schedule,
                &samples,
                &velocities,
                None,
                FirstStepSample::Input,
            ),
            "in_place_frames" => {
                // [1, 16, F, H, W]: one state per latent frame, as the diffusion-forcing loop keeps them.
                let worst = run_trajectory(
                    &schedule,
                    &samples,
                    &velocities,
                    Some(2),
                    FirstStepSample::Output,
                );
                let intended = run_trajectory(
                    &schedule,
                    &samples,
                    &velocities,
                    Some(2),
                    FirstStepSample::Input,
                );
                assert!(
                    intended > 1e-3,
                    "{}: the first-step aliasing should matter, Δ = {intended:e}",
                    case.name
                );
                worst
            }
            other => anyhow::bail!("unknown loop {other}"),
        };
        eprintln!("{}: max |Δ| over the trajectory = {worst:e}", case.name);
        assert!(
            worst <= TRAJECTORY_TOLERANCE,
            "{}: trajectory differs by {worst:e}",
            case.name
        );
    }
    Ok(())
}

/// Runs the whole trajectory from `samples[0]`, one state per index of `frame_axis` (or one state);
/// returns the largest difference to the reference samples over all steps.
fn run_trajectory(
    schedule: &Schedule,
    samples: &ArrayD<f32>,
    velocities: &ArrayD<f32>,
    frame_axis: Option<usize>,
    first_step_sample: FirstStepSample,
) -> f32 {
    let mut sample = samples.index_axis(Axis(0), 0).to_owned();
    let num_states = frame_axis.map_or(1, |axis| sample.shape()[axis]);
    let mut states: Vec<FlowUniPc> = (0..num_states)
        .map(|_| FlowUniPc::with_first_step_sample(schedule, first_step_sample))
        .collect();
    let mut worst = 0.0f32;
    for step in 0..schedule.num_steps() {
        let velocity = velocities.index_axis(Axis(0), step);
        match frame_axis {
            None => states[0].step(velocity, sample.view_mut()).unwrap(),
            Some(axis) => {
                for (frame, state) in states.iter_mut().enumerate() {
                    let frame_velocity = velocity.index_axis(Axis(axis), frame);
                    state
                        .step(frame_velocity, sample.index_axis_mut(Axis(axis), frame))
                        .unwrap();
                }
            }
        }
        worst = worst.max(max_abs_difference(
            &sample,
            samples.index_axis(Axis(0), step + 1),
        ));
    }
    assert!(states.iter().all(Scheduler::is_finished));
    worst
}
