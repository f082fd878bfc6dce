//! What the queue asks of the code that runs jobs: resolve a request without loading anything, and
//! run one resolved job. The queue's life cycle is written against this trait, so it is tested with
//! a test double; [`crate::runtime_executor`] is the real one.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::reference::Inputs;

/// A request refused before it is queued: the JSON field at fault (if one is) and the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The request field at fault, as named in the JSON body.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a job did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The job saw its cancellation flag and stopped.
    #[error("cancelled")]
    Cancelled,
    /// The job failed; the message is shown to the client.
    #[error("{0}")]
    Failed(String),
}

/// A request resolved into a job, with the normalised request echoed back to clients.
pub struct Prepared<J> {
    /// What the executor runs.
    pub job: J,
    /// The request with every default filled in (shown in the job object).
    pub request: serde_json::Value,
}

/// GPU memory of the device the executor runs on, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// The GPU index.
    pub device: i32,
    /// Bytes this process holds on the GPU (ONNX Runtime's arena included), when known.
    pub process_bytes: Option<u64>,
    /// Bytes in use on the GPU by all processes.
    pub used_bytes: u64,
    /// The GPU's memory.
    pub total_bytes: u64,
}

/// Runs jobs: the models are loaded once when the executor is built, then reused by every job.
pub trait Executor: Send + Sync + 'static {
    /// A resolved, validated job.
    type Job: Send + Sync + 'static;

    /// Checks a request body (a JSON object) and resolves it, with `inputs` (the job's uploaded
    /// first frame, last frame and video to extend, files the queue owns); loads and runs
    /// nothing, so it is called on the HTTP side while another job runs.
    fn prepare(
        &self,
        body: serde_json::Value,
        inputs: &Inputs,
    ) -> Result<Prepared<Self::Job>, RequestError>;

    /// Runs `job` and writes its MP4 to `output` (through a temporary file and a rename), reporting
    /// to `control` and stopping at the next step once `control.is_cancelled()`.
    fn run(&self, job: &Self::Job, output: &Path, control: &JobControl) -> Result<(), JobError>;

    /// GPU memory figures, when the executor runs on a GPU.
    fn gpu_memory(&self) -> Option<GpuMemory> {
        None
    }
}

/// The running job's side of the queue: progress and stage reports, and the cancellation flag.
#[derive(Default)]
pub struct JobControl {
    cancelled: AtomicBool,
    progress: Mutex<Progress>,
}

/// A job's progress as last reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Percent done, 0 to 100.
    pub percent: f64,
    /// The stage running now.
    pub stage: Option<&'static str>,
    /// Seconds spent in each finished stage, in the order they ran (a stage may run repeatedly).
    pub stage_seconds: Vec<(&'static str, f64)>,
    stage_started: Option<Instant>,
}

impl JobControl {
    /// Asks the job to stop at its next step.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The job entered `stage` (e.g. `text_encoder`, `denoise`, `vae_decode`, `write`); the
    /// previous stage's time is recorded.
    pub fn enter_stage(&self, stage: &'static str) {
        let mut progress = self.lock();
        progress.close_stage();
        progress.stage = Some(stage);
        progress.stage_started = Some(Instant::now());
    }

    /// The job is `percent` done (clamped to 0–100).
    pub fn set_percent(&self, percent: f64) {
        self.lock().percent = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
    }

    /// Ends the running stage's timing (when the job ends).
    pub fn finish(&self) {
        self.lock().close_stage();
    }

    /// A copy of the progress as last reported.
    pub fn progress(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress {
    /// Seconds per stage, a stage that ran several times added up.
    pub fn seconds_by_stage(&self) -> std::collections::BTreeMap<&'static str, f64> {
        let mut totals = std::collections::BTreeMap::new();
        for &(stage, seconds) in &self.stage_seconds {
            *totals.entry(stage).or_insert(0.0) += seconds;
        }
        totals
    }

    fn close_stage(&mut self) {
        if let (Some(stage), Some(started)) = (self.stage.take(), self.stage_started.take()) {
            self.stage_seconds
                .push((stage, started.elapsed().as_secs_f64()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_timed_in_order_and_progress_is_clamped() {
        let control = JobControl::default();
        control.enter_stage("text_encoder");
        control.enter_stage("denoise");
        control.set_percent(75.0);
        assert_eq!(control.progress().percent, 75.0);
        control.set_percent(225.0);
        assert_eq!(control.progress().percent, 100.0);
        control.finish();
        let progress = control.progress();
        let names: Vec<_> = progress.stage_seconds.iter().map(|(s, _)| *s).collect();
        assert_eq!(names, ["text_encoder", "denoise"]);
        assert_eq!(progress.stage, None);
        assert!(!control.is_cancelled());
        control.cancel();
        assert!(control.is_cancelled());
    }
}
