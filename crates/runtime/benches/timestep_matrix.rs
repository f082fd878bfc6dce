//! Diffusion-forcing timestep matrices on the CPU: the asynchronous recipe (25 latent frames,
//! 30 steps, ar_step 5, causal_block_size 5: 50 rows) and its per-frame variant (causal_block_size
//! 1: 150 rows).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use skyreels_runtime::scheduler::{Schedule, SigmaSchedule};
use skyreels_runtime::timestep_matrix::timestep_matrix;

const NUM_FRAMES: usize = 25;
const AR_STEP: usize = 5;

fn bench_timestep_matrix(c: &mut Criterion) {
    let schedule = Schedule::new(SigmaSchedule::Upstream, 30, 8.0).expect("30 steps, shift 8");
    let template = schedule.timesteps();
    for (name, causal_block_size, rows) in [
        ("async_25_frames_ar5_cbs5", 5, 50),
        ("async_25_frames_ar5_cbs1", 1, 150),
    ] {
        let plan = || {
            timestep_matrix(
                NUM_FRAMES,
                black_box(template),
                NUM_FRAMES,
                AR_STEP,
                0,
                causal_block_size,
                false,
            )
        };
        assert_eq!(plan().expect("valid recipe").num_rows(), rows, "{name}");
        c.bench_function(name, |b| b.iter(|| plan().expect("valid recipe")));
    }
}

criterion_group!(benches, bench_timestep_matrix);
criterion_main!(benches);
