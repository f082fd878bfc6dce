//! Times DiT forward passes (embed → blocks → head) on random inputs and prints one JSON line:
//! `dit_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH ITERATIONS [CAUSAL_BLOCK_SIZE]` (latent
//! frames and latent height/width; with a causal block size, block-causal self-attention over
//! blocks of that many latent frames). The first pass (session warm-up, cuDNN/kernel selection)
//! is timed separately.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::loaded_libraries::ProcessReport;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::Backend;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, backend, frames, height, width, iterations, causal_block_size) = match args.as_slice()
    {
        [_, dir, backend, frames, height, width, iterations] => {
            (dir, backend, frames, height, width, iterations, None)
        }
        [_, dir, backend, frames, height, width, iterations, block] => (
            dir,
            backend,
            frames,
            height,
            width,
            iterations,
            Some(block.parse::<usize>()?),
        ),
        _ => bail!(
            "usage: dit_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH ITERATIONS [CAUSAL_BLOCK_SIZE]"
        ),
    };
    let backend = match backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let (frames, height, width, iterations): (usize, usize, usize, usize) = (
        frames.parse()?,
        height.parse()?,
        width.parse()?,
        iterations.parse()?,
    );
    let engine = Engine::open(&PathBuf::from(dir))?;
    let config = engine.manifest.dit.as_ref().expect("DiT").config.clone();
    let started = Instant::now();
    let mut dit = Dit::load(&engine, &backend, causal_block_size)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut noise = NoiseSource::seeded(0);
    let latents = noise.draw(&[1, config.in_dim, frames, height, width])?;
    let timesteps = Tensor::new(
        vec![1, frames],
        (0..frames).map(|f| 999.0 - 30.0 * f as f32).collect(),
    )?;
    let context = noise.draw(&[1, config.text_len, config.text_dim])?;
    let fps = [1i64];
    let inputs = DitInputs {
        latents: &latents,
        timesteps: &timesteps,
        context: &context,
        fps: Some(&fps),
        image_context: None,
    };
    let warm = Instant::now();
    let first = dit.forward(&inputs)?;
    let warm_seconds = warm.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        let out = dit.forward(&inputs)?;
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(out.shape, first.shape);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let finite = first.data.iter().all(|v| v.is_finite());
    let tokens = frames * height / 2 * width / 2;
    #[expect(clippy::print_stdout, reason = "the benchmark's result line")]
    {
        println!(
            "{}",
            serde_json::json!({"bench": "dit_forward", "impl": "skyreels-onnxruntime", "dim": config.dim, "layers": config.num_layers,
                "tokens": tokens, "causal_block_size": causal_block_size, "load_s": load_seconds, "first_s": warm_seconds, "median_s": median, "times_s": times, "finite": finite,
                "process": ProcessReport::collect(&backend)})
        );
    }
    Ok(())
}
