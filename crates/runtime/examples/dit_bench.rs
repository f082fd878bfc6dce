//! Times DiT forward passes (embed → layers → head) on random inputs and prints one JSON line:
//! `dit_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH ITERATIONS [--causal-block-size N]
//! [--offload] [--max-gpu-memory SIZE] [--guided]` (latent frames and latent height/width; with
//! `--causal-block-size`, block-causal self-attention over blocks of N latent frames; `--offload`
//! and `--max-gpu-memory` place the layer weights as `skyreels generate` does; `--guided` times
//! one guided row, both guidance branches, each layer passed by both before its weights leave
//! when they are streamed). The first pass (session warm-up, cuDNN/kernel selection) is timed
//! separately.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::placement::{DitMemoryPlan, WeightPlacement};
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::loaded_libraries::ProcessReport;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::Backend;

const USAGE: &str = "usage: dit_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH ITERATIONS [--causal-block-size N] [--offload] [--max-gpu-memory SIZE] [--guided]";

fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let (mut causal_block_size, mut offload, mut max_gpu_memory, mut guided) =
        (None, false, None, false);
    let mut args = std::env::args();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--causal-block-size" => {
                let Some(value) = args.next() else {
                    bail!(USAGE)
                };
                causal_block_size = Some(value.parse::<usize>()?);
            }
            "--max-gpu-memory" => {
                let Some(value) = args.next() else {
                    bail!(USAGE)
                };
                max_gpu_memory = Some(value);
            }
            "--offload" => offload = true,
            "--guided" => guided = true,
            _ => positional.push(arg),
        }
    }
    let [_, dir, backend, frames, height, width, iterations] = positional.as_slice() else {
        bail!(USAGE);
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
    let memory = DitMemoryPlan::for_engine(&engine, offload, max_gpu_memory.as_deref())?;
    let started = Instant::now();
    let mut dit = Dit::load_with(&engine, &backend, causal_block_size, memory.placement)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut noise = NoiseSource::seeded(0);
    let latents = noise.draw(&[1, config.in_dim, frames, height, width])?;
    let timesteps = Tensor::new(
        vec![1, frames],
        (0..frames).map(|f| 999.0 - 30.0 * f as f32).collect(),
    )?;
    let context = noise.draw(&[1, config.text_len, config.text_dim])?;
    let negative_context = noise.draw(&[1, config.text_len, config.text_dim])?;
    let fps = [1i64];
    let inputs = |context| DitInputs {
        latents: &latents,
        timesteps: &timesteps,
        context,
        fps: Some(&fps),
        image_context: None,
    };
    let branches = [inputs(&context), inputs(&negative_context)];
    let branches = if guided {
        &branches[..]
    } else {
        &branches[..1]
    };
    let mut run = || -> anyhow::Result<Tensor> {
        if memory.placement == WeightPlacement::Resident {
            let mut velocities = Vec::new();
            for branch in branches {
                velocities.push(dit.forward(branch)?);
            }
            return Ok(velocities.swap_remove(0));
        }
        let mut pools = Vec::new();
        for branch in branches {
            pools.push(dit.embed(branch)?);
        }
        dit.blocks_of(&mut pools.iter_mut().collect::<Vec<_>>())?;
        let mut velocities = Vec::new();
        for pool in &mut pools {
            dit.head(pool)?;
            velocities.push(pool.to_host(skyreels_contract::io::VELOCITY)?);
        }
        Ok(velocities.swap_remove(0))
    };
    let warm = Instant::now();
    let first = run()?;
    let warm_seconds = warm.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        let out = run()?;
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
                "tokens": tokens, "causal_block_size": causal_block_size, "guided": guided, "placement": memory.placement,
                "max_gpu_memory": memory.max_gpu_memory, "weight_bytes": memory.bytes, "load_s": load_seconds, "first_s": warm_seconds, "median_s": median, "times_s": times, "finite": finite,
                "arena": dit.arena_stats()?, "process": ProcessReport::collect(&backend)})
        );
    }
    Ok(())
}
