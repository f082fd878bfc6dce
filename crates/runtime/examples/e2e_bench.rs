//! Times a whole diffusion-forcing generation on random conditioning and prints one JSON line:
//! `e2e_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH STEPS [TEACACHE_THRESHOLD]` (pixel sizes).
//!
//! The sampling loop is `skyreels generate`'s (synchronous DF, guidance 6 with two forwards per
//! row, shift 8, upstream σ schedule) followed by the VAE decode; the text encoder is left out
//! (random `[1, 512, text_dim]` contexts stand in for the prompts), as it runs once per video.
//! With a threshold, TeaCache uses the released fit for the engine's architecture (with retention).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use skyreels_contract::{Pipeline, Resolution};
use skyreels_runtime::dit::Dit;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::pipeline::defaults::teacache_coefficients;
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::generate::{Conditioning, GenerationInputs, Vae, generate};
use skyreels_runtime::pipeline::progress::Unobserved;
use skyreels_runtime::pipeline::plan::{Compat, Plan, Request};
use skyreels_runtime::pipeline::sampler::WindowSettings;
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::teacache::TeaCacheConfig;
use skyreels_runtime::vae::VaeDecoder;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, backend, sizes, threshold) = match args.as_slice() {
        [_, dir, backend, f, h, w, s] => (dir, backend, [f, h, w, s], None),
        [_, dir, backend, f, h, w, s, t] => (dir, backend, [f, h, w, s], Some(t.parse::<f64>()?)),
        _ => bail!(
            "usage: e2e_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH STEPS [TEACACHE_THRESHOLD]"
        ),
    };
    let backend = match backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let [frames, height, width, steps] = sizes.map(|v| v.parse::<usize>());
    let (frames, height, width, steps) = (frames?, height?, width?, steps?);
    let started = Instant::now();
    let engine = Engine::open(&PathBuf::from(dir))?;
    let config = engine
        .manifest
        .dit
        .as_ref()
        .context("the engine has no DiT")?
        .config
        .clone();
    let plan = Plan::new(Request::upstream(frames, height, width, steps))?;
    let mut noise = NoiseSource::seeded(0);
    let context = noise.draw(&[1, config.text_len, config.text_dim])?;
    let negative_context = noise.draw(&[1, config.text_len, config.text_dim])?;
    let mut denoiser = DitDenoiser {
        dit: Dit::load(&engine, &backend, None)?,
        context,
        negative_context: Some(negative_context),
        image_context: None,
        fps: 1,
        condition: None,
    };
    let mut decoder = VaeDecoder::load(&engine, &backend)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let teacache = match threshold {
        Some(threshold) => Some(TeaCacheConfig {
            threshold,
            coefficients: teacache_coefficients(
                &config,
                Resolution::of_size(height, width),
                Pipeline::DiffusionForcing,
                true,
            )?,
            use_retention: true,
        }),
        None => None,
    };
    let settings = WindowSettings {
        guidance: 6.0,
        addnoise_condition: 0.0,
        teacache,
    };
    let schedule = FlowSchedule::new(Compat::Upstream, steps, 8.0, true)?;
    let generating = Instant::now();
    let vae = Vae {
        decoder: &mut decoder,
        encoder: None,
    };
    let generation = generate(GenerationInputs {
        plan: &plan,
        denoiser: &mut denoiser,
        schedule: &schedule,
        settings: &settings,
        noise: &mut noise,
        conditioning: &Conditioning::default(),
        vae: Some(vae),
        work_dir: None,
        observer: &mut Unobserved,
    })?;
    let seconds = generating.elapsed().as_secs_f64();
    let video = generation.video.context("no video decoded")?;
    #[expect(clippy::print_stdout, reason = "the benchmark's result line")]
    {
        println!(
            "{}",
            serde_json::json!({"bench": "e2e_df", "impl": "skyreels-onnxruntime", "frames": frames, "height": height, "width": width,
                "steps": steps, "teacache": threshold, "load_s": load_seconds, "generate_s": seconds, "dit_forwards": generation.stats.forwards,
                "blocks_computed": generation.stats.blocks_computed, "blocks_skipped": generation.stats.blocks_skipped,
                "video": video.shape, "finite": video.data.iter().all(|v| v.is_finite())})
        );
    }
    Ok(())
}
