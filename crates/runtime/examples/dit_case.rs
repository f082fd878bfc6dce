//! Runs one DiT reference case (a `tests/fixtures/dit/*/cases/*.safetensors` file) on an engine and
//! prints the error against the recorded velocity as one JSON line:
//! `dit_case ENGINE_DIR cpu|cuda CASE.safetensors` — used to measure fp16/bf16 accuracy on a GPU.

use std::path::PathBuf;

use anyhow::{Context, bail};
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::output::read_tensor;
use skyreels_runtime::session::Backend;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, backend, case] = args.as_slice() else {
        bail!("usage: dit_case ENGINE_DIR cpu|cuda CASE.safetensors");
    };
    let backend = match backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let engine = Engine::open(&PathBuf::from(dir))?;
    let path = PathBuf::from(case);
    let read = |name: &str, rank: usize| read_tensor(&path, name, &vec![None; rank]).ok();
    let tensors: std::collections::HashMap<&str, _> = [
        ("latents", 5),
        ("timesteps", 2),
        ("context", 3),
        ("image_context", 3),
        ("velocity", 5),
    ]
    .into_iter()
    .filter_map(|(n, rank)| read(n, rank).map(|t| (n, t)))
    .collect();
    let get = |name: &str| {
        tensors
            .get(name)
            .with_context(|| format!("case has no `{name}`"))
    };
    let mut dit = Dit::load(&engine, &backend, None)?;
    let inputs = DitInputs {
        latents: get("latents")?,
        timesteps: get("timesteps")?,
        context: get("context")?,
        fps: Some(&[1]),
        image_context: tensors.get("image_context"),
    };
    let velocity = dit.forward(&inputs)?;
    let expected = get("velocity")?;
    let max_abs = velocity.max_abs_diff(expected);
    let scale = expected.data.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    #[expect(clippy::print_stdout, reason = "the result line")]
    {
        println!(
            "{}",
            serde_json::json!({"case": case, "engine": dir, "precision": engine.manifest.precision, "max_abs": max_abs, "max_abs_relative_to_max": max_abs / scale})
        );
    }
    Ok(())
}
