//! Flow-UniPC cost on the CPU: one steady-state step (order-2 predictor plus corrector) on a real
//! 540P latent frame `[16, 68, 120]`, and a whole 30-step trajectory on a tiny frame `[16, 8, 12]`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ndarray::{Array3, ArrayView3, ArrayViewMut3};
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::scheduler::{FlowUniPc, Schedule, Scheduler, SigmaSchedule};

const NUM_STEPS: usize = 30;
const SHIFT: f64 = 8.0;

fn frame(seed: u64, shape: [usize; 3]) -> Array3<f32> {
    let tensor = NoiseSource::seeded(seed)
        .draw(&shape)
        .expect("seeded noise");
    Array3::from_shape_vec(shape, tensor.data).expect("noise has the frame's shape")
}

fn step(state: &mut FlowUniPc, velocity: &Array3<f32>, sample: &mut Array3<f32>) {
    let velocity: ArrayView3<'_, f32> = velocity.view();
    let sample: ArrayViewMut3<'_, f32> = sample.view_mut();
    state
        .step(velocity, sample)
        .expect("same shapes, steps left");
}

fn scheduler_step(c: &mut Criterion) {
    let schedule =
        Schedule::new(SigmaSchedule::Upstream, NUM_STEPS, SHIFT).expect("30 steps, shift 8");

    let shape = [16, 68, 120];
    let velocity = frame(1, shape);
    let mut warm = FlowUniPc::new(&schedule);
    let mut sample = frame(0, shape);
    for _ in 0..2 {
        step(&mut warm, &velocity, &mut sample);
    }
    c.bench_function("unipc_step_16x68x120", |b| {
        b.iter_batched_ref(
            || (warm.clone(), sample.clone()),
            |(state, sample)| step(state, black_box(&velocity), sample),
            BatchSize::LargeInput,
        )
    });

    let shape = [16, 8, 12];
    let velocity = frame(1, shape);
    let noise = frame(0, shape);
    c.bench_function("unipc_30_steps_16x8x12", |b| {
        b.iter(|| {
            let mut state = FlowUniPc::new(&schedule);
            let mut sample = noise.clone();
            for _ in 0..NUM_STEPS {
                step(&mut state, black_box(&velocity), &mut sample);
            }
            sample
        })
    });
}

criterion_group!(benches, scheduler_step);
criterion_main!(benches);
