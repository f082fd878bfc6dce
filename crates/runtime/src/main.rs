//! `skyreels`: run SkyReels-V2 engine directories. A thin front end: flags become a
//! [`GenerateRequest`], and the runtime library plans, loads, generates and writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use skyreels_contract::{Pipeline, Resolution, Target};
use skyreels_runtime::job::{
    GenerateRequest, JobPlan, JobReport, Models, OutputRequest, Residency, run_job,
};
use skyreels_runtime::logging::{ConsoleProgress, LogFormat, ProgressDisplay};
use skyreels_runtime::output::Mp4Options;
use skyreels_runtime::parallel::start::Joined;
use skyreels_runtime::pipeline::plan::Compat;
use skyreels_runtime::pipeline::progress::{Observer, Unobserved};
use skyreels_runtime::session::Backend;
use tracing_subscriber::filter::LevelFilter;

#[derive(Parser, Debug)]
#[command(
    name = "skyreels",
    version = skyreels_runtime::onnxruntime::VERSION_LINE,
    about = "Run SkyReels-V2 engines: text-to-video, diffusion forcing, long videos"
)]
struct Cli {
    /// Least important log events shown on stderr.
    #[arg(long, global = true, value_enum, default_value = "info")]
    log_level: LogLevelArg,
    /// Log lines as text for people, or one JSON object per line for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevelArg {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
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
        /// Run the encoder block by block with its block weights streamed from host memory.
        #[arg(long)]
        offload: bool,
        #[command(flatten)]
        backend: BackendArgs,
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
        #[command(flatten)]
        backend: BackendArgs,
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
        /// H.264 quantizer when writing MP4, 12..=51 (lower: better and larger).
        #[arg(long, default_value_t = 16)]
        h264_quantizer: u8,
        /// Decode in overlapping 256-pixel tiles every 192 (diffusers' VAE tiling).
        #[arg(long)]
        vae_tiling: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// One DiT forward pass: reads the DiT's inputs by name (`latents`, `timesteps` `[B, F]`,
    /// `context`, `fps`, `image_context` as the model takes them) and writes tensor `velocity`.
    DitForward {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Input safetensors file.
        #[arg(long)]
        inputs: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Block-causal self-attention over blocks of this many latent frames.
        #[arg(long)]
        causal_block_size: Option<usize>,
        #[command(flatten)]
        memory: MemoryArgs,
        #[command(flatten)]
        backend: BackendArgs,
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
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Check the multi-rank machinery without a model (transports, rank start-up, Ulysses
    /// attention and guidance exchange against one rank); rank 0 prints a JSON report.
    #[command(hide = true)]
    ParallelCheck(skyreels_runtime::parallel::check::CheckArgs),
    /// Print a short summary of an engine directory (variant, components, precision, build).
    Info {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Print the whole manifest (YAML) instead.
        #[arg(long)]
        manifest: bool,
    },
    /// Snapshot regression testing: record cases, then check a rebuilt engine, another ONNX
    /// Runtime or another GPU against them.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Serve video generation over HTTP (OpenAI Videos API shape); runs `skyreels-serve`, installed
    /// beside this binary (`skyreels serve --help` lists its flags).
    #[command(disable_help_flag = true)]
    Serve {
        /// The flags of skyreels-serve.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Run every case of a cases YAML (case name → request, the server's fields) and store its
    /// noise, final latents, decoded frames and where it ran.
    Record {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Cases file: a YAML map from case name to request.
        #[arg(long)]
        cases: PathBuf,
        /// New snapshot directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Replay every case with its recorded noise and compare latents (max-abs, relative) and
    /// frames (PSNR); prints a table and fails naming the cases outside the tolerance.
    Check {
        /// Engine directory.
        #[arg(long)]
        engines: PathBuf,
        /// Snapshot directory written by `snapshot record`.
        #[arg(long)]
        snapshots: PathBuf,
        /// `exact`, or `max_abs=X,relative=X,psnr=DB` (keys left out keep the default for the
        /// recorded and replaying backend and precision; see docs/SNAPSHOTS.md).
        #[arg(long)]
        tolerance: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Args, Debug)]
struct BackendArgs {
    /// Where the graphs run: `cpu`, `cuda` (ONNX Runtime GPU libraries and an NVIDIA GPU), or
    /// `tensorrt` (an engine built by `skyreels-build --target tensorrt`, and TensorRT 10).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Target,
    /// GPU index for `--backend cuda` or `tensorrt`.
    #[arg(long, default_value_t = 0)]
    device: i32,
    /// CPU threads for ONNX Runtime (0 = all).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl BackendArgs {
    fn backend(&self) -> Backend {
        Backend::new(self.backend, self.device, self.threads)
    }
}

#[derive(Args, Debug)]
struct MemoryArgs {
    /// Keep the DiT's layer weights and the text encoder's block weights in (pinned) host memory
    /// and stream them to the GPU two layers at a time, overlapping copies with compute
    /// (upstream's --offload).
    #[arg(long)]
    offload: bool,
    /// Device memory the DiT's weights (and, apart, the text encoder's) may take, e.g. 24GiB or
    /// 8G; weights that do not fit are streamed as with --offload (activations come on top).
    #[arg(long, value_name = "SIZE")]
    max_gpu_memory: Option<String>,
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
enum CompatArg {
    Upstream,
    Diffusers,
}

/// `generate`'s flags: each request flag maps onto the [`GenerateRequest`] field of the same name;
/// an absent flag takes the engine's variant default.
#[derive(Parser, Debug)]
struct GenerateArgs {
    /// Engine directory written by skyreels-export.
    #[arg(long)]
    engines: PathBuf,
    /// The prompt.
    #[arg(long, required_unless_present = "batch")]
    prompt: Option<String>,
    /// Negative prompt (default: the variant's).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// First frame (PNG or JPEG; centre-cropped to the video's aspect, then resized): the image of
    /// image-to-video models, or the clean first latent of diffusion forcing (DF models).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Last frame for diffusion forcing (DF models; PNG or JPEG, prepared like --image).
    #[arg(long)]
    last_image: Option<PathBuf>,
    /// Video to extend (DF models): an `.mp4` (frames resized to the video's size) or a
    /// safetensors tensor `video` `[1, 3, T, H, W]` in [-1, 1]. The output is this video followed
    /// by the new frames; --num-frames counts the --overlap-history frames taken from it.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Pixel frames, 4k+1 (default: the variant's, 97 at 540P, 121 at 720P).
    #[arg(long)]
    num_frames: Option<usize>,
    /// Frame size WIDTHxHEIGHT, multiples of 16 (default: the variant's, 960x544 or 1280x720).
    #[arg(long)]
    size: Option<String>,
    /// Pixel height, multiple of 16 (with --width; or use --size).
    #[arg(long)]
    height: Option<usize>,
    /// Pixel width, multiple of 16 (with --height; or use --size).
    #[arg(long)]
    width: Option<usize>,
    /// Inference steps (default: the variant's, 30).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale, 1 disables the negative pass (default: 6 T2V/DF, 5 I2V).
    #[arg(long)]
    guidance: Option<f32>,
    /// Flow shift (default: 8 T2V/DF, 5 I2V).
    #[arg(long)]
    shift: Option<f64>,
    /// Output frames per second; 24 or 16 select the model's fps bucket (default 24).
    #[arg(long)]
    fps: Option<u32>,
    /// Seed of the noise generator (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Asynchronous offset between frame blocks (0 = synchronous).
    #[arg(long)]
    ar_step: Option<usize>,
    /// Latent frames per block (default 1).
    #[arg(long)]
    causal_block_size: Option<usize>,
    /// Block-causal attention (upstream's --causal_attention).
    #[arg(long)]
    causal_attention: bool,
    /// Window length for long videos (pixel frames).
    #[arg(long)]
    base_num_frames: Option<usize>,
    /// Overlap between long-video windows (pixel frames; upstream uses 17).
    #[arg(long)]
    overlap_history: Option<usize>,
    /// Re-noise level of conditioning prefixes (upstream recommends 20; default 0).
    #[arg(long)]
    addnoise_condition: Option<f32>,
    /// TeaCache threshold (e.g. 0.2); off when absent.
    #[arg(long)]
    teacache: Option<f64>,
    /// TeaCache with retention steps (upstream --use_ret_steps).
    #[arg(long)]
    teacache_retention: bool,
    /// Decode in overlapping 256-pixel tiles every 192 (diffusers' VAE tiling): the decoder's
    /// memory becomes a tile's, for small GPUs; the video is diffusers' tiled decode, seams blended.
    #[arg(long)]
    vae_tiling: bool,
    /// TeaCache polynomial, 5 numbers highest degree first (default: the released variant's fit).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    teacache_coefficients: Option<Vec<f64>>,
    /// Resolution class of the checkpoint (540p or 720p): picks the released variant's defaults,
    /// the frame size included (default: from --size, else 540p).
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
    /// Which reference's choices to follow (default upstream).
    #[arg(long, value_enum)]
    compat: Option<CompatArg>,
    /// Output: `.mp4`, or a directory (a name without extension) for PNG frames.
    #[arg(long, required_unless_present = "batch")]
    out: Option<PathBuf>,
    /// Run every request of a JSON-lines file (one object per line, the server's fields) with the
    /// models loaded once: writes OUT_DIR/NNNN.mp4 (NNNN = line number) and one JSON result line
    /// per request on stdout; a failing line is reported and skipped.
    #[arg(long, requires = "out_dir", conflicts_with_all = ["prompt", "out", "dry_run", "save_latents", "work_dir", "h264_quantizer"])]
    batch: Option<PathBuf>,
    /// Output directory of --batch (created if missing).
    #[arg(long, requires = "batch")]
    out_dir: Option<PathBuf>,
    /// H.264 quantizer of MP4 output, 12..=51: lower is better and larger (default 16).
    #[arg(long)]
    h264_quantizer: Option<u8>,
    /// Where a long job keeps finished windows so a killed run resumes (default: `<out>.work` for
    /// multi-window videos; must be new or empty; its files are removed when the output is written).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the plan (variant, defaults, windows, outputs) and stop before loading any model.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary (with the plan) on stdout, or a JSON error; logs stay on stderr.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    parallel: skyreels_runtime::parallel::ParallelArgs,
}

impl GenerateArgs {
    fn request(&self) -> GenerateRequest {
        GenerateRequest {
            prompt: self.prompt.clone().unwrap_or_default(),
            negative_prompt: self.negative_prompt.clone(),
            size: self.size.clone(),
            width: self.width,
            height: self.height,
            resolution: self.resolution.map(|r| match r {
                ResolutionArg::P540 => Resolution::P540,
                ResolutionArg::P720 => Resolution::P720,
            }),
            num_frames: self.num_frames,
            seed: self.seed,
            steps: self.steps,
            guidance: self.guidance,
            shift: self.shift,
            fps: self.fps,
            ar_step: self.ar_step,
            causal_block_size: self.causal_block_size,
            causal_attention: self.causal_attention.then_some(true),
            base_num_frames: self.base_num_frames,
            overlap_history: self.overlap_history,
            addnoise_condition: self.addnoise_condition,
            teacache: self.teacache,
            teacache_retention: self.teacache_retention.then_some(true),
            teacache_coefficients: self.teacache_coefficients.clone(),
            compat: self.compat.map(|c| match c {
                CompatArg::Upstream => Compat::Upstream,
                CompatArg::Diffusers => Compat::Diffusers,
            }),
            pipeline: self.pipeline.map(|p| match p {
                PipelineArg::DiffusionForcing => Pipeline::DiffusionForcing,
                PipelineArg::Synchronous => Pipeline::Synchronous,
            }),
            image: self.image.clone(),
            last_image: self.last_image.clone(),
            video: self.video.clone(),
            noise: self.noise.clone(),
            offload: self.memory.offload.then_some(true),
            max_gpu_memory: self.memory.max_gpu_memory.clone(),
            vae_tiling: self.vae_tiling.then_some(true),
        }
    }

    fn output(&self) -> OutputRequest {
        OutputRequest {
            out: self.out.clone().unwrap_or_default(),
            save_latents: self.save_latents.clone(),
            work_dir: self.work_dir.clone(),
            h264_quantizer: self.h264_quantizer,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.log_level {
        LogLevelArg::Off => LevelFilter::OFF,
        LogLevelArg::Error => LevelFilter::ERROR,
        LogLevelArg::Warn => LevelFilter::WARN,
        LogLevelArg::Info => LevelFilter::INFO,
        LogLevelArg::Debug => LevelFilter::DEBUG,
        LogLevelArg::Trace => LevelFilter::TRACE,
    };
    skyreels_runtime::logging::init(
        level,
        match cli.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
    );
    let json_errors =
        matches!(&cli.command, Command::Generate(args) if args.json && args.batch.is_none());
    let result = run(cli.command, level);
    if let (Err(error), true) = (&result, json_errors) {
        print_stdout(&skyreels_runtime::job::summary::error_json(&format!(
            "{error:#}"
        )));
    }
    skyreels_contract::error_report::exit_code(result)
}

/// Prints `line` on stdout: the summary, the plan or the info a command produces.
fn print_stdout(line: &dyn std::fmt::Display) {
    #[expect(
        clippy::print_stdout,
        reason = "the command's result goes to stdout by design"
    )]
    {
        println!("{line}");
    }
}

fn run(command: Command, level: LevelFilter) -> anyhow::Result<()> {
    skyreels_runtime::interrupt::install()
        .context("installing the SIGINT/SIGTERM handler that removes unfinished outputs")?;
    match command {
        Command::Generate(args) => run_generate(&args, level),
        Command::ParallelCheck(args) => run_parallel_check(&args),
        Command::TextEncode {
            engines,
            prompt,
            out,
            offload,
            backend,
        } => Ok(skyreels_runtime::components::text_encode(
            &engines,
            &backend.backend(),
            &prompt,
            offload,
            &out,
        )?),
        Command::VaeEncode {
            engines,
            video,
            out,
            backend,
        } => Ok(skyreels_runtime::components::vae_encode(
            &engines,
            &backend.backend(),
            &video,
            &out,
        )?),
        Command::VaeDecode {
            engines,
            latents,
            out,
            fps,
            h264_quantizer,
            vae_tiling,
            backend,
        } => Ok(skyreels_runtime::components::vae_decode(
            &engines,
            &backend.backend(),
            &latents,
            vae_tiling.then_some(skyreels_runtime::vae_tiling::VaeTiling::DIFFUSERS),
            &out,
            &Mp4Options {
                frames_per_second: fps as f32,
                quantizer: h264_quantizer,
                ..Mp4Options::default()
            },
        )?),
        Command::ImageEncode {
            engines,
            image,
            out,
            backend,
        } => Ok(skyreels_runtime::components::image_encode(
            &engines,
            &backend.backend(),
            &image,
            &out,
        )?),
        Command::Serve { args } => Err(exec_serve(&args)),
        Command::Snapshot(command) => run_snapshot(command, level),
        Command::DitForward {
            engines,
            inputs,
            out,
            causal_block_size,
            memory,
            backend,
        } => Ok(skyreels_runtime::components::dit_forward(
            &engines,
            &backend.backend(),
            &inputs,
            causal_block_size,
            memory.offload,
            memory.max_gpu_memory.as_deref(),
            &out,
        )?),
        Command::Info { engines, manifest } => {
            let engine = skyreels_runtime::engine::Engine::open(&engines)?;
            if manifest {
                print_stdout(&skyreels_contract::to_yaml(&engine.manifest)?.trim_end());
            } else {
                print_stdout(&skyreels_runtime::engine_info::summary(&engine).trim_end());
            }
            Ok(())
        }
    }
}

/// Progress on stderr at log level `info` and above, none below.
fn console_progress(level: LevelFilter) -> Box<dyn Observer> {
    if level >= LevelFilter::INFO {
        Box::new(ConsoleProgress::new(ProgressDisplay::for_stderr()))
    } else {
        Box::new(Unobserved)
    }
}

/// parse → plan → (dry run: print the plan) → load, generate, write → summary. Progress shows
/// at log level `info` and above.
fn run_generate(args: &GenerateArgs, level: LevelFilter) -> anyhow::Result<()> {
    if let (Some(batch), Some(out_dir)) = (&args.batch, &args.out_dir) {
        return run_batch(args, batch, out_dir, level);
    }
    let mut models = Models::open(&args.engines, args.backend.backend(), Residency::OneJob)?;
    let plan = JobPlan::new(
        models.engine(),
        models.backend(),
        &args.request(),
        &args.output(),
    )?;
    let num_heads = models
        .engine()
        .manifest
        .dit
        .as_ref()
        .map_or(1, |d| d.config.num_heads);
    let gpu = models.backend().device().is_some();
    let parallel = skyreels_runtime::parallel::config::check_generate(
        &args.parallel,
        num_heads,
        plan.uses_negative_prompt(),
        gpu,
    )?;
    if !args.dry_run {
        match skyreels_runtime::parallel::start::join(&parallel, gpu)? {
            Joined::Supervised => return Ok(()),
            Joined::Single => {}
            Joined::Rank(rank) => {
                if let Some(device) = rank.device {
                    let backend = Backend::new(models.backend().target(), device as i32, 0);
                    models = Models::open(&args.engines, backend, Residency::OneJob)?;
                }
                models.set_rank(rank);
            }
        }
    }
    if let Some(note) = &plan.variant.note {
        tracing::info!("{note}");
    }
    if args.dry_run {
        if args.json {
            print_stdout(&serde_json::to_string(&plan).context("writing the plan as JSON")?);
        } else {
            print_stdout(&plan.to_string().trim_end());
        }
        return Ok(());
    }
    let mut progress = console_progress(level);
    let report = run_job(&plan, &mut models, progress.as_mut())?;
    if !models.writes_output() {
        return Ok(());
    }
    if args.json {
        let summary = skyreels_runtime::job::summary::summary_json(&plan, &report);
        print_stdout(&summary);
    } else {
        print_done(&plan, &report);
    }
    Ok(())
}

/// `generate --batch`: every line of the file, the models loaded once, one result line each.
fn run_batch(
    args: &GenerateArgs,
    batch: &Path,
    out_dir: &Path,
    level: LevelFilter,
) -> anyhow::Result<()> {
    let flags = serde_json::to_value(args.request()).context("reading the request flags")?;
    if let Some((flag, _)) = flags
        .as_object()
        .into_iter()
        .flatten()
        .find(|(name, value)| *name != "prompt" && !value.is_null())
    {
        anyhow::bail!(
            "--{} is a request flag, and with --batch every line gives its own request\n  fix: put \"{flag}\" in the lines of {}",
            flag.replace('_', "-"),
            batch.display()
        );
    }
    let mut models = Models::open(&args.engines, args.backend.backend(), Residency::KeepLoaded)?;
    let mut progress = console_progress(level);
    let outcome = skyreels_runtime::job::batch::run_batch(
        batch,
        out_dir,
        &mut models,
        progress.as_mut(),
        &mut |result| print_stdout(result),
    )?;
    if !outcome.failed.is_empty() {
        let lines: Vec<String> = outcome.failed.iter().map(usize::to_string).collect();
        anyhow::bail!(
            "{} of {} requests failed (lines {}); the others were written to {}\n  fix: see the failed lines' result on stdout, fix them and run those again",
            outcome.failed.len(),
            outcome.failed.len() + outcome.completed,
            lines.join(", "),
            out_dir.display()
        );
    }
    Ok(())
}

fn run_snapshot(command: SnapshotCommand, level: LevelFilter) -> anyhow::Result<()> {
    let mut progress = console_progress(level);
    match command {
        SnapshotCommand::Record {
            engines,
            cases,
            out,
            backend,
        } => {
            let mut models = Models::open(&engines, backend.backend(), Residency::KeepLoaded)?;
            let names =
                skyreels_runtime::snapshot::record(&cases, &out, &mut models, progress.as_mut())?;
            tracing::info!("recorded {} cases into {}", names.len(), out.display());
            Ok(())
        }
        SnapshotCommand::Check {
            engines,
            snapshots,
            tolerance,
            backend,
        } => {
            let mut models = Models::open(&engines, backend.backend(), Residency::KeepLoaded)?;
            let report = skyreels_runtime::snapshot::check(
                &snapshots,
                tolerance.as_deref(),
                &mut models,
                progress.as_mut(),
            )?;
            print_stdout(&skyreels_runtime::snapshot::table(&report).trim_end());
            let failed = report.failed();
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {} snapshot cases are outside the tolerance: {}\n  fix: if the change is intended, record the snapshot again; else compare the engine, ONNX Runtime and device lines above with the recording",
                    failed.len(),
                    report.cases.len(),
                    failed.join(", ")
                );
            }
            Ok(())
        }
    }
}

fn print_done(plan: &JobPlan, report: &JobReport) {
    tracing::info!(
        "wrote {} ({} frames, {}x{}) in {:.1}s; {} DiT passes, {} block passes skipped by TeaCache",
        plan.output.out.display(),
        report.written.frames,
        report.written.width,
        report.written.height,
        report.seconds,
        report.stats.forwards,
        report.stats.blocks_skipped
    );
}

/// Replaces this process with `skyreels-serve` (beside this binary, else on `PATH`), so that the
/// web stack stays out of this binary and signals reach the server directly; returns only on failure.
fn exec_serve(args: &[std::ffi::OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("skyreels-serve")))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("skyreels-serve"));
    let error = std::process::Command::new(&program).args(args).exec();
    anyhow::anyhow!(
        "cannot run {}: {error}\n  fix: install skyreels-serve beside skyreels or on PATH (cargo build --release --bin skyreels --bin skyreels-serve puts both in target/release)",
        program.display()
    )
}

fn run_parallel_check(args: &skyreels_runtime::parallel::check::CheckArgs) -> anyhow::Result<()> {
    match skyreels_runtime::parallel::check::run(args) {
        Ok(Some(report)) => {
            print_stdout(&serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(error) => {
            eprintln!("Error: {error}");
            std::process::exit(error.exit_code());
        }
    }
}
