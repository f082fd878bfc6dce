//! Running a planned job: encode the prompts and conditioning, sample every window, decode, and
//! write the outputs, reporting each stage to the observer and timing it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;
use skyreels_contract::ModelType;

use super::inputs::{encode_image_latent, image_pixels};
use super::models::{Models, Residency};
use super::outputs::VideoFormat;
use super::plan::JobPlan;
use crate::error::Result;
use crate::image::RgbImage;
use crate::noise::NoiseSource;
use crate::output::{self, Mp4Options, Video};
use crate::pipeline::denoiser::{Denoiser, DitDenoiser};
use crate::pipeline::generate::{
    Conditioning, Generation, GenerationInputs, GenerationStats, Vae, WorkDir, generate,
};
use crate::pipeline::image_condition::image_condition;
use crate::pipeline::progress::{Observer, Progress, Stage, in_stage};
use crate::pipeline::sampler::WindowSettings;
use crate::pipeline::schedule::FlowSchedule;
use crate::tensor::Tensor;
use crate::text::{TextEncoder, clean_prompt};

/// A sampled (and decoded) job, not yet written.
pub struct GeneratedVideo {
    /// Latents and decoded video.
    pub generation: Generation,
    /// The work directory holding finished windows, removed once the output is written.
    pub work_dir: Option<WorkDir>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenVideo {
    /// Frames in the video.
    pub frames: usize,
    /// Pixel width.
    pub width: usize,
    /// Pixel height.
    pub height: usize,
}

/// Wall-clock seconds per stage (a stage run several times, such as loading, adds up).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageTimings(pub BTreeMap<Stage, f64>);

/// A finished job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The video written.
    #[serde(flatten)]
    pub written: WrittenVideo,
    /// Sampling cost.
    #[serde(flatten)]
    pub stats: GenerationStats,
    /// Seconds per stage.
    pub timings: StageTimings,
    /// Seconds from the start of the job to the written output.
    pub seconds: f64,
    /// The CUDA arena's statistics at the end of the job (its peaks count from the process's
    /// start); `None` on the CPU.
    pub gpu_arena: Option<crate::cuda_arena::ArenaStats>,
}

/// Passes every event on and adds each finished stage's seconds to `timings`.
struct Timed<'a> {
    inner: &'a mut dyn Observer,
    timings: StageTimings,
}

impl Observer for Timed<'_> {
    fn report(&mut self, progress: &Progress) -> ControlFlow<()> {
        if let Progress::StageFinished { stage, seconds, .. } = progress {
            *self.timings.0.entry(*stage).or_default() += seconds;
        }
        self.inner.report(progress)
    }
}

/// Tokenizes and encodes `prompt` (named `flag` in messages), warning when it is longer than the
/// encoder's token window (upstream truncates silently).
/// The prompt's context and, when guidance is on, the negative prompt's; the text encoder is
/// released afterwards.
fn encode_prompts(
    plan: &JobPlan,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> Result<(Tensor, Option<Tensor>)> {
    let s = &plan.settings;
    let encoder = models.text_encoder(plan, observer)?;
    let encoded = in_stage(observer, Stage::TextEncoding, "prompt", |_| {
        let context = encode_prompt(encoder, "--prompt", &s.prompt)?;
        let negative = if plan.uses_negative_prompt() {
            Some(encode_prompt(
                encoder,
                "--negative-prompt",
                &s.negative_prompt,
            )?)
        } else {
            None
        };
        Ok((context, negative))
    })?;
    models.done_with_text_encoder();
    Ok(encoded)
}

fn encode_prompt(encoder: &mut TextEncoder, flag: &str, prompt: &str) -> Result<Tensor> {
    let tokens = encoder.tokenizer().tokenize(&clean_prompt(prompt))?;
    if tokens.truncated_tokens > 0 {
        tracing::warn!(
            "{flag} is longer than the text encoder's {} tokens; its last {} tokens are ignored (as upstream does)\n  fix: shorten it to keep every word",
            encoder.tokenizer().max_length(),
            tokens.truncated_tokens
        );
    }
    encoder.encode_tokens(&tokens)
}

/// Samples and decodes `plan` with `models`: text encoding, conditioning, every window, decoding.
/// The DiT returns to `models` whether or not sampling succeeds.
pub fn generate_job(
    plan: &JobPlan,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> Result<GeneratedVideo> {
    let s = &plan.settings;
    let mut noise = match &s.noise {
        Some(path) => NoiseSource::from_file(path)?,
        None => NoiseSource::seeded(s.seed),
    };
    generate_job_with_noise(plan, models, &mut noise, observer)
}

/// [`generate_job`] drawing its noise from `noise` (snapshots record the draws, then replay them).
pub fn generate_job_with_noise(
    plan: &JobPlan,
    models: &mut Models,
    noise: &mut NoiseSource,
    observer: &mut dyn Observer,
) -> Result<GeneratedVideo> {
    let s = &plan.settings;
    // Taken before any model loads, so a second run of the job is refused at once. Of several
    // ranks only rank 0 keeps one (it saves the windows; the others sample the same ones); the
    // windows an earlier run finished are shared from it below, so every rank skips the same.
    let work_dir = match &plan.output.work_dir {
        Some(_) if !models.writes_output() => None,
        Some(dir) => Some(WorkDir::open(dir, &plan.fingerprint()?)?),
        None => None,
    };
    // Of several ranks, rank 0 alone loads the text encoder; the others get its contexts.
    let encoded = if models.writes_output() {
        Some(encode_prompts(plan, models, observer)?)
    } else {
        None
    };
    let (context, negative_context) = models.share_contexts(encoded)?;
    // The same on every rank: each rank's plan names the work directory.
    let resumed = if models.is_multi_rank() && plan.output.work_dir.is_some() {
        let saved = work_dir
            .as_ref()
            .map(|dir| dir.saved_windows(&plan.sampling))
            .transpose()?;
        models.share_windows(saved)?
    } else {
        std::collections::HashMap::new()
    };

    let mut conditioning = Conditioning {
        video: plan.input_video.clone(),
        ..Conditioning::default()
    };
    let mut image_context = None;
    let mut condition = None;
    let (width, height) = (s.width, s.height);
    if let Some(path) = &s.image {
        if plan.model_type == ModelType::I2v {
            let picture = RgbImage::open(path)?;
            let clip = models.image_encoder(observer)?;
            image_context = Some(in_stage(
                observer,
                Stage::ImageEncoding,
                "image (clip)",
                |_| clip.encode(&picture),
            )?);
            let vae = models.vae_encoder(observer)?;
            condition = Some(in_stage(
                observer,
                Stage::ImageEncoding,
                "image (vae)",
                |_| image_condition(vae, &image_pixels(&picture, width, height), s.num_frames),
            )?);
        } else {
            let vae = models.vae_encoder(observer)?;
            conditioning.first_image = Some(in_stage(
                observer,
                Stage::ImageEncoding,
                "first image",
                |_| encode_image_latent(vae, path, width, height),
            )?);
        }
    }
    if let Some(path) = &s.last_image {
        let vae = models.vae_encoder(observer)?;
        conditioning.last_image = Some(in_stage(
            observer,
            Stage::ImageEncoding,
            "last image",
            |_| encode_image_latent(vae, path, width, height),
        )?);
    }

    let causal_block_size = plan.causal_block_size();
    let dit = models.take_dit(causal_block_size, plan.dit_memory.placement, observer)?;
    let mut denoiser = DitDenoiser {
        dit,
        context,
        negative_context,
        image_context,
        fps: if s.fps == 16 { 0 } else { 1 },
        condition,
    };
    // A rank other than 0 decodes only what the next window needs (upstream re-encodes decoded
    // frames): one window without image or video conditioning needs no VAE there.
    let needs_vae = models.writes_output() || plan.windows.len() > 1 || plan.needs_vae_encoder();
    let rank = models.take_rank();
    let result = match rank {
        Some(mut rank) => {
            let result = rank.run_denoiser(&mut denoiser, |denoiser| {
                sample(
                    plan,
                    models,
                    denoiser,
                    noise,
                    &conditioning,
                    work_dir,
                    resumed,
                    needs_vae,
                    observer,
                )
            });
            models.put_rank(Some(rank));
            result
        }
        None => sample(
            plan,
            models,
            &mut denoiser,
            noise,
            &conditioning,
            work_dir,
            resumed,
            needs_vae,
            observer,
        ),
    };
    models.return_dit(denoiser.dit, causal_block_size);
    result
}

/// The sampling stage of [`generate_job`], with the DiT taken out of `models`; the VAE is
/// loaded here when `needs_vae`.
#[expect(
    clippy::too_many_arguments,
    reason = "the job's parts, borrowed apart so the DiT can be handed back on every path"
)]
fn sample(
    plan: &JobPlan,
    models: &mut Models,
    denoiser: &mut dyn Denoiser,
    noise: &mut NoiseSource,
    conditioning: &Conditioning,
    work_dir: Option<WorkDir>,
    resumed: std::collections::HashMap<usize, Tensor>,
    needs_vae: bool,
    observer: &mut dyn Observer,
) -> Result<GeneratedVideo> {
    let s = &plan.settings;
    let settings = WindowSettings {
        guidance: s.guidance,
        addnoise_condition: s.addnoise_condition,
        teacache: s.teacache.clone(),
    };
    let schedule = FlowSchedule::new(
        s.compat,
        s.steps,
        s.shift,
        s.pipeline == skyreels_contract::Pipeline::DiffusionForcing,
    )?;
    // A one-job process frees the DiT's layer weights before the final decode.
    let release_after_sampling = models.residency() == Residency::OneJob;
    let vae = if needs_vae {
        let (decoder, encoder) = models.vae_halves(plan.needs_vae_encoder(), observer)?;
        Some(Vae {
            decoder,
            encoder,
            tiling: plan.vae_tiling,
        })
    } else {
        None
    };
    let windows = plan.windows.len();
    let what = if windows == 1 {
        "1 window".to_string()
    } else {
        format!("{windows} windows")
    };
    let generation = in_stage(observer, Stage::Sampling, &what, |observer| {
        generate(GenerationInputs {
            plan: &plan.sampling,
            denoiser,
            schedule: &schedule,
            settings: &settings,
            noise,
            conditioning,
            vae,
            work_dir: work_dir.as_ref(),
            resumed,
            observer,
            release_after_sampling,
        })
    })?;
    Ok(GeneratedVideo {
        generation,
        work_dir,
    })
}

/// The video of batch entry 0 of `[B, 3, T, H, W]` as 8-bit frames.
pub fn first_video(video: &Tensor) -> Result<Video> {
    let per_video: usize = video.shape[1..].iter().product();
    let first = Tensor {
        shape: video.shape[1..].to_vec(),
        data: video.data[..per_video].to_vec(),
    };
    Ok(Video::from_tensor(&first)?)
}

/// Writes `generated` where `plan` says (latents first, then the video), then removes the work
/// directory.
pub fn write_job(
    plan: &JobPlan,
    generated: GeneratedVideo,
    observer: &mut dyn Observer,
) -> Result<WrittenVideo> {
    let output = &plan.output;
    let what = output.out.display().to_string();
    let written = in_stage(observer, Stage::Writing, &what, |_| {
        if let Some(path) = &output.save_latents {
            output::save_latents(path, [("latents", &generated.generation.latents)])?;
        }
        let video = generated.generation.video.as_ref().ok_or_else(|| {
            crate::error::RuntimeError::Invalid("the generation decoded no video".into())
        })?;
        let frames = first_video(video)?;
        match output.format {
            VideoFormat::Mp4 => output::write_mp4(
                &frames,
                &output.out,
                &Mp4Options {
                    frames_per_second: plan.settings.fps as f32,
                    quantizer: output.h264_quantizer,
                    ..Mp4Options::default()
                },
            )?,
            VideoFormat::PngFrames => output::write_png_frames(&frames, &output.out)?,
        }
        Ok(WrittenVideo {
            frames: frames.num_frames(),
            width: frames.width(),
            height: frames.height(),
        })
    })?;
    if let Some(work_dir) = generated.work_dir {
        work_dir.finish()?;
    }
    Ok(written)
}

/// Generates and writes `plan`, timing every stage.
pub fn run_job(
    plan: &JobPlan,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> Result<JobReport> {
    let started = Instant::now();
    let mut timed = Timed {
        inner: observer,
        timings: StageTimings::default(),
    };
    let generated = generate_job(plan, models, &mut timed)?;
    let stats = generated.generation.stats.clone();
    // Ranks other than 0 of a multi-rank run sample alongside rank 0 and write nothing.
    let written = if models.writes_output() {
        write_job(plan, generated, &mut timed)?
    } else {
        WrittenVideo {
            frames: 0,
            width: 0,
            height: 0,
        }
    };
    Ok(JobReport {
        written,
        stats,
        timings: timed.timings,
        seconds: started.elapsed().as_secs_f64(),
        gpu_arena: models.arena_stats(),
    })
}
