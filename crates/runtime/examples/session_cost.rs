//! What one more CUDA session costs in device memory outside the shared arena: loads the VAE
//! graph `GRAPH` of an engine `COUNT` times (separate sessions, as the runtime's graphs are),
//! runs each once on zeros, and prints one JSON line with the device's used memory
//! (`cuMemGetInfo`) after the CUDA context, after each load and after each first run.
//! `session_cost ENGINE_DIR GRAPH COUNT HEIGHT WIDTH` (latent height and width for the inputs).

use std::path::PathBuf;

use anyhow::{Context, bail};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::{Backend, GraphSession, TensorPool};
use skyreels_runtime::tensor::Tensor;

fn used_mib() -> anyhow::Result<f64> {
    let (free, total) = cudarc::driver::result::mem_get_info().context("cuMemGetInfo")?;
    Ok((total - free) as f64 / (1u64 << 20) as f64)
}

/// A zero input for the spec `dims` (`height*4` style dims evaluated at the latent size).
fn zeros(dims: &[String], height: usize, width: usize) -> anyhow::Result<Tensor> {
    let mut shape = Vec::new();
    for dim in dims {
        let mut value = 1usize;
        for factor in dim.split('*') {
            value *= match factor {
                "batch" => 1,
                "height" => height,
                "width" => width,
                number => number
                    .parse()
                    .with_context(|| format!("dim `{dim}` of an input"))?,
            };
        }
        shape.push(value);
    }
    let count = shape.iter().product();
    Ok(Tensor::new(shape, vec![0.0; count])?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, graph, count, height, width] = args.as_slice() else {
        bail!("usage: session_cost ENGINE_DIR GRAPH COUNT HEIGHT WIDTH");
    };
    let (count, height, width): (usize, usize, usize) =
        (count.parse()?, height.parse()?, width.parse()?);
    let engine = Engine::open(&PathBuf::from(dir))?;
    let entry = engine
        .manifest
        .vae
        .as_ref()
        .and_then(|vae| vae.graph(graph))
        .with_context(|| format!("the engine's VAE has no graph `{graph}`"))?
        .clone();
    let backend = Backend::Cuda { device: 0 };
    let context = cudarc::driver::CudaContext::new(0).context("CUDA context")?;
    let after_context = used_mib()?;
    let mut loads = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..count {
        sessions.push(GraphSession::load(&engine.dir, &entry, &backend)?);
        loads.push(used_mib()?);
    }
    let mut runs = Vec::new();
    for session in &mut sessions {
        let mut pool = TensorPool::new();
        for spec in &entry.inputs {
            let input = zeros(&spec.shape, height, width)?;
            if spec.dtype == "float32" {
                pool.insert_f32(&spec.name, &input)?;
            } else {
                // float16 caches and features: ONNX Runtime converts nothing, so build them as f16.
                let data: Vec<half::f16> =
                    input.data.iter().map(|v| half::f16::from_f32(*v)).collect();
                let value = ort::value::Tensor::from_array((input.shape.clone(), data))?;
                pool.insert(&spec.name, value.into_dyn());
            }
        }
        session.run(&mut pool)?;
        drop(pool);
        runs.push(used_mib()?);
    }
    drop(sessions);
    let after_drop = used_mib()?;
    drop(context);
    #[expect(clippy::print_stdout, reason = "the probe's result line")]
    {
        println!(
            "{}",
            serde_json::json!({"bench": "session_cost", "graph": graph, "sessions": count,
                "used_mib_after_context": after_context, "used_mib_after_each_load": loads,
                "used_mib_after_each_first_run": runs, "used_mib_after_drop": after_drop})
        );
    }
    Ok(())
}
