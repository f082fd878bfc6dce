//! The real executor: the runtime library's job API (`GenerateRequest` → `JobPlan` → `run_job`),
//! with the engine's models loaded once at start-up and kept for every job.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};
use skyreels_contract::ModelType;
use skyreels_contract::Pipeline;
use skyreels_contract::manifest::Component;
use skyreels_runtime::RuntimeError;
use skyreels_runtime::dit::placement::{DitMemoryPlan, WeightPlacement};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::job::json::{parse_request, plan_error, with_field_names};
use skyreels_runtime::job::plan::check_runnable;
use skyreels_runtime::job::variant::choose_variant;
use skyreels_runtime::job::{GenerateRequest, JobPlan, Models, OutputRequest, Residency, run_job};
use skyreels_runtime::pipeline::progress::{Observer, Progress, Unobserved};
use skyreels_runtime::session::Backend;
use skyreels_runtime::text_placement::TextMemoryPlan;

use crate::executor::{Executor, GpuMemory, JobControl, JobError, Prepared, RequestError};
use crate::reference::{Inputs, Reference};

/// Request fields that name files: a client must not make the server read its files (pictures
/// and videos are uploaded instead, as [`Reference`] file parts).
const FILE_FIELDS: [&str; 4] = ["image", "last_image", "video", "noise"];

/// Where the server puts the DiT's layer weights unless a request sets `offload` or
/// `max_gpu_memory` itself (`--offload`, `--max-gpu-memory`): the placement the warm-up loads, so
/// that jobs keep the loaded DiT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightDefaults {
    /// Stream the layer weights from host memory.
    pub offload: bool,
    /// Device memory the DiT's weights may take (`24GiB`).
    pub max_gpu_memory: Option<String>,
}

impl WeightDefaults {
    /// `request` with the server's settings where it sets none.
    fn apply(&self, mut request: GenerateRequest) -> GenerateRequest {
        if request.offload.is_none() && self.offload {
            request.offload = Some(true);
        }
        if request.max_gpu_memory.is_none() {
            request.max_gpu_memory.clone_from(&self.max_gpu_memory);
        }
        request
    }
}

/// Runs jobs on one engine and backend with models kept loaded.
pub struct RuntimeExecutor {
    models: Mutex<Models>,
    weights: WeightDefaults,
    /// A second handle on the engine (its manifest), to plan requests while a job runs.
    planning: Engine,
    backend: Backend,
    model_name: String,
    /// Text-to-video (DF or T2V) or image-to-video.
    model_type: ModelType,
}

/// A checked request, planned again with its output path when it runs.
pub struct RuntimeJob {
    request: GenerateRequest,
    /// Its uploads, to word its errors as [`upload_wording`] does.
    inputs: Inputs,
}

impl RuntimeExecutor {
    /// Opens the engine and loads every model a default request needs (text encoder, DiT, VAE
    /// decoder), so that no job pays for loading.
    pub fn load(engine_dir: &Path, backend: &Backend) -> Result<RuntimeExecutor, RuntimeError> {
        RuntimeExecutor::load_with(engine_dir, backend, WeightDefaults::default())
    }

    /// [`RuntimeExecutor::load`] with the DiT's weights placed as `weights` says, for the warm-up
    /// and for every request that does not say otherwise.
    pub fn load_with(
        engine_dir: &Path,
        backend: &Backend,
        weights: WeightDefaults,
    ) -> Result<RuntimeExecutor, RuntimeError> {
        let planning = Engine::open(engine_dir)?;
        let model_type = planning
            .manifest
            .dit
            .as_ref()
            .map(|dit| dit.config.model_type);
        if model_type == Some(ModelType::I2v) {
            return RuntimeExecutor::load_image_to_video(planning, backend, weights);
        }
        let warm_up = weights.apply(GenerateRequest {
            prompt: "warm-up".into(),
            ..GenerateRequest::default()
        });
        let plan = JobPlan::new(
            &planning,
            backend,
            &warm_up,
            &OutputRequest {
                out: "warm-up.mp4".into(),
                ..OutputRequest::default()
            },
        )?;
        let mut models = Models::open(engine_dir, backend.clone(), Residency::KeepLoaded)?;
        models.load_for(&plan, &mut Unobserved)?;
        let model_name = plan
            .variant
            .name
            .clone()
            .unwrap_or_else(|| directory_name(engine_dir));
        Ok(RuntimeExecutor {
            models: Mutex::new(models),
            weights,
            planning,
            backend: backend.clone(),
            model_name,
            model_type: ModelType::T2v,
        })
    }

    /// Loads an image-to-video engine's models (text and image encoders, DiT, VAE encoder and
    /// decoder) without a warm-up plan, which would need a first frame.
    fn load_image_to_video(
        planning: Engine,
        backend: &Backend,
        weights: WeightDefaults,
    ) -> Result<RuntimeExecutor, RuntimeError> {
        let config = planning
            .manifest
            .dit
            .as_ref()
            .map(|dit| dit.config.clone())
            .ok_or_else(|| planning.missing(Component::Dit))?;
        if planning.manifest.image_encoder.is_none() {
            return Err(planning.missing(Component::ImageEncoder));
        }
        check_runnable(&planning, backend)?;
        let dit_memory = DitMemoryPlan::for_engine(
            &planning,
            weights.offload,
            weights.max_gpu_memory.as_deref(),
        )?;
        let placement = dit_memory.placement;
        let text_placement =
            TextMemoryPlan::for_engine(&planning, weights.offload, dit_memory.max_gpu_memory)?
                .map_or(WeightPlacement::Resident, |m| m.placement);
        let mut models = Models::open(&planning.dir, backend.clone(), Residency::KeepLoaded)?;
        let observer = &mut Unobserved;
        models.text_encoder_placed(text_placement, observer)?;
        models.dit(None, placement, observer)?;
        models.vae_decoder(observer)?;
        models.vae_encoder(observer)?;
        models.image_encoder(observer)?;
        let model_name = choose_variant(&config, None, None, Pipeline::Synchronous)
            .ok()
            .and_then(|variant| variant.name)
            .unwrap_or_else(|| directory_name(&planning.dir));
        Ok(RuntimeExecutor {
            models: Mutex::new(models),
            weights,
            planning,
            backend: backend.clone(),
            model_name,
            model_type: ModelType::I2v,
        })
    }

    /// The served model's name: the released variant (`df-1.3b-540p`), else the engine directory's.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
}

/// A plan's message about uploads in the server's words: each upload's path (which is the
/// server's business) and the flag that took it become the file part's name, so
/// `--video /srv/videos/video_….video.mp4 has no frames` reads `` `video_reference` has no
/// frames``, and `--last-image and --video need …` reads `last_frame_reference and
/// video_reference need …`; the flag named first still tells [`plan_error`] the field.
fn upload_wording(message: &str, inputs: &Inputs) -> String {
    let mut message = message.to_string();
    for (reference, path) in inputs.iter() {
        let shown = path.display().to_string();
        message = message
            .replace(&format!("{} {shown}", reference.flag()), reference.flag())
            .replace(&shown, &format!("`{}`", reference.field()));
    }
    for reference in Reference::ALL {
        message = replace_flag(&message, reference.flag(), reference.field());
    }
    message
}

/// `message` with the flag `flag` (and not a longer flag it begins, as `--image` begins
/// `--image-size`) written as `name`, keeping a leading `--` so that the field is still found.
fn replace_flag(message: &str, flag: &str, name: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(flag) {
        let after = &rest[start + flag.len()..];
        let whole =
            !after.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        out.push_str(&rest[..start]);
        if whole {
            out.push_str("--");
            out.push_str(&name.replace('_', "-"));
        } else {
            out.push_str(flag);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn directory_name(engine_dir: &Path) -> String {
    engine_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "skyreels".into())
}

/// Passes stages and steps to the queue's [`JobControl`] and stops the job once it is cancelled.
struct ControlObserver<'a> {
    control: &'a JobControl,
}

impl Observer for ControlObserver<'_> {
    fn report(&mut self, progress: &Progress) -> ControlFlow<()> {
        match progress {
            Progress::StageStarted { stage, .. } => self.control.enter_stage(stage.name()),
            Progress::StageFinished { .. } => self.control.finish(),
            Progress::Step { percent, .. } => self.control.set_percent(*percent),
            _ => {}
        }
        if self.control.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Executor for RuntimeExecutor {
    type Job = RuntimeJob;

    fn prepare(&self, body: Value, inputs: &Inputs) -> Result<Prepared<RuntimeJob>, RequestError> {
        let Value::Object(body) = body else {
            return Err(RequestError {
                field: None,
                message: "the request must be a JSON object".into(),
            });
        };
        if let Some(field) = FILE_FIELDS.iter().find(|f| body.contains_key(**f)) {
            let fix = match Reference::ALL
                .into_iter()
                .find(|reference| reference.request_field() == *field)
            {
                Some(reference) => format!(
                    "drop `{field}`; upload {} as the file part `{}` of a multipart/form-data request",
                    reference.what(),
                    reference.field()
                ),
                None => {
                    format!("drop `{field}`; run such jobs with skyreels generate or a batch file")
                }
            };
            return Err(RequestError {
                field: Some(field.to_string()),
                message: format!(
                    "`{field}` names a file, and the server reads no files named by clients\n  fix: {fix}"
                ),
            });
        }
        if self.model_type == ModelType::I2v && inputs.get(Reference::FirstFrame).is_none() {
            return Err(RequestError {
                field: Some("input_reference".into()),
                message: "this server's engine holds an image-to-video model, which needs a first frame\n  fix: send the request as multipart/form-data with the picture (PNG or JPEG) as the file part `input_reference`".into(),
            });
        }
        let body = Value::Object(body);
        let mut request = parse_request(&body).map_err(|error| RequestError {
            field: error.field,
            message: error.message,
        })?;
        request.image = inputs.get(Reference::FirstFrame).map(Path::to_path_buf);
        request.last_image = inputs.get(Reference::LastFrame).map(Path::to_path_buf);
        request.video = inputs.get(Reference::Video).map(Path::to_path_buf);
        let request = self.weights.apply(request);
        let plan = JobPlan::new(
            &self.planning,
            &self.backend,
            &request,
            &OutputRequest {
                out: "video.mp4".into(),
                ..OutputRequest::default()
            },
        )
        .map_err(|error| {
            let message = error.to_string();
            // A file that does not decode is named by its path, not by a flag.
            let named_by_path = inputs
                .iter()
                .find(|(_, path)| message.contains(&path.display().to_string()))
                .map(|(reference, _)| reference.field().to_string());
            let error = plan_error(&request, &upload_wording(&message, inputs));
            RequestError {
                field: error.field.or(named_by_path),
                message: error.message,
            }
        })?;
        let s = &plan.settings;
        let echo = json!({
            "prompt": s.prompt,
            "size": format!("{}x{}", s.width, s.height),
            "seconds": format!("{:.2}", s.num_frames as f64 / s.fps as f64),
            "num_frames": s.num_frames,
            "fps": s.fps,
            "seed": s.seed,
            "steps": s.steps,
            "guidance": s.guidance,
            "shift": s.shift,
            "pipeline": s.pipeline,
            "compat": s.compat,
            "ar_step": s.ar_step,
            "causal_block_size": s.causal_block_size,
            "windows": plan.windows.len(),
            "teacache": s.teacache.as_ref().map(|t| t.threshold),
            "variant": plan.variant.name,
            "dit_weights": plan.dit_memory.placement,
        });
        Ok(Prepared {
            job: RuntimeJob {
                request,
                inputs: inputs.clone(),
            },
            request: echo,
        })
    }

    fn run(&self, job: &RuntimeJob, output: &Path, control: &JobControl) -> Result<(), JobError> {
        let plan = JobPlan::new(
            &self.planning,
            &self.backend,
            &job.request,
            &OutputRequest {
                out: output.to_path_buf(),
                ..OutputRequest::default()
            },
        )
        .map_err(|error| {
            JobError::Failed(with_field_names(&upload_wording(
                &error.to_string(),
                &job.inputs,
            )))
        })?;
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let result = run_job(&plan, &mut models, &mut ControlObserver { control });
        if result.is_err()
            && let Some(work_dir) = &plan.output.work_dir
            && work_dir.is_dir()
        {
            let _ = fs_err::remove_dir_all(work_dir);
        }
        match result {
            Ok(_) => Ok(()),
            Err(RuntimeError::Cancelled) => Err(JobError::Cancelled),
            Err(error) => Err(JobError::Failed(with_field_names(&upload_wording(
                &error.to_string(),
                &job.inputs,
            )))),
        }
    }

    fn gpu_memory(&self) -> Option<GpuMemory> {
        crate::gpu::gpu_memory(self.backend.device()?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn plan_messages_name_the_uploads_parts_and_not_the_servers_paths() {
        let mut inputs = Inputs::default();
        let video = PathBuf::from("/srv/videos/video_0123456789abcdef01234567.video.mp4");
        inputs.set(Reference::Video, video.clone());
        assert_eq!(
            upload_wording(
                &format!(
                    "--video {} has no frames\n  fix: give a video with at least --overlap-history frames",
                    video.display()
                ),
                &inputs
            ),
            "--video-reference has no frames\n  fix: give a video with at least --overlap-history frames"
        );
        assert_eq!(
            upload_wording(
                &format!("cannot read {} as an H.264 MP4: cut", video.display()),
                &inputs
            ),
            "cannot read `video_reference` as an H.264 MP4: cut"
        );
        assert_eq!(
            upload_wording(
                "--image/--last-image need --causal-block-size 1; --image-size and --videos stay",
                &inputs
            ),
            "--input-reference/--last-frame-reference need --causal-block-size 1; --image-size and --videos stay"
        );
    }
}
