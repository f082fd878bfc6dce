//! Times a whole diffusion-forcing generation and prints one JSON line:
//! `e2e_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH STEPS [TEACACHE_THRESHOLD]
//! [--text-encoder] [--base-num-frames N --overlap-history N] [--offload] [--max-gpu-memory SIZE] [--vae-tiling]`
//! (pixel sizes; the last two place the DiT's layer weights as `skyreels generate` does).
//!
//! The sampling loop is `skyreels generate`'s (synchronous DF, guidance 6 with two forwards per
//! row, shift 8, upstream σ schedule) followed by the VAE decode. Without `--text-encoder` random
//! `[1, 512, text_dim]` contexts stand in for the prompts; with it the engine's text encoder is
//! loaded, encodes a prompt and the default negative prompt, and is dropped before the DiT loads,
//! as `skyreels generate` does. `--base-num-frames` makes a long video (windows of that many
//! frames, `--overlap-history` frames shared, upstream's re-encoded prefixes). With a threshold,
//! TeaCache uses the released fit for the engine's architecture (with retention). The line holds
//! every model's load time, each window's seconds and the start of the generation as a Unix
//! time, so a memory trace sampled beside the process can be cut per window.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use skyreels_contract::{Pipeline, Resolution};
use skyreels_runtime::dit::Dit;
use skyreels_runtime::dit::placement::{DitMemoryPlan, WeightPlacement};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::loaded_libraries::ProcessReport;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::pipeline::defaults::{DEFAULT_NEGATIVE_PROMPT, teacache_coefficients};
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::generate::{Conditioning, GenerationInputs, Vae, generate};
use skyreels_runtime::pipeline::plan::{Compat, Plan, Request};
use skyreels_runtime::pipeline::progress::Unobserved;
use skyreels_runtime::pipeline::sampler::WindowSettings;
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::teacache::TeaCacheConfig;
use skyreels_runtime::text::TextEncoder;
use skyreels_runtime::text_placement::TextMemoryPlan;
use skyreels_runtime::vae::{VaeDecoder, VaeEncoder};
use skyreels_runtime::vae_tiling::VaeTiling;

const PROMPT: &str = "a red fox running through fresh snow";

#[derive(Parser)]
struct Args {
    engine: PathBuf,
    /// `cpu` or `cuda`.
    backend: String,
    frames: usize,
    height: usize,
    width: usize,
    steps: usize,
    teacache_threshold: Option<f64>,
    /// Encode the prompts with the engine's text encoder instead of random contexts.
    #[arg(long)]
    text_encoder: bool,
    /// Frames per window of a long video.
    #[arg(long, requires = "overlap_history")]
    base_num_frames: Option<usize>,
    /// Frames shared by consecutive windows of a long video.
    #[arg(long, requires = "base_num_frames")]
    overlap_history: Option<usize>,
    /// Stream the DiT's layer weights (and the text encoder's block weights) from host memory.
    #[arg(long)]
    offload: bool,
    /// Device memory the DiT's weights may take; streamed when they do not fit.
    #[arg(long)]
    max_gpu_memory: Option<String>,
    /// Decode in diffusers' 256-pixel tiles every 192.
    #[arg(long)]
    vae_tiling: bool,
}

fn seconds_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let started = Instant::now();
    let engine = Engine::open(&args.engine)?;
    let config = engine
        .manifest
        .dit
        .as_ref()
        .context("the engine has no DiT")?
        .config
        .clone();
    let mut request = Request::upstream(args.frames, args.height, args.width, args.steps);
    request.base_num_frames = args.base_num_frames;
    request.overlap_history = args.overlap_history;
    let plan = Plan::new(request)?;
    let mut noise = NoiseSource::seeded(0);
    let mut load_seconds = serde_json::Map::new();
    let mut text_seconds = None;
    let memory = DitMemoryPlan::for_engine(&engine, args.offload, args.max_gpu_memory.as_deref())?;
    let text_memory = TextMemoryPlan::for_engine(&engine, args.offload, memory.max_gpu_memory)?;
    let (context, negative_context) = if args.text_encoder {
        let loading = Instant::now();
        let placement = text_memory.map_or(WeightPlacement::Resident, |m| m.placement);
        let mut encoder = TextEncoder::load_with(&engine, &backend, placement)?;
        load_seconds.insert("text_encoder".into(), seconds_since(loading).into());
        let encoding = Instant::now();
        let context = encoder.encode_tokens(&encoder.tokenize(PROMPT)?)?;
        let negative = encoder.encode_tokens(&encoder.tokenize(DEFAULT_NEGATIVE_PROMPT)?)?;
        text_seconds = Some(seconds_since(encoding));
        (context, negative)
    } else {
        (
            noise.draw(&[1, config.text_len, config.text_dim])?,
            noise.draw(&[1, config.text_len, config.text_dim])?,
        )
    };
    let loading = Instant::now();
    let dit = Dit::load_with(&engine, &backend, None, memory.placement)?;
    load_seconds.insert("dit".into(), seconds_since(loading).into());
    let mut denoiser = DitDenoiser {
        dit,
        context,
        negative_context: Some(negative_context),
        image_context: None,
        fps: 1,
        condition: None,
    };
    let loading = Instant::now();
    let mut decoder = VaeDecoder::load(&engine, &backend)?;
    load_seconds.insert("vae_decoder".into(), seconds_since(loading).into());
    let mut encoder = if plan.segments.len() > 1 && plan.request.compat == Compat::Upstream {
        let loading = Instant::now();
        let encoder = VaeEncoder::load(&engine, &backend)?;
        load_seconds.insert("vae_encoder".into(), seconds_since(loading).into());
        Some(encoder)
    } else {
        None
    };
    let ready_seconds = seconds_since(started);
    let teacache = match args.teacache_threshold {
        Some(threshold) => Some(TeaCacheConfig {
            threshold,
            coefficients: teacache_coefficients(
                &config,
                Resolution::of_size(args.height, args.width),
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
    let schedule = FlowSchedule::new(Compat::Upstream, args.steps, 8.0, true)?;
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let generating = Instant::now();
    let vae = Vae {
        decoder: &mut decoder,
        encoder: encoder.as_mut(),
        tiling: args.vae_tiling.then_some(VaeTiling::DIFFUSERS),
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
        resumed: Default::default(),
        observer: &mut Unobserved,
        // As `skyreels generate` (one job): the DiT's layer weights go before the final decode.
        release_after_sampling: true,
    })?;
    let seconds = seconds_since(generating);
    let video = generation.video.context("no video decoded")?;
    #[expect(clippy::print_stdout, reason = "the benchmark's result line")]
    {
        println!(
            "{}",
            serde_json::json!({"bench": "e2e_df", "impl": "skyreels-onnxruntime", "frames": args.frames, "height": args.height,
                "width": args.width, "steps": args.steps, "teacache": args.teacache_threshold, "text_encoder": args.text_encoder,
                "base_num_frames": args.base_num_frames, "overlap_history": args.overlap_history,
                "load_s": ready_seconds, "load_seconds": load_seconds, "placement": memory.placement, "text_placement": text_memory.map(|m| m.placement), "vae_tiling": args.vae_tiling, "max_gpu_memory": memory.max_gpu_memory, "text_encode_s": text_seconds,
                "generate_started_unix": started_unix, "generate_s": seconds, "window_seconds": generation.stats.window_seconds,
                "windows": generation.stats.windows, "dit_forwards": generation.stats.forwards,
                "blocks_computed": generation.stats.blocks_computed, "blocks_skipped": generation.stats.blocks_skipped,
                "video": video.shape, "finite": video.data.iter().all(|v| v.is_finite()),
                "arena": decoder.arena_stats()?, "process": ProcessReport::collect(&backend)})
        );
    }
    Ok(())
}
