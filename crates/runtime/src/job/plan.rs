//! A request turned into a plan that owns every decision before any model loads: the engine's
//! variant defaults overridden by the request, the sampling windows, TeaCache, conditioning and
//! outputs. Every refusal happens here, naming the field (as its CLI flag) and the fix.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};
use skyreels_contract::manifest::Component;
use skyreels_contract::{DitConfig, ModelType, Pipeline, Precision, Target};

use super::inputs::read_video_sized;
use super::outputs::{OutputPlan, plan_outputs};
use super::request::{GenerateRequest, OutputRequest, parse_size};
use super::variant::{VariantChoice, choose_variant};
use crate::dit::placement::DitMemoryPlan;
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::image::RgbImage;
use crate::pipeline::plan::{Compat, Plan, Request, Start};
use crate::pipeline::schedule::FlowSchedule;
use crate::pipeline::segments::Segment;
use crate::session::Backend;
use crate::teacache::TeaCacheConfig;
use crate::tensor::Tensor;
use crate::text_placement::TextMemoryPlan;
use crate::vae_tiling::VaeTiling;

/// The engine a plan was made for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineIdentity {
    /// Engine directory.
    pub dir: PathBuf,
    /// SHA-256 of its `manifest.yaml`, hex.
    pub manifest_sha256: String,
    /// Export target (`cpu`, `cuda`, `tensorrt`).
    pub target: Target,
    /// Weight precision (`fp32`, `fp16`, `bf16`).
    pub precision: Precision,
}

/// Everything that decides a job's result, resolved: the request over the variant's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSettings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (used when `guidance` > 1).
    pub negative_prompt: String,
    /// Seed of the noise generator.
    pub seed: u64,
    /// Recorded noise draws replacing the seeded generator.
    pub noise: Option<PathBuf>,
    /// Pixel width.
    pub width: usize,
    /// Pixel height.
    pub height: usize,
    /// Pixel frames of the output (an extension's input frames not counted twice).
    pub num_frames: usize,
    /// Inference steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f32,
    /// Flow shift.
    pub shift: f64,
    /// Frames per second of the output.
    pub fps: u32,
    /// Sampling loop.
    pub pipeline: Pipeline,
    /// Reference behaviour followed.
    pub compat: Compat,
    /// Asynchronous offset between frame blocks.
    pub ar_step: usize,
    /// Latent frames per block.
    pub causal_block_size: usize,
    /// Block-causal attention requested.
    pub causal_attention: bool,
    /// Window length of long videos, pixel frames.
    pub base_num_frames: Option<usize>,
    /// Overlap between windows, pixel frames.
    pub overlap_history: Option<usize>,
    /// Prefix re-noise level.
    pub addnoise_condition: f32,
    /// TeaCache, when on.
    pub teacache: Option<TeaCacheConfig>,
    /// First frame.
    pub image: Option<PathBuf>,
    /// Last frame.
    pub last_image: Option<PathBuf>,
    /// Video extended.
    pub video: Option<PathBuf>,
}

/// A validated job: what runs, on what, and where it goes.
#[derive(Debug, Clone, Serialize)]
pub struct JobPlan {
    /// The engine.
    pub engine: EngineIdentity,
    /// The model variant whose defaults were used.
    pub variant: VariantChoice,
    /// Text-to-video or image-to-video model.
    pub model_type: ModelType,
    /// Where the graphs run.
    pub backend: Backend,
    /// The resolved settings.
    #[serde(flatten)]
    pub settings: JobSettings,
    /// Sampling windows.
    pub windows: Vec<Segment>,
    /// Whether the block-causal attention graph runs.
    pub block_causal: bool,
    /// Whether the DiT's layer weights stay on the device or stream from host memory. It does
    /// not change the result, so it is not part of the settings (nor of the fingerprint).
    pub dit_memory: DitMemoryPlan,
    /// The same for the text encoder's block weights (absent without a text encoder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_memory: Option<TextMemoryPlan>,
    /// Tiled decoding, when asked for. It changes the video, not the sampled latents, so it is not
    /// part of the settings' fingerprint (a resumed job may decode either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vae_tiling: Option<VaeTiling>,
    /// Outputs.
    pub output: OutputPlan,
    /// The sampling plan handed to the pipeline.
    #[serde(skip)]
    pub sampling: Plan,
    /// The video being extended, read at its planned size.
    #[serde(skip)]
    pub input_video: Option<Tensor>,
}

fn invalid(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(message.into())
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The frame size `(width, height)` a request names, if it names one.
fn requested_size(request: &GenerateRequest) -> Result<Option<(usize, usize)>> {
    match (&request.size, request.width, request.height) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(invalid(
            "--size and --width/--height both set the frame size\n  fix: pass only --size WIDTHxHEIGHT, or only --width and --height",
        )),
        (Some(text), None, None) => parse_size(text).map(Some).map_err(invalid),
        (None, Some(width), Some(height)) => Ok(Some((width, height))),
        (None, None, None) => Ok(None),
        (None, Some(_), None) | (None, None, Some(_)) => Err(invalid(
            "--width and --height go together (the default size is the variant's)\n  fix: pass both, or --size WIDTHxHEIGHT",
        )),
    }
}

fn teacache(
    request: &GenerateRequest,
    variant: &VariantChoice,
    pipeline: Pipeline,
) -> Result<Option<TeaCacheConfig>> {
    let Some(threshold) = request.teacache else {
        return Ok(None);
    };
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(invalid(format!(
            "--teacache {threshold} must be a positive threshold\n  fix: e.g. --teacache 0.2 (upstream's default; 0.3 with --teacache-retention)"
        )));
    }
    let use_retention = request.teacache_retention.unwrap_or(false);
    let coefficients = match (&request.teacache_coefficients, &variant.variant) {
        (Some(given), _) => <[f64; 5]>::try_from(given.as_slice())
            .ok()
            .filter(|c| c.iter().all(|x| x.is_finite()))
            .ok_or_else(|| invalid(format!(
                "--teacache-coefficients takes 5 finite numbers (highest degree first), got {}\n  fix: e.g. --teacache-coefficients=-5.21862437e4,9.23041404e3,-5.28275948e2,1.36987616e1,-4.99875664e-2",
                given.len()
            )))?,
        (None, Some(known)) => known.teacache.coefficients(use_retention),
        (None, None) => {
            return Err(invalid(format!(
                "choosing the TeaCache fit for --teacache: no released SkyReels-V2 model has this architecture ({}) for {pipeline:?} sampling\n  fix: give the fit with --teacache-coefficients (5 numbers, highest degree first)",
                variant.architecture
            )));
        }
    };
    Ok(Some(TeaCacheConfig {
        threshold,
        coefficients,
        use_retention,
    }))
}

/// Refuses conditioning the engine's model or the sampling loop cannot take.
fn check_conditioning(
    request: &GenerateRequest,
    model_type: ModelType,
    pipeline: Pipeline,
) -> Result<()> {
    let conditioned =
        request.image.is_some() || request.last_image.is_some() || request.video.is_some();
    match model_type {
        ModelType::I2v => {
            if request.last_image.is_some() || request.video.is_some() {
                return Err(invalid(
                    "--last-image and --video need a diffusion-forcing (DF) engine; this one holds an image-to-video model\n  fix: export a DF checkpoint, or drop them",
                ));
            }
            if request.image.is_none() {
                return Err(invalid(
                    "--image is missing: this engine holds an image-to-video model\n  fix: pass --image FIRST_FRAME.png",
                ));
            }
        }
        ModelType::T2v => {
            if pipeline == Pipeline::Synchronous && conditioned {
                return Err(invalid(
                    "--image, --last-image and --video condition diffusion forcing\n  fix: drop --pipeline synchronous",
                ));
            }
        }
    }
    if request.image.is_some() && request.video.is_some() {
        return Err(invalid(
            "--video and --image both set the start of the video\n  fix: pass only one of them",
        ));
    }
    Ok(())
}

/// Refuses an engine that `backend` cannot run: weights the CPU provider has no kernels for, or
/// a build for another backend, GPU or ONNX Runtime version.
pub fn check_runnable(engine: &Engine, backend: &Backend) -> Result<()> {
    let manifest = &engine.manifest;
    if manifest.precision != Precision::Fp32 && matches!(backend, Backend::Cpu { .. }) {
        return Err(engine.error(format!(
            "exported for --target {} with {} weights, which ONNX Runtime's CPU provider cannot run\n  fix: re-export it with skyreels-export --target cpu (fp32), or run it with --backend cuda",
            manifest.target, manifest.precision
        )));
    }
    engine.check_backend(backend)
}

/// Refuses an engine that lacks a component the job needs, or that the backend cannot run.
fn check_engine(engine: &Engine, backend: &Backend, model_type: ModelType) -> Result<()> {
    let manifest = &engine.manifest;
    if manifest.text_encoder.is_none() {
        return Err(engine.missing(Component::TextEncoder));
    }
    if manifest.vae.is_none() {
        return Err(engine.missing(Component::Vae));
    }
    if model_type == ModelType::I2v && manifest.image_encoder.is_none() {
        return Err(engine.missing(Component::ImageEncoder));
    }
    check_runnable(engine, backend)
}

impl JobPlan {
    /// Plans `request` on `engine` run by `backend`, writing to `output`. Reads the manifest and,
    /// for `video`, the input video; loads no model.
    pub fn new(
        engine: &Engine,
        backend: &Backend,
        request: &GenerateRequest,
        output: &OutputRequest,
    ) -> Result<JobPlan> {
        if let Backend::Cpu { threads } = backend {
            crate::pipeline::limits::check_threads(*threads)?;
        }
        if request.prompt.trim().is_empty() {
            return Err(invalid(
                "--prompt is empty\n  fix: describe the video, e.g. --prompt \"a red fox running through fresh snow\"",
            ));
        }
        let dit_config: DitConfig = engine
            .manifest
            .dit
            .as_ref()
            .map(|d| d.config.clone())
            .ok_or_else(|| engine.missing(Component::Dit))?;
        let model_type = dit_config.model_type;
        let pipeline = request.pipeline.unwrap_or(match model_type {
            ModelType::T2v => Pipeline::DiffusionForcing,
            ModelType::I2v => Pipeline::Synchronous,
        });
        check_conditioning(request, model_type, pipeline)?;
        let size = requested_size(request)?;
        if let Some((width, height)) = size {
            crate::pipeline::limits::check_frame_size(width, height)?;
        }
        let variant = choose_variant(&dit_config, request.resolution, size, pipeline)
            .map_err(|e| invalid(e.to_string()))?;
        let defaults = &variant.defaults;
        let (width, height) = match (size, request.resolution) {
            (Some(size), _) => size,
            (None, Some(resolution)) => {
                let (height, width) = resolution.size();
                (width, height)
            }
            (None, None) => (defaults.width, defaults.height),
        };
        let compat = request.compat.unwrap_or(Compat::Upstream);
        crate::pipeline::limits::check_frame_size(width, height)?;
        for path in [&request.image, &request.last_image].into_iter().flatten() {
            RgbImage::open(path)?;
        }
        if let Some(noise) = &request.noise {
            // Checked without opening it: opening a FIFO blocks.
            skyreels_contract::files::regular_file_size(noise, "tensor file")?;
        }
        let input_video = match &request.video {
            Some(path) => Some(read_video_sized(path, width, height)?),
            None => None,
        };
        let start = match (&input_video, &request.image, model_type) {
            (Some(video), _, _) => Start::Video {
                frames: video.shape[2],
            },
            // An I2V model takes the image through its mask + latent channels, not as a prefix.
            (None, Some(_), ModelType::T2v) => Start::Image,
            _ => Start::Noise,
        };
        let sampling = Plan::new(Request {
            num_frames: request.num_frames.unwrap_or(defaults.num_frames),
            height,
            width,
            steps: request.steps.unwrap_or(defaults.steps),
            guidance: request.guidance.unwrap_or(defaults.guidance),
            shift: request.shift.unwrap_or(defaults.shift),
            fps: request.fps.unwrap_or(defaults.fps),
            ar_step: request.ar_step.unwrap_or(0),
            causal_block_size: request.causal_block_size.unwrap_or(1),
            causal_attention: request.causal_attention.unwrap_or(false),
            base_num_frames: request.base_num_frames,
            overlap_history: request.overlap_history,
            addnoise_condition: request.addnoise_condition.unwrap_or(0.0),
            compat,
            start,
            last_image: request.last_image.is_some(),
        })?;
        let r = &sampling.request;
        if pipeline == Pipeline::Synchronous && (r.ar_step > 0 || sampling.segments.len() > 1) {
            return Err(invalid(
                "--pipeline synchronous samples one window with all frames together\n  fix: drop --ar-step / long-video flags, or use --pipeline diffusion-forcing",
            ));
        }
        FlowSchedule::new(
            compat,
            r.steps,
            r.shift,
            pipeline == Pipeline::DiffusionForcing,
        )
        .map_err(|e| invalid(format!("--shift {}: {e}", r.shift)))?;
        let teacache = teacache(request, &variant, pipeline)?;
        let output = plan_outputs(output, sampling.segments.len())?;
        crate::output::check_generate_destinations(
            &output.out,
            output.save_latents.as_deref(),
            r.width,
            r.height,
            r.fps,
        )?;
        crate::image::check_image_files(&[
            request.image.as_deref(),
            request.last_image.as_deref(),
        ])?;
        check_engine(engine, backend, model_type)?;
        let dit_memory = DitMemoryPlan::for_engine(
            engine,
            request.offload.unwrap_or(false),
            request.max_gpu_memory.as_deref(),
        )?;
        let text_memory = TextMemoryPlan::for_engine(
            engine,
            request.offload.unwrap_or(false),
            dit_memory.max_gpu_memory,
        )?;
        let manifest_text =
            fs_err::read(engine.dir.join(skyreels_contract::manifest::MANIFEST_FILE))?;
        let settings = JobSettings {
            prompt: request.prompt.clone(),
            negative_prompt: request
                .negative_prompt
                .clone()
                .unwrap_or_else(|| defaults.negative_prompt.clone()),
            seed: request.seed.unwrap_or(0),
            noise: request.noise.clone(),
            width,
            height,
            num_frames: r.num_frames,
            steps: r.steps,
            guidance: r.guidance,
            shift: r.shift,
            fps: r.fps,
            pipeline,
            compat,
            ar_step: r.ar_step,
            causal_block_size: r.causal_block_size,
            causal_attention: r.causal_attention,
            base_num_frames: r.base_num_frames,
            overlap_history: r.overlap_history,
            addnoise_condition: r.addnoise_condition,
            teacache,
            image: request.image.clone(),
            last_image: request.last_image.clone(),
            video: request.video.clone(),
        };
        Ok(JobPlan {
            engine: EngineIdentity {
                dir: engine.dir.clone(),
                manifest_sha256: sha256_hex(&manifest_text),
                target: engine.manifest.target,
                precision: engine.manifest.precision,
            },
            variant,
            model_type,
            backend: backend.clone(),
            windows: sampling.segments.clone(),
            block_causal: sampling.block_causal,
            dit_memory,
            text_memory,
            vae_tiling: request
                .vae_tiling
                .unwrap_or(false)
                .then_some(VaeTiling::DIFFUSERS),
            settings,
            output,
            sampling,
            input_video,
        })
    }

    /// Whether the negative prompt is encoded (guidance above 1).
    pub fn uses_negative_prompt(&self) -> bool {
        self.settings.guidance > 1.0
    }

    /// Whether the job needs the VAE encoder: conditioning images or videos, or upstream-style long
    /// videos (which re-encode decoded overlap frames).
    pub fn needs_vae_encoder(&self) -> bool {
        let s = &self.settings;
        s.image.is_some()
            || s.last_image.is_some()
            || s.video.is_some()
            || (self.windows.len() > 1 && s.compat == Compat::Upstream)
    }

    /// The causal block size the DiT's block-causal graph is loaded with, if it is used.
    pub fn causal_block_size(&self) -> Option<usize> {
        self.block_causal.then_some(self.settings.causal_block_size)
    }

    /// Everything that decides the result (settings, conditioning file contents, engine manifest
    /// and this build): a work directory is resumed only by the job with the same fingerprint.
    pub fn fingerprint(&self) -> Result<String> {
        let mut inputs = String::new();
        let s = &self.settings;
        for path in [&s.image, &s.last_image, &s.video, &s.noise]
            .into_iter()
            .flatten()
        {
            let bytes = skyreels_contract::files::read_bounded(
                path,
                "input file",
                skyreels_contract::files::physical_memory(),
            )?;
            inputs += &format!("{} {}\n", path.display(), sha256_hex(&bytes));
        }
        let settings = serde_json::to_string(&self.settings)
            .map_err(|e| invalid(format!("the job's settings cannot be written as JSON: {e}")))?;
        Ok(format!(
            "{}\n{settings}\n{inputs}{}",
            env!("CARGO_PKG_VERSION"),
            self.engine.manifest_sha256
        ))
    }
}

impl fmt::Display for JobPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        match &self.variant.name {
            Some(name) => writeln!(f, "variant:   {name} ({})", self.variant.architecture)?,
            None => writeln!(f, "variant:   unrecognised ({})", self.variant.architecture)?,
        }
        if let Some(note) = &self.variant.note {
            writeln!(f, "note:      {note}")?;
        }
        writeln!(
            f,
            "engine:    {} (manifest sha256 {}, {} {})",
            self.engine.dir.display(),
            &self.engine.manifest_sha256[..12],
            self.engine.target,
            self.engine.precision
        )?;
        writeln!(f, "backend:   {}", self.backend)?;
        writeln!(f, "prompt:    {}", s.prompt)?;
        if self.uses_negative_prompt() {
            writeln!(f, "negative:  {}", s.negative_prompt)?;
        }
        writeln!(
            f,
            "video:     {}x{}, {} frames at {} fps, seed {}",
            s.width, s.height, s.num_frames, s.fps, s.seed
        )?;
        let pipeline = match s.pipeline {
            Pipeline::DiffusionForcing => "diffusion forcing",
            Pipeline::Synchronous => "synchronous",
        };
        let compat = match s.compat {
            Compat::Upstream => "upstream",
            Compat::Diffusers => "diffusers",
        };
        writeln!(
            f,
            "sampling:  {pipeline} ({compat}), {} steps, guidance {}, shift {}",
            s.steps, s.guidance, s.shift
        )?;
        if s.ar_step > 0 || s.causal_block_size > 1 {
            writeln!(
                f,
                "async:     ar_step {}, causal block {} ({} attention)",
                s.ar_step,
                s.causal_block_size,
                if self.block_causal {
                    "block-causal"
                } else {
                    "full"
                }
            )?;
        }
        let windows: Vec<String> = self
            .windows
            .iter()
            .map(|w| {
                format!(
                    "{} latent frames ({} prefix)",
                    w.latent_frames, w.prefix_frames
                )
            })
            .collect();
        writeln!(f, "windows:   {}", windows.join(", "))?;
        writeln!(f, "dit:       {}", self.dit_memory)?;
        if let Some(text_memory) = &self.text_memory {
            writeln!(f, "text:      {text_memory}")?;
        }
        if let Some(tiling) = &self.vae_tiling {
            writeln!(
                f,
                "vae:       tiled decode, {}x{} pixel tiles every {}x{}",
                tiling.tile[1], tiling.tile[0], tiling.stride[1], tiling.stride[0]
            )?;
        }
        if let Some(teacache) = &s.teacache {
            writeln!(
                f,
                "teacache:  threshold {}{}",
                teacache.threshold,
                if teacache.use_retention {
                    ", retention steps"
                } else {
                    ""
                }
            )?;
        }
        for (label, path) in [
            ("image:", &s.image),
            ("last:", &s.last_image),
            ("extends:", &s.video),
        ] {
            if let Some(path) = path {
                writeln!(f, "{label:<10} {}", path.display())?;
            }
        }
        let format = match self.output.format {
            super::outputs::VideoFormat::Mp4 => "H.264 MP4",
            super::outputs::VideoFormat::PngFrames => "PNG frames",
        };
        writeln!(f, "output:    {} ({format})", self.output.out.display())?;
        if let Some(dir) = &self.output.work_dir {
            writeln!(f, "work dir:  {}", dir.display())?;
        }
        Ok(())
    }
}
