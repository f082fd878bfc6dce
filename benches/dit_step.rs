//! The tiny DiT on ONNX Runtime CPU, latents `[1, 16, 3, 8, 12]`: one forward pass
//! (`embed` → `blocks` → `head`), and one sampling row with classifier-free guidance through
//! `sample_window` (two forwards, the guidance mix and three UniPC frame steps).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use skyreels_benches::TinyEngine;
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::plan::Compat;
use skyreels_runtime::pipeline::sampler::{Rows, WindowSettings, sample_window};
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::tensor::Tensor;

const NUM_FRAMES: usize = 3;
const LATENT_SHAPE: [usize; 5] = [1, 16, NUM_FRAMES, 8, 12];

fn dit_step(c: &mut Criterion) {
    let tiny = TinyEngine::export().expect("exporting the tiny engine");
    let engine = Engine::open(&tiny.dir()).expect("opening the tiny engine");
    let backend = Backend::Cpu { threads: 0 };
    let mut noise = NoiseSource::seeded(0);
    let latents = noise.draw(&LATENT_SHAPE).expect("noise");
    let text_dim = engine
        .manifest
        .dit
        .as_ref()
        .expect("the tiny engine has a DiT")
        .config
        .text_dim;
    let context = noise.draw(&[1, 512, text_dim]).expect("noise");
    let negative_context = noise.draw(&[1, 512, text_dim]).expect("noise");

    let mut dit = Dit::load(&engine, &backend, None).expect("loading the DiT");
    let timesteps = Tensor::new(vec![1, NUM_FRAMES], vec![999.0; NUM_FRAMES]).expect("[1, F]");
    let inputs = DitInputs {
        latents: &latents,
        timesteps: &timesteps,
        context: &context,
        fps: Some(&[1]),
        image_context: None,
    };
    c.bench_function("tiny_dit_forward_16x3x8x12", |b| {
        b.iter(|| dit.forward(black_box(&inputs)).expect("forward"))
    });

    let mut denoiser = DitDenoiser {
        dit,
        context,
        negative_context: Some(negative_context),
        image_context: None,
        fps: 1,
        condition: None,
    };
    let schedule = FlowSchedule::new(Compat::Upstream, 30, 8.0, true).expect("30 steps, shift 8");
    let window = schedule
        .rows(NUM_FRAMES, 0, 0, 1)
        .expect("a synchronous window");
    let rows = Rows {
        timesteps: vec![window.timesteps[0].clone()],
        update: vec![window.update[0].clone()],
        interval: vec![window.interval[0]],
    };
    let settings = WindowSettings {
        guidance: 6.0,
        addnoise_condition: 0.0,
        teacache: None,
    };
    c.bench_function("tiny_sample_row_cfg_16x3x8x12", |b| {
        b.iter_batched_ref(
            || {
                let schedulers: Vec<_> = (0..NUM_FRAMES)
                    .map(|_| schedule.frame_scheduler())
                    .collect();
                (latents.clone(), schedulers)
            },
            |(latents, schedulers)| {
                let stats = sample_window(
                    &mut denoiser,
                    latents,
                    0,
                    &rows,
                    schedulers,
                    &settings,
                    &mut noise,
                    &mut |_| Ok(()),
                )
                .expect("one row");
                assert_eq!(stats.forwards, 2, "conditional and unconditional");
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, dit_step);
criterion_main!(benches);
