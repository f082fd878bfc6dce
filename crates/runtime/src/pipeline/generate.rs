//! Whole generations: the windows of a (possibly long) video sampled in turn, each later window
//! conditioned on the end of the previous one, then decoded (SPEC.md §3.2–3.3).
//!
//! Long videos follow the chosen reference: upstream decodes every window and re-encodes the last
//! `overlap_history` pixel frames as the next prefix; diffusers reuses the last overlap latents and
//! decodes everything once at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::denoiser::Denoiser;
use super::plan::{Compat, Plan, Start};
use super::progress::{Observer, Progress, Stage, in_stage, report};
use super::sampler::{
    Rows, WindowSettings, WindowStats, frames, replay_window_draws, sample_window,
};
use super::schedule::FlowSchedule;
use super::segments::{Segment, latent_frames};
use crate::error::{Result, RuntimeError};
use crate::noise::NoiseSource;
use crate::tensor::Tensor;
use crate::vae::{VaeDecoder, VaeEncoder};
use crate::vae_tiling::{VaeTiling, decode_tiled};
use skyreels_contract::owned_dir::{OwnedDir, OwnedDirError};

/// Where a long job keeps each finished window's latents, so a killed job resumes where it was.
/// Window files are written to a temporary name and renamed, so a kill at any point leaves either
/// a complete window or none. The directory is an owned directory (`skyreels_contract::owned_dir`):
/// a folder with other files is refused, a second job on it gets "in use by pid N", and only the
/// files the job wrote are deleted at the end.
pub struct WorkDir {
    dir: PathBuf,
    owned: Option<OwnedDir>,
}

const JOB_FILE: &str = "job.json";
/// The purpose recorded in a work directory's marker.
const WORK_DIRECTORY: &str = "work directory";

impl WorkDir {
    /// Opens (or creates) `dir` for the job identified by `fingerprint` (every argument and the
    /// engine that decide the result); refuses a directory that belongs to another job, one that
    /// another process is using, and one holding files this tool did not write.
    pub fn open(dir: &Path, fingerprint: &str) -> Result<WorkDir> {
        let owned = OwnedDir::open_or_create(dir, WORK_DIRECTORY)?;
        let job = dir.join(JOB_FILE);
        if job.is_file() {
            let recorded = skyreels_contract::files::read_bounded_to_string(
                &job,
                "work directory job record",
                skyreels_contract::files::limit::JOB_RECORD,
            )?;
            if recorded != fingerprint {
                return Err(RuntimeError::Invalid(format!(
                    "work directory {} belongs to another job (different arguments or engine)\n  fix: delete it, or pass another --work-dir",
                    dir.display()
                )));
            }
        } else {
            let partial = dir.join(format!("{JOB_FILE}.partial"));
            fs_err::write(&partial, fingerprint)?;
            fs_err::rename(&partial, &job)?;
        }
        Ok(WorkDir {
            dir: dir.to_path_buf(),
            owned: Some(owned),
        })
    }

    /// Cleans up the work directory `dir` of a job that will not resume (failed, cancelled,
    /// deleted, or completed before it cleaned up) as [`WorkDir::finish`] does: only the files a
    /// job writes there go, then the directory if nothing else is in it. A directory another
    /// process holds, or one with files but no work directory's marker, is left alone. Returns
    /// whether it was taken over and cleaned.
    pub fn remove_abandoned(dir: &Path) -> Result<bool> {
        if !dir.is_dir() {
            return Ok(false);
        }
        let owned = match OwnedDir::open_or_create(dir, WORK_DIRECTORY) {
            Ok(owned) => owned,
            Err(OwnedDirError::InUse { .. } | OwnedDirError::NotOwned { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        WorkDir {
            dir: dir.to_path_buf(),
            owned: Some(owned),
        }
        .finish()?;
        Ok(true)
    }

    fn window_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("window-{index:04}.safetensors"))
    }

    fn load(&self, index: usize, shape: &[usize]) -> Result<Option<Tensor>> {
        let path = self.window_path(index);
        if !path.is_file() {
            return Ok(None);
        }
        let expected: Vec<Option<usize>> = shape.iter().map(|&d| Some(d)).collect();
        Ok(Some(crate::output::read_tensor(
            &path, "latents", &expected,
        )?))
    }

    /// The windows of `plan` an earlier run of the job finished, by index (what rank 0 shares
    /// with the other ranks of a multi-rank run, which keep no work directory).
    pub fn saved_windows(&self, plan: &Plan) -> Result<Vec<(usize, Tensor)>> {
        let (height, width) = plan.latent_size;
        let mut saved = Vec::new();
        for segment in &plan.segments {
            let shape = [1, 16, segment.latent_frames, height, width];
            if let Some(window) = self.load(segment.index, &shape)? {
                saved.push((segment.index, window));
            }
        }
        Ok(saved)
    }

    fn save(&self, index: usize, latents: &Tensor) -> Result<()> {
        crate::output::save_latents(&self.window_path(index), [("latents", latents)])?;
        Ok(())
    }

    /// Once the job's output is written, removes the files the job wrote (its record and window
    /// latents), then the directory if nothing else is in it (the output may be).
    pub fn finish(mut self) -> Result<()> {
        self.remove_own_files(true)
    }

    /// Removes the job record, and the window files when `windows` is set, then the directory if
    /// nothing else is in it.
    fn remove_own_files(&mut self, windows: bool) -> Result<()> {
        let Some(owned) = self.owned.take() else {
            return Ok(());
        };
        for entry in fs_err::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let window = (name.starts_with("window-") && name.ends_with(".safetensors"))
                || (name.starts_with(".window-") && name.ends_with(".partial"));
            if (name == JOB_FILE || (windows && window)) && path.is_file() {
                fs_err::remove_file(&path)?;
            }
        }
        owned.remove_if_empty()?;
        Ok(())
    }

    fn has_windows(&self) -> bool {
        fs_err::read_dir(&self.dir).is_ok_and(|mut entries| {
            entries.any(|entry| {
                entry.is_ok_and(|entry| {
                    entry.file_name().to_str().is_some_and(|name| {
                        name.starts_with("window-") && name.ends_with(".safetensors")
                    })
                })
            })
        })
    }
}

impl Drop for WorkDir {
    /// A job that ends in an error before saving any window leaves nothing to resume: its record
    /// and marker go (and the directory, when empty). Saved windows stay for the next run.
    fn drop(&mut self) {
        if self.owned.is_some() && !self.has_windows() {
            let _ = self.remove_own_files(false);
        }
    }
}

/// The VAE halves a generation may need.
pub struct Vae<'a> {
    /// Decoder (latents → video).
    pub decoder: &'a mut VaeDecoder,
    /// Encoder, needed for upstream-style long videos (re-encoding overlap pixels).
    pub encoder: Option<&'a mut VaeEncoder>,
    /// Decode in tiles ([`crate::vae_tiling`]) instead of whole frames.
    pub tiling: Option<VaeTiling>,
}

impl Vae<'_> {
    /// Decodes `latents` to video in `[-1, 1]`, tiled when asked.
    pub fn decode(&mut self, latents: &Tensor) -> Result<Tensor> {
        match &self.tiling {
            Some(tiling) => decode_tiled(self.decoder, latents, tiling),
            None => self.decoder.decode(latents),
        }
    }
}

/// Totals over all windows.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GenerationStats {
    /// Windows sampled.
    pub windows: usize,
    /// Sampling rows over all windows.
    pub rows: usize,
    /// DiT forward passes.
    pub forwards: usize,
    /// Passes whose transformer blocks ran.
    pub blocks_computed: usize,
    /// Passes whose transformer blocks TeaCache skipped.
    pub blocks_skipped: usize,
    /// Windows taken from the work directory instead of being sampled.
    pub windows_resumed: usize,
    /// Wall-clock seconds of each window in order, back to back: its prefix, its rows and (upstream
    /// mode) its VAE decode; diffusers mode decodes once after the last window, outside these.
    pub window_seconds: Vec<f64>,
}

impl GenerationStats {
    fn add(&mut self, window: WindowStats, rows: usize) {
        self.windows += 1;
        self.rows += rows;
        self.forwards += window.forwards;
        self.blocks_computed += window.blocks_computed;
        self.blocks_skipped += window.blocks_skipped;
    }
}

/// A finished generation.
pub struct Generation {
    /// Final latents of the whole video `[1, 16, F, H, W]` (windows joined without overlap).
    pub latents: Tensor,
    /// Decoded video `[1, 3, T, H, W]` in `[-1, 1]`, when a decoder was given.
    pub video: Option<Tensor>,
    /// What it cost.
    pub stats: GenerationStats,
}

fn concat_frames(a: &Tensor, b: &Tensor) -> Tensor {
    let (channels, plane) = (a.shape[1], a.shape[3] * a.shape[4]);
    let (fa, fb) = (a.shape[2], b.shape[2]);
    let mut data = Vec::with_capacity(a.len() + b.len());
    for c in 0..channels {
        data.extend_from_slice(&a.data[c * fa * plane..(c + 1) * fa * plane]);
        data.extend_from_slice(&b.data[c * fb * plane..(c + 1) * fb * plane]);
    }
    let mut shape = a.shape.clone();
    shape[2] = fa + fb;
    Tensor { shape, data }
}

/// Clean inputs that condition a generation besides the prompt (see `Request::start`).
#[derive(Default)]
pub struct Conditioning {
    /// Normalised latents `[1, 16, 1, h, w]` of a first image (`Start::Image`).
    pub first_image: Option<Tensor>,
    /// Normalised latents `[1, 16, 1, h, w]` of a last image, appended to the last window.
    pub last_image: Option<Tensor>,
    /// The video being extended `[1, 3, T, H, W]` in `[-1, 1]` (`Start::Video`): its last
    /// `overlap_history` frames are encoded as the first prefix, and it heads the output video.
    pub video: Option<Tensor>,
}

/// Everything one generation needs, by reference: the plan, the model, the schedule, the
/// conditioning, where noise comes from, the VAE, the work directory and who watches.
pub struct GenerationInputs<'a> {
    /// The validated windows and settings.
    pub plan: &'a Plan,
    /// The model with its text (and image) conditioning.
    pub denoiser: &'a mut dyn Denoiser,
    /// Timesteps and per-frame schedulers.
    pub schedule: &'a FlowSchedule,
    /// Guidance, prefix re-noising and TeaCache.
    pub settings: &'a WindowSettings,
    /// The noise stream (seeded, or recorded draws).
    pub noise: &'a mut NoiseSource,
    /// First/last image latents and the video being extended.
    pub conditioning: &'a Conditioning,
    /// The VAE halves; without them only latents come back.
    pub vae: Option<Vae<'a>>,
    /// Where finished windows are kept so a killed job resumes.
    pub work_dir: Option<&'a WorkDir>,
    /// Windows an earlier run finished, by index, as rank 0 of a multi-rank run shared them
    /// (taken before `work_dir`; empty on a single rank).
    pub resumed: HashMap<usize, Tensor>,
    /// Told of every window, step and decode; may cancel the job.
    pub observer: &'a mut dyn Observer,
    /// Once the last window is sampled, drop what only sampling needs before the final decode
    /// (a one-job process): the denoiser's layer weights. (Every decode gives the arena's free
    /// blocks back after its first run, [`crate::session::GraphSession::shrink_arena_after_next_run`].)
    pub release_after_sampling: bool,
}

/// Runs every window of the plan (latents have 16 channels), reporting progress to the observer.
pub fn generate(inputs: GenerationInputs<'_>) -> Result<Generation> {
    let GenerationInputs {
        plan,
        denoiser,
        schedule,
        settings,
        noise,
        conditioning,
        mut vae,
        work_dir,
        mut resumed,
        observer,
        release_after_sampling,
    } = inputs;
    let request = &plan.request;
    let (height, width) = plan.latent_size;
    let overlap_latents = request.overlap_history.map(latent_frames).unwrap_or(0);
    let overlap_pixels = request.overlap_history.unwrap_or(0);
    let extension = conditioning.video.is_some();
    let mut stats = GenerationStats::default();
    let mut joined: Option<Tensor> = None;
    // Upstream mode: the decoded video so far (an extended video starts as the input).
    let mut video: Option<Tensor> = conditioning.video.clone();
    let windows = plan.segments.len();
    let mut steps_per_window = Vec::with_capacity(windows);
    for segment in &plan.segments {
        let rows = window_rows(
            schedule,
            segment,
            request.ar_step,
            request.causal_block_size,
        )?;
        steps_per_window.push(rows.timesteps.len());
    }
    let total_steps: usize = steps_per_window.iter().sum();
    let mut steps_done = 0;
    for segment in &plan.segments {
        let window_started = Instant::now();
        let shape = [1, 16, segment.latent_frames, height, width];
        let mut latents = noise.draw(&shape)?;
        let saved = match resumed.remove(&segment.index) {
            Some(window) if window.shape != shape => {
                return Err(RuntimeError::Invalid(format!(
                    "window {} shared by rank 0 has shape {:?}, not {shape:?}",
                    segment.index + 1,
                    window.shape
                )));
            }
            Some(window) => Some(window),
            None => work_dir
                .map(|w| w.load(segment.index, &shape))
                .transpose()?
                .flatten(),
        };
        if let Some(saved) = saved {
            let rows = window_rows(
                schedule,
                segment,
                request.ar_step,
                request.causal_block_size,
            )?;
            replay_window_draws(&rows, segment.prefix_frames, settings, &shape, noise)?;
            stats.windows_resumed += 1;
            latents = saved;
            steps_done += steps_per_window[segment.index];
            report(
                observer,
                Progress::WindowResumed {
                    window: segment.index + 1,
                    windows,
                },
            )?;
        } else {
            let previous = Previous {
                joined: joined.as_ref(),
                video: video.as_ref(),
            };
            let prefix = segment_prefix(plan, conditioning, vae.as_mut(), segment, previous)?;
            let steps = steps_per_window[segment.index];
            report(
                observer,
                Progress::WindowStarted {
                    window: segment.index + 1,
                    windows,
                    frames: 4 * (segment.latent_frames - 1) + 1,
                    steps,
                },
            )?;
            let done_before = steps_done;
            let mut after_step = |step: usize| {
                report(
                    observer,
                    Progress::Step {
                        window: segment.index + 1,
                        windows,
                        step,
                        steps,
                        percent: 100.0 * (done_before + step) as f64 / total_steps as f64,
                    },
                )
            };
            let (window, rows) = sample_segment(
                plan,
                denoiser,
                schedule,
                settings,
                noise,
                segment,
                &mut latents,
                prefix.as_ref(),
                conditioning.last_image.as_ref(),
                &mut after_step,
            )?;
            latents.check_finite(
                &format!(
                    "window {} of {windows}: the latents the DiT sampled",
                    segment.index + 1
                ),
                &format!(
                    "the noise, prompt embeddings and conditioning were finite, so the DiT engine produced them: {}",
                    crate::tensor::BROKEN_ENGINE_FIX
                ),
            )?;
            steps_done += steps;
            stats.add(window, rows);
            if let Some(work_dir) = work_dir {
                work_dir.save(segment.index, &latents)?;
            }
        }
        if release_after_sampling && segment.index + 1 == windows {
            denoiser.release_after_sampling();
        }
        let new_latents = if segment.index == 0 {
            latents.clone()
        } else {
            frames(&latents, overlap_latents, latents.shape[2])
        };
        joined = Some(match joined {
            None => new_latents,
            Some(previous) => concat_frames(&previous, &new_latents),
        });
        if let (Compat::Upstream, Some(vae)) = (request.compat, vae.as_mut()) {
            let what = format!("window {}/{windows}", segment.index + 1);
            // Every window's decode starts by giving back what the DiT's activations left free,
            // so the decode does not grow the arena beside it (the DiT grows it again after).
            vae.decoder.shrink_arena_after_next_run();
            let decoded = in_stage(observer, Stage::Decoding, &what, |_| vae.decode(&latents))?;
            video = Some(match video {
                None => decoded,
                Some(previous) => concat_frames(
                    &previous,
                    &frames(&decoded, overlap_pixels, decoded.shape[2]),
                ),
            });
        }
        stats
            .window_seconds
            .push(window_started.elapsed().as_secs_f64());
    }
    let latents = joined.expect("a plan has at least one window");
    if let (Compat::Diffusers, Some(vae)) = (request.compat, vae.as_mut()) {
        // diffusers decodes every latent (an extension's first prefix included) after the input video.
        vae.decoder.shrink_arena_after_next_run();
        let decoded = in_stage(observer, Stage::Decoding, "video", |_| vae.decode(&latents))?;
        video = Some(match (&conditioning.video, extension) {
            (Some(input), true) => concat_frames(input, &decoded),
            _ => decoded,
        });
    }
    Ok(Generation {
        latents,
        video,
        stats,
    })
}

/// What earlier windows left: the joined latents and (upstream mode) the decoded video.
struct Previous<'a> {
    joined: Option<&'a Tensor>,
    video: Option<&'a Tensor>,
}

/// The timestep matrix of `segment`, an appended end frame held at t = 0 and never stepped.
fn window_rows(
    schedule: &FlowSchedule,
    segment: &Segment,
    ar_step: usize,
    causal_block_size: usize,
) -> Result<Rows> {
    let frames = segment.latent_frames + segment.end_frames;
    let mut rows = schedule.rows(frames, segment.prefix_frames, ar_step, causal_block_size)?;
    for (timesteps, update) in rows.timesteps.iter_mut().zip(&mut rows.update) {
        for f in segment.latent_frames..frames {
            timesteps[f] = 0.0;
            update[f] = false;
        }
    }
    Ok(rows)
}

/// The clean latents that open `segment`: a first image, the encoded tail of the video so far
/// (upstream long videos and every extension window in upstream mode; an extension's first window
/// in both modes), or the last overlap latents of the joined windows (diffusers long videos).
fn segment_prefix(
    plan: &Plan,
    conditioning: &Conditioning,
    vae: Option<&mut Vae<'_>>,
    segment: &Segment,
    previous: Previous<'_>,
) -> Result<Option<Tensor>> {
    let request = &plan.request;
    if segment.prefix_frames == 0 {
        return Ok(None);
    }
    if segment.index == 0 && request.start == Start::Image {
        let image = conditioning.first_image.as_ref().ok_or_else(|| {
            RuntimeError::Invalid(
                "the plan starts from an image, but no image latents were given".into(),
            )
        })?;
        return Ok(Some(image.clone()));
    }
    let reencode = segment.index == 0 || request.compat == Compat::Upstream;
    if reencode {
        let encoder = vae.and_then(|v| v.encoder.as_deref_mut()).ok_or_else(|| {
            RuntimeError::Invalid(
                "this generation re-encodes decoded frames, but no VAE encoder was loaded".into(),
            )
        })?;
        let decoded = previous.video.ok_or_else(|| {
            RuntimeError::Invalid("window prefix: no video to continue from".into())
        })?;
        let total = decoded.shape[2];
        let overlap = request.overlap_history.unwrap_or(0);
        return Ok(Some(encoder.encode(&frames(
            decoded,
            total - overlap,
            total,
        ))?));
    }
    let joined = previous.joined.expect("a window precedes this one");
    let overlap = request.overlap_history.map(latent_frames).unwrap_or(0);
    Ok(Some(frames(
        joined,
        joined.shape[2] - overlap,
        joined.shape[2],
    )))
}

/// Writes `prefix` and `end` into the window and samples it; `latents` holds the window's noise
/// on entry and its sampled frames (end frame dropped) on return. Returns its cost and row count.
#[expect(
    clippy::too_many_arguments,
    reason = "the loop's state, passed explicitly rather than bundled"
)]
fn sample_segment(
    plan: &Plan,
    denoiser: &mut dyn Denoiser,
    schedule: &FlowSchedule,
    settings: &WindowSettings,
    noise: &mut NoiseSource,
    segment: &Segment,
    latents: &mut Tensor,
    prefix: Option<&Tensor>,
    end: Option<&Tensor>,
    after_step: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<(WindowStats, usize)> {
    let request = &plan.request;
    if let Some(prefix) = prefix {
        for f in 0..segment.prefix_frames {
            super::sampler::set_frame(latents, f, &super::sampler::frame(prefix, f));
        }
    }
    let mut window = match (segment.end_frames, end) {
        (0, _) => latents.clone(),
        (_, Some(end)) => concat_frames(latents, end),
        (_, None) => {
            return Err(RuntimeError::Invalid(
                "the plan ends on a last image, but no image latents were given".into(),
            ));
        }
    };
    let rows = window_rows(
        schedule,
        segment,
        request.ar_step,
        request.causal_block_size,
    )?;
    let total = segment.latent_frames + segment.end_frames;
    let mut schedulers: Vec<_> = (0..total).map(|_| schedule.frame_scheduler()).collect();
    let stats = sample_window(
        denoiser,
        &mut window,
        segment.prefix_frames,
        &rows,
        &mut schedulers,
        settings,
        noise,
        after_step,
    )?;
    *latents = frames(&window, 0, segment.latent_frames);
    Ok((stats, rows.timesteps.len()))
}
