//! `skyreels`: run SkyReels-V2 engine directories.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use skyreels_runtime::dit::Dit;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::image::crop_to_aspect;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::output::{self, Mp4Options, Video};
use skyreels_runtime::pipeline::defaults::DEFAULT_NEGATIVE_PROMPT;
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::generate::{Conditioning, Vae, WorkDir, generate};
use skyreels_runtime::pipeline::image_condition::{image_condition, image_frame};
use skyreels_runtime::pipeline::plan::{Compat, Plan, Request, Start};
use skyreels_runtime::pipeline::sampler::WindowSettings;
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::teacache::TeaCacheConfig;
use skyreels_runtime::text::TextEncoder;
use skyreels_runtime::vae::{VaeDecoder, VaeEncoder};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run SkyReels-V2 engines: text-to-video, diffusion forcing, long videos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a video.
    Generate(Box<GenerateArgs>),
    /// Encode a prompt with the engine's text encoder; writes tensor `context` `[1, 512, dim]`.
    TextEncode {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Encode a video (`.mp4`, or safetensors tensor `video` `[B, 3, T, H, W]` in [-1, 1]) to
    /// normalised latents; writes tensor `latents` `[B, 16, (T-1)/4+1, H/8, W/8]`.
    VaeEncode {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Input video.
        #[arg(long)]
        video: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Decode latents (safetensors tensor `latents` `[B, 16, F, h, w]`) to a video: tensor `video`
    /// `[B, 3, 1+4(F-1), 8h, 8w]` in [-1, 1], or an `.mp4` when `--out` ends so.
    VaeDecode {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Input latents.
        #[arg(long)]
        latents: PathBuf,
        /// Output safetensors or .mp4 file.
        #[arg(long)]
        out: PathBuf,
        /// Frames per second when writing MP4.
        #[arg(long, default_value_t = 24)]
        fps: u32,
    },
    /// Encode an image with the CLIP vision tower; writes tensor `image_context` `[1, 257, 1280]`.
    ImageEncode {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// PNG or JPEG file.
        #[arg(long)]
        image: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an engine directory's manifest summary.
    Info {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PipelineArg {
    /// Diffusion forcing (DF models): per-frame timesteps, async, long videos.
    DiffusionForcing,
    /// Synchronous text/image-to-video (T2V and I2V models): one window, all frames together.
    Synchronous,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ResolutionArg {
    #[value(name = "540p", alias = "540P")]
    P540,
    #[value(name = "720p", alias = "720P")]
    P720,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompatArg {
    Upstream,
    Diffusers,
}

#[derive(Parser, Debug)]
struct GenerateArgs {
    /// Engine directory written by skyreels-export.
    #[arg(long)]
    engines: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Negative prompt (default: upstream's).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// First frame (PNG or JPEG; centre-cropped to the video's aspect, then resized): the image of
    /// image-to-video models, or the clean first latent of diffusion forcing (DF models).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Last frame for diffusion forcing (DF models; PNG or JPEG, prepared like --image).
    #[arg(long)]
    last_image: Option<PathBuf>,
    /// Video to extend (DF models): an `.mp4` (frames resized to --width×--height) or a safetensors
    /// tensor `video` `[1, 3, T, H, W]` in [-1, 1]. The output is this video followed by the new
    /// frames; --num-frames counts the --overlap-history frames taken from it.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Pixel frames, 4k+1.
    #[arg(long, default_value_t = 97)]
    num_frames: usize,
    /// Pixel height, multiple of 16.
    #[arg(long, default_value_t = 544)]
    height: usize,
    /// Pixel width, multiple of 16.
    #[arg(long, default_value_t = 960)]
    width: usize,
    /// Inference steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Classifier-free guidance scale (1 disables the negative pass).
    #[arg(long, default_value_t = 6.0)]
    guidance: f32,
    /// Flow shift.
    #[arg(long, default_value_t = 8.0)]
    shift: f64,
    /// Output frames per second (24 or 16 select the model's fps bucket).
    #[arg(long, default_value_t = 24)]
    fps: u32,
    /// Seed of the noise generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Asynchronous offset between frame blocks (0 = synchronous).
    #[arg(long, default_value_t = 0)]
    ar_step: usize,
    /// Latent frames per block.
    #[arg(long, default_value_t = 1)]
    causal_block_size: usize,
    /// Block-causal attention (upstream's --causal_attention).
    #[arg(long)]
    causal_attention: bool,
    /// Window length for long videos (pixel frames).
    #[arg(long)]
    base_num_frames: Option<usize>,
    /// Overlap between long-video windows (pixel frames; upstream uses 17).
    #[arg(long)]
    overlap_history: Option<usize>,
    /// Re-noise level of conditioning prefixes (upstream recommends 20).
    #[arg(long, default_value_t = 0.0)]
    addnoise_condition: f32,
    /// TeaCache threshold (e.g. 0.2); off when absent.
    #[arg(long)]
    teacache: Option<f64>,
    /// TeaCache with retention steps (upstream --use_ret_steps).
    #[arg(long)]
    teacache_retention: bool,
    /// TeaCache polynomial, 5 numbers highest degree first (default: the released variant's fit).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    teacache_coefficients: Option<Vec<f64>>,
    /// Resolution class of the checkpoint (540p or 720p; default: from --height x --width); picks
    /// the released variant's settings such as the TeaCache fit.
    #[arg(long, value_enum)]
    resolution: Option<ResolutionArg>,
    /// Pre-drawn noise: a safetensors file with tensors "0", "1", … in draw order.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Also save the final latents (tensor `latents`).
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// Sampling loop (default: diffusion-forcing for t2v-type models, synchronous for i2v).
    #[arg(long, value_enum)]
    pipeline: Option<PipelineArg>,
    /// Which reference's choices to follow.
    #[arg(long, value_enum, default_value = "upstream")]
    compat: CompatArg,
    /// Output: `.mp4`, or a directory for PNG frames.
    #[arg(long)]
    out: PathBuf,
    /// Where a long job keeps finished windows so a killed run resumes (default: `<out>.work` for
    /// multi-window videos; must be new or empty; its files are removed when the output is written).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// CPU threads for ONNX Runtime (0 = all).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where the graphs run: `cpu`, or `cuda` (ONNX Runtime GPU libraries and an NVIDIA GPU).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// GPU index for `--backend cuda`.
    #[arg(long, default_value_t = 0)]
    device: i32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => run_generate(&args),
        Command::TextEncode {
            engines,
            prompt,
            out,
        } => {
            check_output_path(&out)?;
            let engine = Engine::open(&engines)?;
            let context =
                TextEncoder::load(&engine, &Backend::Cpu { threads: 0 })?.encode(&prompt)?;
            output::save_latents(&out, [("context", &context)])?;
            Ok(())
        }
        Command::VaeEncode {
            engines,
            video,
            out,
        } => {
            check_output_path(&out)?;
            let engine = Engine::open(&engines)?;
            let video = read_video(&video, None)?;
            let latents =
                VaeEncoder::load(&engine, &Backend::Cpu { threads: 0 })?.encode(&video)?;
            output::save_latents(&out, [("latents", &latents)])?;
            Ok(())
        }
        Command::VaeDecode {
            engines,
            latents,
            out,
            fps,
        } => {
            check_output_path(&out)?;
            let engine = Engine::open(&engines)?;
            let latents = output::read_tensor(&latents, "latents", &[None; 5])?;
            let video =
                VaeDecoder::load(&engine, &Backend::Cpu { threads: 0 })?.decode(&latents)?;
            if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
            {
                if video.shape[0] != 1 {
                    bail!(
                        "--out .mp4 needs batch 1 latents, got batch {}\n  fix: write a .safetensors instead",
                        video.shape[0]
                    );
                }
                let frames = Video::from_tensor(&squeeze_batch(&video))?;
                output::write_mp4(
                    &frames,
                    &out,
                    &Mp4Options {
                        frames_per_second: fps as f32,
                        ..Mp4Options::default()
                    },
                )?;
            } else {
                output::save_latents(&out, [("video", &video)])?;
            }
            Ok(())
        }
        Command::ImageEncode {
            engines,
            image,
            out,
        } => {
            check_output_path(&out)?;
            let engine = Engine::open(&engines)?;
            let picture = skyreels_runtime::image::RgbImage::open(&image)?;
            let context =
                skyreels_runtime::image::ImageEncoder::load(&engine, &Backend::Cpu { threads: 0 })?
                    .encode(&picture)?;
            output::save_latents(&out, [("image_context", &context)])?;
            Ok(())
        }
        Command::Info { engines } => {
            let engine = Engine::open(&engines)?;
            eprint!("{}", skyreels_contract::to_yaml(&engine.manifest)?);
            Ok(())
        }
    }
}

fn check_output_path(out: &Path) -> anyhow::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.exists() && !parent.is_dir() {
        bail!(
            "cannot write {}: {} is a file, not a directory\n  fix: choose another --out",
            out.display(),
            parent.display()
        );
    }
    if !parent.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist\n  fix: create it or choose another --out",
            out.display(),
            parent.display()
        );
    }
    Ok(())
}

fn run_generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    skyreels_runtime::pipeline::limits::check_threads(args.threads)?;
    skyreels_runtime::pipeline::limits::check_frame_size(args.width, args.height)?;
    let input_video = match &args.video {
        Some(path) => Some(read_video_sized(path, args.width, args.height)?),
        None => None,
    };
    let start = match (&input_video, &args.image) {
        (Some(_), Some(_)) => bail!(
            "--video and --image both set the start of the video\n  fix: pass only one of them"
        ),
        (Some(video), None) => Start::Video {
            frames: video.shape[2],
        },
        (None, Some(_)) => Start::Image,
        (None, None) => Start::Noise,
    };
    let mut plan = Plan::new(Request {
        num_frames: args.num_frames,
        height: args.height,
        width: args.width,
        steps: args.steps,
        guidance: args.guidance,
        shift: args.shift,
        fps: args.fps,
        ar_step: args.ar_step,
        causal_block_size: args.causal_block_size,
        causal_attention: args.causal_attention,
        base_num_frames: args.base_num_frames,
        overlap_history: args.overlap_history,
        addnoise_condition: args.addnoise_condition,
        compat: match args.compat {
            CompatArg::Upstream => Compat::Upstream,
            CompatArg::Diffusers => Compat::Diffusers,
        },
        start,
        last_image: args.last_image.is_some(),
    })?;
    output::check_generate_destinations(
        &args.out,
        args.save_latents.as_deref(),
        args.width,
        args.height,
        args.fps,
    )?;
    skyreels_runtime::image::check_image_files(&[
        args.image.as_deref(),
        args.last_image.as_deref(),
    ])?;
    if args.prompt.trim().is_empty() {
        bail!(
            "--prompt is empty\n  fix: describe the video, e.g. --prompt \"a red fox running through fresh snow\""
        );
    }
    let mut noise = match &args.noise {
        Some(path) => NoiseSource::from_file(path)?,
        None => NoiseSource::seeded(args.seed),
    };
    let backend = match args.backend {
        BackendArg::Cpu => Backend::Cpu {
            threads: args.threads,
        },
        BackendArg::Cuda => Backend::Cuda {
            device: args.device,
        },
    };
    let engine = Engine::open(&args.engines)?;
    if engine.manifest.precision != "fp32" && matches!(backend, Backend::Cpu { .. }) {
        bail!(
            "engine {} was exported for --target {} with {} weights, which ONNX Runtime's CPU provider cannot run\n  fix: re-export it with skyreels-export --target cpu (fp32)",
            args.engines.display(),
            engine.manifest.target,
            engine.manifest.precision
        );
    }
    // Taken before any model loads, so a second run of the job is refused at once.
    let work_dir = match (&args.work_dir, plan.segments.len() > 1) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(PathBuf::from(format!("{}.work", args.out.display()))),
        (None, false) => None,
    };
    let work_dir = match work_dir {
        Some(dir) => Some(WorkDir::open(&dir, &job_fingerprint(args, &engine)?)?),
        None => None,
    };
    let dit_config = engine
        .manifest
        .dit
        .as_ref()
        .map(|d| d.config.clone())
        .context("the engine has no DiT")?;
    let pipeline = args.pipeline.unwrap_or(match dit_config.model_type {
        skyreels_contract::ModelType::T2v => PipelineArg::DiffusionForcing,
        skyreels_contract::ModelType::I2v => PipelineArg::Synchronous,
    });
    let teacache = match args.teacache {
        Some(threshold) => Some(TeaCacheConfig {
            threshold,
            coefficients: teacache_coefficients(args, &dit_config, pipeline)?,
            use_retention: args.teacache_retention,
        }),
        None => None,
    };

    let mut text_encoder =
        TextEncoder::load(&engine, &backend).context("loading the text encoder")?;
    let context = encode_prompt(&mut text_encoder, "--prompt", &args.prompt)?;
    let negative_context = if args.guidance > 1.0 {
        Some(encode_prompt(
            &mut text_encoder,
            "--negative-prompt",
            args.negative_prompt
                .as_deref()
                .unwrap_or(DEFAULT_NEGATIVE_PROMPT),
        )?)
    } else {
        None
    };
    drop(text_encoder);

    let causal = plan.block_causal.then_some(plan.request.causal_block_size);
    let dit = Dit::load(&engine, &backend, causal)?;
    let i2v_model = dit_config.model_type == skyreels_contract::ModelType::I2v;
    if i2v_model && (args.last_image.is_some() || args.video.is_some()) {
        bail!(
            "--last-image and --video need a diffusion-forcing (DF) engine; this one holds an image-to-video model\n  fix: export a DF checkpoint, or drop them"
        );
    }
    if pipeline == PipelineArg::Synchronous
        && !i2v_model
        && (args.image.is_some() || args.last_image.is_some() || args.video.is_some())
    {
        bail!(
            "--image, --last-image and --video condition diffusion forcing\n  fix: drop --pipeline synchronous"
        );
    }
    let needs_encoder = args.image.is_some()
        || args.last_image.is_some()
        || args.video.is_some()
        || (plan.segments.len() > 1 && plan.request.compat == Compat::Upstream);
    let mut encoder = if needs_encoder {
        Some(VaeEncoder::load(&engine, &backend).context("loading the VAE encoder")?)
    } else {
        None
    };
    let mut conditioning = Conditioning {
        video: input_video,
        ..Conditioning::default()
    };
    let (image_context, condition) = match (&args.image, i2v_model) {
        (Some(path), true) => {
            let picture = skyreels_runtime::image::RgbImage::open(path)?;
            let image_context = skyreels_runtime::image::ImageEncoder::load(&engine, &backend)
                .context("loading the image encoder")?
                .encode(&picture)?;
            let frame = image_frame(
                &crop_to_aspect(&picture, args.width, args.height),
                args.width,
                args.height,
            );
            let encoder = encoder.as_mut().expect("loaded for --image");
            // An I2V model takes the image through its mask + latent channels, not as a prefix.
            plan = Plan::new(Request {
                start: Start::Noise,
                ..plan.request.clone()
            })?;
            (
                Some(image_context),
                Some(image_condition(encoder, &frame, args.num_frames)?),
            )
        }
        (None, true) => {
            bail!("this engine holds an image-to-video model\n  fix: pass --image FIRST_FRAME.png")
        }
        (Some(path), false) => {
            conditioning.first_image = Some(encode_image_latent(
                encoder.as_mut().expect("loaded for --image"),
                path,
                args.width,
                args.height,
            )?);
            (None, None)
        }
        (None, false) => (None, None),
    };
    if let Some(path) = &args.last_image {
        conditioning.last_image = Some(encode_image_latent(
            encoder.as_mut().expect("loaded for --last-image"),
            path,
            args.width,
            args.height,
        )?);
    }
    let mut denoiser = DitDenoiser {
        dit,
        context,
        negative_context,
        image_context,
        fps: if args.fps == 16 { 0 } else { 1 },
        condition,
    };
    let settings = WindowSettings {
        guidance: args.guidance,
        addnoise_condition: args.addnoise_condition,
        teacache,
    };
    if pipeline == PipelineArg::Synchronous && (args.ar_step > 0 || plan.segments.len() > 1) {
        bail!(
            "--pipeline synchronous samples one window with all frames together\n  fix: drop --ar-step / long-video flags, or use --pipeline diffusion-forcing"
        );
    }
    let schedule = FlowSchedule::new(
        plan.request.compat,
        args.steps,
        args.shift,
        pipeline == PipelineArg::DiffusionForcing,
    )?;
    let mut decoder = VaeDecoder::load(&engine, &backend).context("loading the VAE decoder")?;
    let vae = Vae {
        decoder: &mut decoder,
        encoder: encoder.as_mut(),
    };
    let generation = generate(
        &plan,
        &mut denoiser,
        &schedule,
        &settings,
        &mut noise,
        &conditioning,
        Some(vae),
        work_dir.as_ref(),
        !args.json,
    )?;

    if let Some(path) = &args.save_latents {
        output::save_latents(path, [("latents", &generation.latents)])?;
    }
    let video = generation.video.context("no video was decoded")?;
    let frames = Video::from_tensor(&squeeze_batch(&video))?;
    let is_mp4 = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"));
    if is_mp4 {
        output::write_mp4(
            &frames,
            &args.out,
            &Mp4Options {
                frames_per_second: args.fps as f32,
                ..Mp4Options::default()
            },
        )?;
    } else {
        output::write_png_frames(&frames, &args.out)?;
    }
    if let Some(work_dir) = work_dir {
        work_dir.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "windows_resumed": generation.stats.windows_resumed,
        "output": args.out,
        "frames": frames.num_frames(),
        "width": frames.width(),
        "height": frames.height(),
        "windows": generation.stats.windows,
        "rows": generation.stats.rows,
        "dit_forwards": generation.stats.forwards,
        "blocks_computed": generation.stats.blocks_computed,
        "blocks_skipped": generation.stats.blocks_skipped,
        "seconds": seconds,
    });
    if args.json {
        #[expect(
            clippy::print_stdout,
            reason = "--json prints the summary on stdout by design"
        )]
        {
            println!("{summary}");
        }
    } else {
        eprintln!(
            "wrote {} ({} frames, {}x{}) in {:.1}s; {} DiT passes, {} block passes skipped by TeaCache",
            args.out.display(),
            frames.num_frames(),
            frames.width(),
            frames.height(),
            seconds,
            generation.stats.forwards,
            generation.stats.blocks_skipped
        );
    }
    Ok(())
}

/// The TeaCache polynomial: `--teacache-coefficients`, else the fit of the released variant the
/// engine's DiT is (architecture + resolution class + sampling loop; `configs/models/*.yaml`).
fn teacache_coefficients(
    args: &GenerateArgs,
    dit_config: &skyreels_contract::DitConfig,
    pipeline: PipelineArg,
) -> anyhow::Result<[f64; 5]> {
    use skyreels_contract::{Pipeline, Resolution};
    if let Some(given) = &args.teacache_coefficients {
        return <[f64; 5]>::try_from(given.as_slice()).ok().filter(|c| c.iter().all(|x| x.is_finite())).with_context(|| {
            format!("--teacache-coefficients takes 5 finite numbers (highest degree first), got {}\n  fix: e.g. --teacache-coefficients=-5.21862437e4,9.23041404e3,-5.28275948e2,1.36987616e1,-4.99875664e-2", given.len())
        });
    }
    let resolution = match args.resolution {
        Some(ResolutionArg::P540) => Resolution::P540,
        Some(ResolutionArg::P720) => Resolution::P720,
        None => Resolution::of_size(args.height, args.width),
    };
    let pipeline = match pipeline {
        PipelineArg::DiffusionForcing => Pipeline::DiffusionForcing,
        PipelineArg::Synchronous => Pipeline::Synchronous,
    };
    skyreels_runtime::pipeline::defaults::teacache_coefficients(
        dit_config,
        resolution,
        pipeline,
        args.teacache_retention,
    )
    .context("choosing the TeaCache fit for --teacache")
}

/// Encodes a prompt, warning on stderr when it is longer than the encoder's token window (upstream
/// truncates silently).
fn encode_prompt(
    encoder: &mut TextEncoder,
    flag: &str,
    prompt: &str,
) -> anyhow::Result<skyreels_runtime::Tensor> {
    let tokens = encoder.tokenize(prompt)?;
    if tokens.truncated_tokens > 0 {
        eprintln!(
            "warning: {flag} is longer than the text encoder's {} tokens; its last {} tokens are ignored (as upstream does)\n  fix: shorten it to keep every word",
            encoder.tokenizer().max_length(),
            tokens.truncated_tokens
        );
    }
    Ok(encoder.encode_tokens(&tokens)?)
}

/// Everything that decides a generation's result: the arguments that shape sampling and the
/// engine's manifest. A work directory is only resumed by the job with the same fingerprint.
fn job_fingerprint(args: &GenerateArgs, engine: &Engine) -> anyhow::Result<String> {
    let a = args;
    let prompts = format!(
        "{:?}",
        (
            &a.prompt,
            &a.negative_prompt,
            &a.noise,
            a.seed,
            a.compat,
            a.pipeline
        )
    );
    let shape = format!(
        "{:?}",
        (
            a.num_frames,
            a.height,
            a.width,
            a.steps,
            a.guidance,
            a.shift,
            a.fps
        )
    );
    let windows = format!(
        "{:?}",
        (
            a.ar_step,
            a.causal_block_size,
            a.causal_attention,
            a.base_num_frames,
            a.overlap_history,
            a.addnoise_condition,
            a.teacache,
            a.teacache_retention
        )
    );
    let mut inputs = String::new();
    for path in [&a.image, &a.last_image, &a.video, &a.noise]
        .into_iter()
        .flatten()
    {
        inputs += &format!("{} {:016x}\n", path.display(), content_hash(path)?);
    }
    let sampling = format!("{prompts}\n{shape}\n{windows}\n{inputs}");
    Ok(format!(
        "{}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        sampling,
        skyreels_contract::to_yaml(&engine.manifest)?
    ))
}

/// A hash of a conditioning file's bytes, so a work directory is not resumed with another image or
/// video under the same name (stable within one build of the binary, which the fingerprint pins).
fn content_hash(path: &Path) -> anyhow::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    skyreels_contract::files::read_bounded(
        path,
        "input file",
        skyreels_contract::files::physical_memory(),
    )?
    .hash(&mut hasher);
    Ok(hasher.finish())
}

/// A video from an `.mp4` (frames mapped to [-1, 1] as `x/127.5 − 1`, and resized bicubically to
/// `size` = (width, height) when given, as upstream's reader resizes on load) or from a safetensors
/// tensor `video` `[B, 3, T, H, W]` (which must already have `size`).
fn read_video(
    path: &Path,
    size: Option<(usize, usize)>,
) -> anyhow::Result<skyreels_runtime::Tensor> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
    {
        let clip = output::read_mp4(path)?;
        let (width, height) = size.unwrap_or((clip.width(), clip.height()));
        let (t, plane) = (clip.num_frames(), width * height);
        let mut data = vec![0.0f32; 3 * t * plane];
        for (f, frame) in clip.frames().enumerate() {
            let mut picture = skyreels_runtime::image::RgbImage {
                width: clip.width(),
                height: clip.height(),
                pixels: frame.to_vec(),
            };
            if (picture.width, picture.height) != (width, height) {
                picture = skyreels_runtime::image::resize_bicubic_pil(&picture, width, height);
            }
            for (i, rgb) in picture.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    data[(c * t + f) * plane + i] = rgb[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        return Ok(skyreels_runtime::Tensor::new(
            vec![1, 3, t, height, width],
            data,
        )?);
    }
    let expected = match size {
        Some((width, height)) => [Some(1), Some(3), None, Some(height), Some(width)],
        None => [None; 5],
    };
    Ok(output::read_tensor(path, "video", &expected)?)
}

/// The normalised latent `[1, 16, 1, h, w]` of an image prepared as upstream's CLI does
/// (`resizecrop` to the video's aspect, then a bicubic resize).
fn encode_image_latent(
    encoder: &mut VaeEncoder,
    path: &Path,
    width: usize,
    height: usize,
) -> anyhow::Result<skyreels_runtime::Tensor> {
    let picture = skyreels_runtime::image::RgbImage::open(path)?;
    let frame = image_frame(&crop_to_aspect(&picture, width, height), width, height);
    Ok(encoder.encode(&frame)?)
}

/// The video to extend, at the generation's size (see [`read_video`]), with at least one frame.
fn read_video_sized(
    path: &Path,
    width: usize,
    height: usize,
) -> anyhow::Result<skyreels_runtime::Tensor> {
    let video = read_video(path, Some((width, height)))?;
    if video.shape[2] == 0 {
        bail!(
            "--video {} has no frames\n  fix: give a video with at least --overlap-history frames",
            path.display()
        );
    }
    Ok(video)
}

/// `[1, 3, T, H, W]` → `[3, T, H, W]`.
fn squeeze_batch(video: &skyreels_runtime::Tensor) -> skyreels_runtime::Tensor {
    skyreels_runtime::Tensor {
        shape: video.shape[1..].to_vec(),
        data: video.data.clone(),
    }
}
