//! Runs a built engine directory and its exported graphs on one backend and prints how far apart
//! they are: DiT velocity (both `blocks` variants), one decoded VAE latent frame, one prompt.
//!
//! Usage: `built_vs_exported ENGINE_DIR cpu|cuda` (ENGINE_DIR built with `skyreels-build`).

use std::path::Path;

use anyhow::{Context, bail};
use skyreels_contract::Manifest;
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::Backend;
use skyreels_runtime::text::TextEncoder;
use skyreels_runtime::vae::VaeDecoder;

fn pattern(shape: Vec<usize>, phase: f32) -> anyhow::Result<Tensor> {
    let n = shape.iter().product::<usize>();
    Ok(Tensor::new(
        shape,
        (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect(),
    )?)
}

fn outputs(dir: &Path, backend: &Backend) -> anyhow::Result<Vec<(&'static str, Tensor)>> {
    let engine = Engine::open(dir)?;
    let mut results = Vec::new();
    if let Some(dit) = &engine.manifest.dit {
        let config = &dit.config;
        let latents = pattern(vec![1, config.in_dim, 3, 4, 6], 0.0)?;
        let timesteps = Tensor::new(vec![1, 3], vec![999.0, 500.0, 3.5])?;
        let context = pattern(vec![1, config.text_len, config.text_dim], 1.0)?;
        let fps = [1i64];
        let inputs = DitInputs {
            latents: &latents,
            timesteps: &timesteps,
            context: &context,
            fps: Some(&fps),
            image_context: None,
        };
        for (label, causal) in [
            ("dit velocity", None),
            ("dit velocity (block-causal)", Some(1)),
        ] {
            let mut model = Dit::load(&engine, backend, causal).context("loading the DiT")?;
            results.push((label, model.forward(&inputs)?));
        }
    }
    if engine.manifest.vae.is_some() {
        let mut decoder = VaeDecoder::load(&engine, backend)?;
        results.push((
            "vae decode",
            decoder.decode_unclamped(&pattern(vec![1, 16, 2, 4, 6], 2.0)?)?,
        ));
    }
    if engine.manifest.text_encoder.is_some() {
        let mut encoder = TextEncoder::load(&engine, backend)?;
        results.push((
            "text encoding",
            encoder.encode("a red fox jumps over the lazy dog")?,
        ));
    }
    Ok(results)
}

#[expect(
    clippy::print_stdout,
    reason = "the comparison is the example's output"
)]
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, backend] = &args[..] else {
        bail!("usage: built_vs_exported ENGINE_DIR cpu|cuda")
    };
    let backend = match backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let built_dir = Path::new(dir);
    let manifest = Manifest::load(built_dir)?;
    let record = manifest
        .build
        .clone()
        .context("the engine has no build record; run skyreels-build first")?;
    // The exported graphs: the same directory's files, under a manifest without the build record.
    let exported = tempfile::tempdir()?;
    for entry in fs_err::read_dir(built_dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs_err::hard_link(
                &path,
                exported.path().join(path.file_name().context("file name")?),
            )
            .or_else(|_| {
                fs_err::copy(
                    &path,
                    exported.path().join(path.file_name().unwrap_or_default()),
                )
                .map(|_| ())
            })?;
        }
    }
    fs_err::remove_file(exported.path().join("manifest.yaml"))?;
    Manifest {
        build: None,
        source: None,
        ..manifest
    }
    .save(exported.path())?;

    let built = outputs(built_dir, &backend)?;
    let reference = outputs(exported.path(), &backend)?;
    println!(
        "built for {} ({}, gpu {:?}, ONNX Runtime {})",
        record.backend, record.precision, record.gpu, record.onnxruntime_version
    );
    for ((label, b), (_, r)) in built.iter().zip(&reference) {
        println!(
            "{label} {:?}: built vs exported max-abs {:.3e}",
            b.shape,
            b.max_abs_diff(r)
        );
    }
    Ok(())
}
