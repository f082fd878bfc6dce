//! The real executor: the runtime library's job API (`GenerateRequest` → `JobPlan` → `run_job`),
//! with the engine's models loaded once at start-up and kept for every job.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};
use skyreels_contract::ModelType;
use skyreels_runtime::RuntimeError;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::job::summary::field_of;
use skyreels_runtime::job::{GenerateRequest, JobPlan, Models, OutputRequest, Residency, run_job};
use skyreels_runtime::pipeline::progress::{Observer, Progress, Unobserved};
use skyreels_runtime::session::Backend;

use crate::executor::{Executor, GpuMemory, JobControl, JobError, Prepared, RequestError};

/// Request fields that name files: a client must not make the server read its files.
const FILE_FIELDS: [&str; 4] = ["image", "last_image", "video", "noise"];

/// Runs jobs on one engine and backend with models kept loaded.
pub struct RuntimeExecutor {
    models: Mutex<Models>,
    /// A second handle on the engine (its manifest), to plan requests while a job runs.
    planning: Engine,
    backend: Backend,
    model_name: String,
}

/// A checked request, planned again with its output path when it runs.
pub struct RuntimeJob {
    request: GenerateRequest,
}

/// Rewrites the CLI's `--flag-name` in a plan's message as the request's `flag_name`.
fn with_field_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("--") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        if name_len == 0 {
            out.push_str("--");
        } else {
            out.push_str(&after[..name_len].replace('-', "_"));
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// The field a body fails to deserialize on: the first whose value alone does not fit.
fn failing_field(body: &serde_json::Map<String, Value>, message: &str) -> Option<String> {
    if let Some(name) = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_string())
    {
        return Some(name);
    }
    if message.contains("missing field `prompt`") {
        return Some("prompt".into());
    }
    body.iter()
        .find(|(key, value)| {
            let mut alone = serde_json::Map::new();
            alone.insert("prompt".into(), json!("p"));
            alone.insert((*key).clone(), (*value).clone());
            serde_json::from_value::<GenerateRequest>(Value::Object(alone)).is_err()
        })
        .map(|(key, _)| key.clone())
}

impl RuntimeExecutor {
    /// Opens the engine and loads every model a default request needs (text encoder, DiT, VAE
    /// decoder), so that no job pays for loading.
    pub fn load(engine_dir: &Path, backend: &Backend) -> Result<RuntimeExecutor, RuntimeError> {
        let planning = Engine::open(engine_dir)?;
        if planning
            .manifest
            .dit
            .as_ref()
            .is_some_and(|dit| dit.config.model_type == ModelType::I2v)
        {
            return Err(planning.error(
                "holds an image-to-video model, which needs an input image; the server takes no files from clients\n  fix: serve a text-to-video (DF or T2V) engine, or run image-to-video jobs with skyreels generate --image",
            ));
        }
        let warm_up = GenerateRequest {
            prompt: "warm-up".into(),
            ..GenerateRequest::default()
        };
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
        let model_name = plan.variant.name.clone().unwrap_or_else(|| {
            engine_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "skyreels".into())
        });
        Ok(RuntimeExecutor {
            models: Mutex::new(models),
            planning,
            backend: backend.clone(),
            model_name,
        })
    }

    /// The served model's name: the released variant (`df-1.3b-540p`), else the engine directory's.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
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

    fn prepare(&self, body: Value) -> Result<Prepared<RuntimeJob>, RequestError> {
        let Value::Object(body) = body else {
            return Err(RequestError {
                field: None,
                message: "the request must be a JSON object".into(),
            });
        };
        if let Some(field) = FILE_FIELDS.iter().find(|f| body.contains_key(**f)) {
            return Err(RequestError {
                field: Some(field.to_string()),
                message: format!(
                    "`{field}` names a file, and the server reads no files named by clients\n  fix: drop `{field}`; run conditioned jobs with skyreels generate or a batch file"
                ),
            });
        }
        let request: GenerateRequest = serde_json::from_value(Value::Object(body.clone()))
            .map_err(|error| {
                let message = error.to_string();
                let field = failing_field(&body, &message);
                let fix = match &field {
                    Some(field) if message.contains("unknown field") => {
                        format!("drop `{field}` (the fields are those of skyreels generate, with _ for -)")
                    }
                    Some(field) => format!("give `{field}` a value of its type (see README, Serving)"),
                    None => "send the fields of skyreels generate, with _ for -".into(),
                };
                RequestError {
                    field,
                    message: format!("{message}\n  fix: {fix}"),
                }
            })?;
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
            let field = field_of(&message).map(|field| match field.as_str() {
                "width" | "height" if request.size.is_some() => "size".to_string(),
                _ => field,
            });
            RequestError {
                field,
                message: with_field_names(&message),
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
        });
        Ok(Prepared {
            job: RuntimeJob { request },
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
        .map_err(|error| JobError::Failed(with_field_names(&error.to_string())))?;
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
            Err(error) => Err(JobError::Failed(with_field_names(&error.to_string()))),
        }
    }

    fn gpu_memory(&self) -> Option<GpuMemory> {
        crate::gpu::gpu_memory(self.backend.device()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_field_names() {
        assert_eq!(
            with_field_names("--num-frames 16 is not 4k+1\n  fix: use 13 or 17 -- or --steps"),
            "num_frames 16 is not 4k+1\n  fix: use 13 or 17 -- or steps"
        );
    }

    #[test]
    fn the_failing_field_is_found_by_its_value() {
        let body = json!({"prompt": "fox", "steps": 3, "seed": "seven"});
        let Value::Object(body) = body else {
            unreachable!()
        };
        assert_eq!(
            failing_field(&body, "invalid type: string \"seven\", expected u64").as_deref(),
            Some("seed")
        );
        assert_eq!(
            failing_field(&body, "unknown field `colour`, expected one of …").as_deref(),
            Some("colour")
        );
    }
}
