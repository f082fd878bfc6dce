//! Batch files: one request per line (a JSON object with the server's fields), run in order with
//! the models loaded once. Each line gives one output (`DIR/NNNN.mp4`, its line number) and one
//! JSON result; a line that fails is reported and skipped.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::json::{FieldError, parse_request, plan_error};
use super::models::Models;
use super::plan::JobPlan;
use super::request::{GenerateRequest, OutputRequest};
use super::run::run_job;
use super::summary::{field_of, summary_json};
use crate::error::Result;
use crate::pipeline::progress::Observer;

/// How a batch went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Requests that wrote their video.
    pub completed: usize,
    /// Line numbers (from 1) of the requests that failed.
    pub failed: Vec<usize>,
}

/// The output of the request on line `number`: `DIR/0001.mp4`.
pub fn line_output(out_dir: &Path, number: usize) -> PathBuf {
    out_dir.join(format!("{number:04}.mp4"))
}

/// Makes the request's relative file paths relative to `base` (the batch file's directory).
fn resolve_paths(request: &mut GenerateRequest, base: &Path) {
    for path in [
        &mut request.image,
        &mut request.last_image,
        &mut request.video,
        &mut request.noise,
    ]
    .into_iter()
    .flatten()
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
}

fn run_line(
    line: &str,
    base: &Path,
    out: &Path,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> std::result::Result<Value, FieldError> {
    let body: Value = serde_json::from_str(line).map_err(|error| FieldError {
        field: None,
        message: format!(
            "the line is not JSON: {error}\n  fix: one JSON object per line, e.g. {{\"prompt\": \"a red fox running through fresh snow\"}}"
        ),
    })?;
    let mut request = parse_request(&body)?;
    resolve_paths(&mut request, base);
    let output = OutputRequest {
        out: out.to_path_buf(),
        ..OutputRequest::default()
    };
    let plan = JobPlan::new(models.engine(), models.backend(), &request, &output)
        .map_err(|error| plan_error(&request, &error.to_string()))?;
    let report = run_job(&plan, models, observer).map_err(|error| {
        let message = error.to_string();
        FieldError {
            field: field_of(&message),
            message,
        }
    })?;
    Ok(summary_json(&plan, &report))
}

/// Runs every request of the JSON-lines file `requests` (blank lines skipped) into `out_dir`
/// (created if missing), calling `on_result` with each line's result: the job's summary with
/// `"line"` and `"status": "completed"`, or `{"line", "status": "failed", "error": {"message",
/// "field"}}`. Relative file paths in a request are relative to the batch file's directory.
pub fn run_batch(
    requests: &Path,
    out_dir: &Path,
    models: &mut Models,
    observer: &mut dyn Observer,
    on_result: &mut dyn FnMut(&Value),
) -> Result<BatchOutcome> {
    let text = fs_err::read_to_string(requests)?;
    fs_err::create_dir_all(out_dir)?;
    let base = requests
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut outcome = BatchOutcome::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let out = line_output(out_dir, number);
        let result = match run_line(line, base, &out, models, observer) {
            Ok(mut summary) => {
                outcome.completed += 1;
                summary["line"] = json!(number);
                summary["status"] = json!("completed");
                summary
            }
            Err(error) => {
                outcome.failed.push(number);
                tracing::warn!("{}, line {number}: {}", requests.display(), error.message);
                json!({
                    "line": number,
                    "status": "failed",
                    "error": {"message": error.message, "field": error.field},
                })
            }
        };
        on_result(&result);
    }
    Ok(outcome)
}
