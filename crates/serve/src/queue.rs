//! The job queue: requests are resolved when submitted, wait in order, and run one at a time on a
//! blocking worker thread that owns the executor's loaded models. A job that fails or panics is
//! recorded as failed and the worker goes on; finished jobs and their videos are kept within a
//! count and an age, then deleted.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;

use crate::executor::{Executor, JobControl, JobError, RequestError};
use crate::metrics::{MetricsSnapshot, StageTotal};

/// Where a job is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the worker.
    Queued,
    /// Running now.
    InProgress,
    /// Finished; its video can be fetched.
    Completed,
    /// Stopped by an error (see the job's `error`).
    Failed,
    /// Cancelled by the client or by a shutdown.
    Cancelled,
}

impl Status {
    /// Every status, in life-cycle order.
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::InProgress,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The name used in JSON and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// How many finished jobs (with their videos) are kept, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished jobs kept; the oldest beyond this are deleted with their videos.
    pub max_jobs: usize,
    /// Finished jobs older than this are deleted with their videos.
    pub max_age: Duration,
}

/// The queue's settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The model name shown in job objects (the engine directory's name).
    pub model: String,
    /// Jobs that may wait besides the running one; more are refused.
    pub max_queue: usize,
    /// Directory of finished videos (created if missing; the queue deletes only its own files).
    pub videos: PathBuf,
    /// What is kept of finished jobs.
    pub retention: Retention,
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The request is invalid.
    #[error(transparent)]
    Invalid(#[from] RequestError),
    /// `max_queue` jobs are already waiting.
    #[error(
        "the queue is full ({max_queue} jobs waiting)\n  fix: retry later, or start the server with a larger --max-queue"
    )]
    Full {
        /// The limit.
        max_queue: usize,
    },
    /// The server is shutting down.
    #[error("the server is shutting down and accepts no new jobs\n  fix: retry on another server")]
    ShuttingDown,
}

/// Why a job's video cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    /// No job has this id (or it was deleted by retention).
    #[error("no video job with id `{0}`")]
    Unknown(String),
    /// The job has not completed.
    #[error("video job `{id}` is {}, so it has no content", status.name())]
    NotReady {
        /// The job.
        id: String,
        /// Its status.
        status: Status,
    },
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled(JobView),
    /// The job is running; it stops at its next step.
    Requested(JobView),
    /// The job had finished; it and its video were deleted.
    Deleted,
}

/// A job as shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job's id (`video_` and 24 hex digits).
    pub id: String,
    /// Always `video` (as the OpenAI Videos API).
    pub object: &'static str,
    /// The served model.
    pub model: String,
    /// Life-cycle status.
    pub status: Status,
    /// Percent done, 0 to 100.
    pub progress: u32,
    /// The stage running now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// Unix seconds when the job was submitted.
    pub created_at: u64,
    /// Unix seconds when it started running.
    pub started_at: Option<u64>,
    /// Unix seconds when it finished (completed, failed or cancelled).
    pub completed_at: Option<u64>,
    /// Unix seconds when retention deletes it.
    pub expires_at: Option<u64>,
    /// Where the time went.
    pub timings: Timings,
    /// Why it failed or was cancelled.
    pub error: Option<JobFailure>,
    /// Whether a cancel was asked of the running job.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The request with its defaults filled in.
    #[serde(flatten)]
    pub request: serde_json::Map<String, serde_json::Value>,
}

/// A job's timings in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timings {
    /// From submission to start (or to now while queued).
    pub queued_seconds: f64,
    /// From start to finish (or to now while running).
    pub run_seconds: Option<f64>,
    /// Each finished stage's seconds.
    pub stages: BTreeMap<&'static str, f64>,
}

/// A failed or cancelled job's error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobFailure {
    /// `cancelled`, `shutdown`, `job_failed` or `job_panicked`.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// No job was running, or the running one finished within the grace period.
    Drained,
    /// The running job was cancelled after the grace period and stopped.
    CancelledRunning,
    /// The running job did not stop within the bound; the process exits anyway.
    Abandoned,
}

/// The queue and its worker thread.
pub struct Queue<E: Executor> {
    shared: Arc<Shared<E>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Shared<E: Executor> {
    executor: E,
    config: QueueConfig,
    model_load_seconds: f64,
    state: Mutex<State<E::Job>>,
    wake_worker: Condvar,
    job_ended: Condvar,
}

struct State<J> {
    records: Vec<Record<J>>,
    waiting: VecDeque<String>,
    running: Option<String>,
    accepting: bool,
    stopping: bool,
    finished_total: BTreeMap<Status, u64>,
    rejected_invalid: u64,
    rejected_full: u64,
    stages: BTreeMap<&'static str, StageTotal>,
}

struct Record<J> {
    id: String,
    status: Status,
    request: serde_json::Map<String, serde_json::Value>,
    job: Arc<J>,
    control: Arc<JobControl>,
    created: (SystemTime, Instant),
    started: Option<(SystemTime, Instant)>,
    finished: Option<(SystemTime, Instant)>,
    failure: Option<JobFailure>,
    video: Option<PathBuf>,
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn new_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("video_{hex}")
}

impl<J> Record<J> {
    fn view(&self, model: &str, retention: &Retention) -> JobView {
        let progress = self.control.progress();
        let now = Instant::now();
        let queued_until = self.started.map_or(
            self.finished.map_or(now, |(_, instant)| instant),
            |(_, instant)| instant,
        );
        let run_seconds = self.started.map(|(_, started)| {
            let until = self.finished.map_or(now, |(_, instant)| instant);
            until.duration_since(started).as_secs_f64()
        });
        JobView {
            id: self.id.clone(),
            object: "video",
            model: model.to_string(),
            status: self.status,
            progress: match self.status {
                Status::Completed => 100,
                _ => progress.percent.floor() as u32,
            },
            stage: (self.status == Status::InProgress)
                .then_some(progress.stage)
                .flatten(),
            created_at: unix_seconds(self.created.0),
            started_at: self.started.map(|(time, _)| unix_seconds(time)),
            completed_at: self.finished.map(|(time, _)| unix_seconds(time)),
            expires_at: self
                .finished
                .map(|(time, _)| unix_seconds(time + retention.max_age)),
            timings: Timings {
                queued_seconds: queued_until.duration_since(self.created.1).as_secs_f64(),
                run_seconds,
                stages: progress.seconds_by_stage(),
            },
            error: self.failure.clone(),
            cancel_requested: self.status == Status::InProgress && self.control.is_cancelled(),
            request: self.request.clone(),
        }
    }

    fn finish(&mut self, status: Status, failure: Option<JobFailure>) {
        self.status = status;
        self.failure = failure;
        self.finished = Some((SystemTime::now(), Instant::now()));
    }
}

impl<J> State<J> {
    fn record_mut(&mut self, id: &str) -> Option<&mut Record<J>> {
        self.records.iter_mut().find(|r| r.id == id)
    }

    /// Removes finished jobs beyond the retention limits; returns their video files.
    fn expire(&mut self, retention: &Retention, now: Instant) -> Vec<PathBuf> {
        let mut finished: Vec<(Instant, String)> = self
            .records
            .iter()
            .filter_map(|r| r.finished.map(|(_, instant)| (instant, r.id.clone())))
            .collect();
        finished.sort();
        let excess = finished.len().saturating_sub(retention.max_jobs);
        let expired: Vec<String> = finished
            .iter()
            .enumerate()
            .filter(|(index, (at, _))| {
                *index < excess || now.saturating_duration_since(*at) > retention.max_age
            })
            .map(|(_, (_, id))| id.clone())
            .collect();
        let mut files = Vec::new();
        self.records.retain_mut(|record| {
            if expired.contains(&record.id) {
                files.extend(record.video.take());
                false
            } else {
                true
            }
        });
        files
    }
}

fn remove_videos(files: Vec<PathBuf>) {
    for file in files {
        if let Err(error) = fs_err::remove_file(&file)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete an expired video: {error}");
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl<E: Executor> Queue<E> {
    /// Creates the videos directory and starts the worker thread; `model_load_seconds` is what
    /// loading the executor's models took (reported by `/metrics`).
    pub fn start(
        executor: E,
        config: QueueConfig,
        model_load_seconds: f64,
    ) -> std::io::Result<Queue<E>> {
        fs_err::create_dir_all(&config.videos)?;
        let shared = Arc::new(Shared {
            executor,
            config,
            model_load_seconds,
            state: Mutex::new(State {
                records: Vec::new(),
                waiting: VecDeque::new(),
                running: None,
                accepting: true,
                stopping: false,
                finished_total: BTreeMap::new(),
                rejected_invalid: 0,
                rejected_full: 0,
                stages: BTreeMap::new(),
            }),
            wake_worker: Condvar::new(),
            job_ended: Condvar::new(),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("skyreels-worker".into())
            .spawn(move || worker_loop(&worker_shared))?;
        Ok(Queue {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<E::Job>> {
        self.shared.lock()
    }

    /// Resolves `body` with the executor and queues it.
    pub fn submit(&self, body: serde_json::Value) -> Result<JobView, SubmitError> {
        let shared = &self.shared;
        if !self.state().accepting {
            return Err(SubmitError::ShuttingDown);
        }
        let prepared = match shared.executor.prepare(body) {
            Ok(prepared) => prepared,
            Err(error) => {
                self.state().rejected_invalid += 1;
                return Err(error.into());
            }
        };
        let request = match prepared.request {
            serde_json::Value::Object(map) => map,
            other => serde_json::Map::from_iter([("request".to_string(), other)]),
        };
        let mut state = self.state();
        if !state.accepting {
            return Err(SubmitError::ShuttingDown);
        }
        if state.waiting.len() >= shared.config.max_queue {
            state.rejected_full += 1;
            return Err(SubmitError::Full {
                max_queue: shared.config.max_queue,
            });
        }
        let record = Record {
            id: new_id(),
            status: Status::Queued,
            request,
            job: Arc::new(prepared.job),
            control: Arc::new(JobControl::default()),
            created: (SystemTime::now(), Instant::now()),
            started: None,
            finished: None,
            failure: None,
            video: None,
        };
        let view = record.view(&shared.config.model, &shared.config.retention);
        state.waiting.push_back(record.id.clone());
        state.records.push(record);
        drop(state);
        shared.wake_worker.notify_all();
        Ok(view)
    }

    /// The job `id`.
    pub fn get(&self, id: &str) -> Option<JobView> {
        let config = &self.shared.config;
        self.state()
            .records
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.view(&config.model, &config.retention))
    }

    /// Every job kept, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        let config = &self.shared.config;
        self.state()
            .records
            .iter()
            .map(|r| r.view(&config.model, &config.retention))
            .collect()
    }

    /// The MP4 of a completed job.
    pub fn video(&self, id: &str) -> Result<PathBuf, ContentError> {
        let state = self.state();
        let record = state
            .records
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| ContentError::Unknown(id.to_string()))?;
        match (&record.video, record.status) {
            (Some(path), Status::Completed) => Ok(path.clone()),
            (_, status) => Err(ContentError::NotReady {
                id: id.to_string(),
                status,
            }),
        }
    }

    /// Cancels a waiting job, asks a running one to stop at its next step, or deletes a finished
    /// one with its video; `None` for an unknown id.
    pub fn cancel(&self, id: &str) -> Option<CancelOutcome> {
        let config = &self.shared.config;
        let mut state = self.state();
        let record = state.record_mut(id)?;
        let outcome = match record.status {
            Status::Queued => {
                record.finish(
                    Status::Cancelled,
                    Some(JobFailure {
                        code: "cancelled",
                        message: "cancelled before it started".into(),
                    }),
                );
                let view = record.view(&config.model, &config.retention);
                state.waiting.retain(|waiting| waiting != id);
                *state.finished_total.entry(Status::Cancelled).or_default() += 1;
                CancelOutcome::Cancelled(view)
            }
            Status::InProgress => {
                record.control.cancel();
                CancelOutcome::Requested(record.view(&config.model, &config.retention))
            }
            Status::Completed | Status::Failed | Status::Cancelled => {
                let video = record.video.take();
                state.records.retain(|r| r.id != id);
                drop(state);
                remove_videos(video.into_iter().collect());
                return Some(CancelOutcome::Deleted);
            }
        };
        Some(outcome)
    }

    /// The served model's name.
    pub fn model(&self) -> &str {
        &self.shared.config.model
    }

    /// Whether new jobs are accepted (false once a shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.state().accepting
    }

    /// Counters and gauges for `/metrics`.
    pub fn metrics(&self) -> MetricsSnapshot {
        let state = self.state();
        let mut jobs_by_status = BTreeMap::new();
        for status in Status::ALL {
            jobs_by_status.insert(status, 0);
        }
        for record in &state.records {
            *jobs_by_status.entry(record.status).or_default() += 1;
        }
        MetricsSnapshot {
            queue_depth: state.waiting.len(),
            max_queue: self.shared.config.max_queue,
            jobs_by_status,
            finished_total: Status::ALL
                .into_iter()
                .filter(|s| s.is_finished())
                .map(|s| (s, state.finished_total.get(&s).copied().unwrap_or(0)))
                .collect(),
            rejected_invalid: state.rejected_invalid,
            rejected_full: state.rejected_full,
            stages: state.stages.clone(),
            model_load_seconds: self.shared.model_load_seconds,
            gpu_memory: self.shared.executor.gpu_memory(),
        }
    }

    /// Deletes finished jobs beyond the retention limits (also done after every job).
    pub fn expire(&self) {
        let files = self
            .state()
            .expire(&self.shared.config.retention, Instant::now());
        remove_videos(files);
    }

    /// Stops accepting jobs and cancels the waiting ones; lets the running job finish for up to
    /// `grace`, then cancels it and waits up to `cancel_bound` for it to stop at its next step.
    pub fn shutdown(&self, grace: Duration, cancel_bound: Duration) -> ShutdownOutcome {
        let shared = &self.shared;
        let mut state = self.state();
        state.accepting = false;
        state.stopping = true;
        let waiting: Vec<String> = state.waiting.drain(..).collect();
        for id in waiting {
            if let Some(record) = state.record_mut(&id) {
                record.finish(
                    Status::Cancelled,
                    Some(JobFailure {
                        code: "shutdown",
                        message: "the server shut down before the job started".into(),
                    }),
                );
            }
            *state.finished_total.entry(Status::Cancelled).or_default() += 1;
        }
        shared.wake_worker.notify_all();
        let (state, wait) = shared
            .job_ended
            .wait_timeout_while(state, grace, |s| s.running.is_some())
            .unwrap_or_else(PoisonError::into_inner);
        let outcome = if !wait.timed_out() {
            // The worker takes the lock to see that it may stop: release it before joining.
            drop(state);
            ShutdownOutcome::Drained
        } else {
            let running = state.running.clone();
            if let Some(record) = running.and_then(|id| state.records.iter().find(|r| r.id == id)) {
                record.control.cancel();
            }
            let (_state, wait) = shared
                .job_ended
                .wait_timeout_while(state, cancel_bound, |s| s.running.is_some())
                .unwrap_or_else(PoisonError::into_inner);
            if wait.timed_out() {
                return ShutdownOutcome::Abandoned;
            }
            ShutdownOutcome::CancelledRunning
        };
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
        outcome
    }
}

impl<E: Executor> Drop for Queue<E> {
    /// Lets the worker thread end: no more jobs start, and a running one is asked to stop.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        state.accepting = false;
        state.waiting.clear();
        if let Some(id) = state.running.clone()
            && let Some(record) = state.record_mut(&id)
        {
            record.control.cancel();
        }
        drop(state);
        self.shared.wake_worker.notify_all();
    }
}

impl<E: Executor> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E::Job>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn video_path(&self, id: &str) -> PathBuf {
        self.config.videos.join(format!("{id}.mp4"))
    }
}

/// Takes the next waiting job (marking it running), or `None` once stopping with nothing left.
fn next_job<E: Executor>(shared: &Shared<E>) -> Option<(String, Arc<E::Job>, Arc<JobControl>)> {
    let mut state = shared.lock();
    loop {
        if let Some(id) = state.waiting.pop_front() {
            let record = state.record_mut(&id).expect("waiting jobs have records");
            record.status = Status::InProgress;
            record.started = Some((SystemTime::now(), Instant::now()));
            let job = (Arc::clone(&record.job), Arc::clone(&record.control));
            state.running = Some(id.clone());
            return Some((id, job.0, job.1));
        }
        if state.stopping {
            return None;
        }
        let files = state.expire(&shared.config.retention, Instant::now());
        if !files.is_empty() {
            drop(state);
            remove_videos(files);
            state = shared.lock();
            continue;
        }
        let period = (shared.config.retention.max_age / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        state = shared
            .wake_worker
            .wait_timeout(state, period)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn worker_loop<E: Executor>(shared: &Shared<E>) {
    while let Some((id, job, control)) = next_job(shared) {
        let output = shared.video_path(&id);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            shared.executor.run(&job, &output, &control)
        }));
        control.finish();
        let (status, failure) = match outcome {
            Ok(Ok(())) if output.is_file() => (Status::Completed, None),
            Ok(Ok(())) => (
                Status::Failed,
                Some(JobFailure {
                    code: "job_failed",
                    message: "the job wrote no video".into(),
                }),
            ),
            Ok(Err(JobError::Cancelled)) => (
                Status::Cancelled,
                Some(JobFailure {
                    code: "cancelled",
                    message: "cancelled while running".into(),
                }),
            ),
            Ok(Err(JobError::Failed(message))) => (
                Status::Failed,
                Some(JobFailure {
                    code: "job_failed",
                    message,
                }),
            ),
            Err(payload) => (
                Status::Failed,
                Some(JobFailure {
                    code: "job_panicked",
                    message: format!("the job panicked: {}", panic_message(payload.as_ref())),
                }),
            ),
        };
        tracing::info!(
            "job {id}: {}{}",
            status.name(),
            failure
                .as_ref()
                .map(|f| format!(" ({})", f.message))
                .unwrap_or_default()
        );
        let mut state = shared.lock();
        for (stage, seconds) in control.progress().seconds_by_stage() {
            let total = state.stages.entry(stage).or_default();
            total.seconds += seconds;
            total.count += 1;
        }
        *state.finished_total.entry(status).or_default() += 1;
        state.running = None;
        let mut orphan = None;
        match state.record_mut(&id) {
            Some(record) => {
                record.finish(status, failure);
                if status == Status::Completed {
                    record.video = Some(output);
                } else if output.exists() {
                    orphan = Some(output);
                }
            }
            None => orphan = Some(output),
        }
        let mut files = state.expire(&shared.config.retention, Instant::now());
        files.extend(orphan);
        drop(state);
        shared.job_ended.notify_all();
        remove_videos(files);
    }
    shared.job_ended.notify_all();
}

#[cfg(test)]
mod tests;
