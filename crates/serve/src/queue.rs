//! The job queue: requests are resolved when submitted, wait in order, and run one at a time on a
//! blocking worker thread that owns the executor's loaded models. A job that fails or panics is
//! recorded as failed and the worker goes on; finished jobs and their videos are kept within a
//! count and an age, then deleted. Every job's record is also a file beside the videos
//! ([`crate::store`]), written at each change of status, so that a restarted server knows its jobs.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};
use skyreels_runtime::pipeline::generate::WorkDir;

use crate::executor::{Executor, JobControl, JobError, RequestError};
use crate::metrics::{MetricsSnapshot, StageTotal};
use crate::reference::{Inputs, Reference};
use crate::store::{self, StoredJob};

/// How many times a job that was running when the server stopped (a crash, SIGKILL, or SIGTERM
/// past the grace period) is queued again from the start; once more, and it fails with
/// [`INTERRUPTED`] (a job that brings the server down would otherwise do so at every start).
pub const MAX_RESTARTS: u32 = 3;

/// The error of a job that was running each of the [`MAX_RESTARTS`] + 1 times the server stopped.
pub const INTERRUPTED: &str = "the server stopped while this job ran 4 times (the job may be what stops it), so it is not queued again\n  fix: read the server's log for why it stopped, then submit the request again";

/// Where a job is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

    /// Whether the job has ended (completed, failed or cancelled).
    pub fn is_finished(self) -> bool {
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
    /// Directory of finished videos and of every job's record (created if missing; the queue
    /// deletes only its own files).
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
    /// An upload could not be kept in the videos directory.
    #[error(
        "the upload `{field}` cannot be saved in the videos directory: {message}\n  fix: free space in --videos, or make it writable"
    )]
    Upload {
        /// The form part.
        field: &'static str,
        /// The error.
        message: String,
    },
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
    /// How many times the job was queued again from the start because the server stopped while
    /// it ran (absent when never).
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// The request with its defaults filled in.
    #[serde(flatten)]
    pub request: serde_json::Map<String, serde_json::Value>,
}

/// A job's timings in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// From submission to start (or to now while queued).
    pub queued_seconds: f64,
    /// From start to finish (or to now while running).
    pub run_seconds: Option<f64>,
    /// Each finished stage's seconds.
    pub stages: BTreeMap<String, f64>,
}

/// A failed or cancelled job's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFailure {
    /// `cancelled`, `job_failed`, `job_panicked`, `interrupted`, `refused_after_restart`,
    /// `input_missing` or `video_missing`.
    pub code: String,
    /// The message.
    pub message: String,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// No job was running, or the running one finished within the grace period.
    Drained,
    /// The running job was stopped after the grace period; it is queued again for the next start
    /// (or failed with [`INTERRUPTED`] after [`MAX_RESTARTS`]).
    InterruptedRunning,
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
    /// The running job the shutdown stopped (recorded as failed, not as cancelled).
    interrupted: Option<String>,
    accepting: bool,
    stopping: bool,
    finished_total: BTreeMap<Status, u64>,
    rejected_invalid: u64,
    rejected_full: u64,
    stages: BTreeMap<&'static str, StageTotal>,
}

/// A moment by the wall clock (shown and stored) and by the monotonic clock (for durations).
type Moment = (SystemTime, Instant);

struct Record<J> {
    id: String,
    status: Status,
    submitted: serde_json::Value,
    request: serde_json::Map<String, serde_json::Value>,
    /// The resolved job while it waits; the worker takes it when the job starts.
    job: Option<J>,
    control: Arc<JobControl>,
    created: Moment,
    started: Option<Moment>,
    finished: Option<SystemTime>,
    /// Progress and timings, frozen once the job has finished.
    ended: Option<(u32, Timings)>,
    failure: Option<JobFailure>,
    video: Option<PathBuf>,
    /// The uploaded files (`<id>.input.png`, …), kept until the job is deleted.
    inputs: Inputs,
    /// Times queued again because the server stopped while the job ran.
    restarts: u32,
    /// A client asked the running job to stop (kept in the record: a job found running at the
    /// next start with this set is cancelled, not run again).
    cancel_requested: bool,
}

/// A job deleted by retention or by a client, whose files are to be deleted.
struct Removed {
    id: String,
    video: Option<PathBuf>,
    inputs: Inputs,
}

/// An uploaded file, received into a temporary file in the videos directory
/// ([`Queue::upload_path`]) and checked; the queue owns it from [`Queue::submit`] on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// What it is to the job.
    pub reference: Reference,
    /// The temporary file.
    pub path: PathBuf,
    /// The extension it is saved with (`png`, `jpg`, `mp4`), from its signature.
    pub extension: &'static str,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The monotonic instant of a past wall-clock `time` (now when it lies before the clock's start).
fn instant_of(time: SystemTime) -> Instant {
    let now = Instant::now();
    SystemTime::now()
        .duration_since(time)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

fn new_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("video_{hex}")
}

fn failure(code: &str, message: impl Into<String>) -> JobFailure {
    JobFailure {
        code: code.into(),
        message: message.into(),
    }
}

fn as_object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => serde_json::Map::from_iter([("request".to_string(), other)]),
    }
}

/// The prepared request as shown to clients, with each upload's file name under its form part's
/// name (`input_reference`, …).
fn shown_request(
    prepared: serde_json::Value,
    inputs: &Inputs,
) -> serde_json::Map<String, serde_json::Value> {
    let mut request = as_object(prepared);
    for (reference, _) in inputs.iter() {
        if let Some(name) = inputs.file_name(reference) {
            request.insert(reference.field().into(), serde_json::Value::String(name));
        }
    }
    request
}

impl<J> Record<J> {
    /// Percent done, the running stage and the timings as of now.
    fn live(&self) -> (u32, Option<&'static str>, Timings) {
        let progress = self.control.progress();
        let now = Instant::now();
        let queued_until = self.started.map_or(now, |(_, instant)| instant);
        let timings = Timings {
            queued_seconds: queued_until
                .saturating_duration_since(self.created.1)
                .as_secs_f64(),
            run_seconds: self
                .started
                .map(|(_, started)| now.saturating_duration_since(started).as_secs_f64()),
            stages: progress
                .seconds_by_stage()
                .into_iter()
                .map(|(stage, seconds)| (stage.to_string(), seconds))
                .collect(),
        };
        let percent = match self.status {
            Status::Completed => 100,
            _ => progress.percent.floor() as u32,
        };
        let stage = (self.status == Status::InProgress)
            .then_some(progress.stage)
            .flatten();
        (percent, stage, timings)
    }

    fn view(&self, model: &str, retention: &Retention) -> JobView {
        let (progress, stage, timings) = match &self.ended {
            Some((progress, timings)) => (*progress, None, timings.clone()),
            None => self.live(),
        };
        JobView {
            id: self.id.clone(),
            object: "video",
            model: model.to_string(),
            status: self.status,
            progress,
            stage,
            created_at: unix_seconds(self.created.0),
            started_at: self.started.map(|(time, _)| unix_seconds(time)),
            completed_at: self.finished.map(unix_seconds),
            expires_at: self
                .finished
                .map(|time| unix_seconds(time + retention.max_age)),
            timings,
            error: self.failure.clone(),
            cancel_requested: self.status == Status::InProgress && self.control.is_cancelled(),
            restarts: self.restarts,
            request: self.request.clone(),
        }
    }

    fn finish(&mut self, status: Status, failure: Option<JobFailure>) {
        self.status = status;
        let (progress, _, timings) = self.live();
        self.ended = Some((progress, timings));
        self.failure = failure;
        self.finished = Some(SystemTime::now());
        self.job = None;
    }

    /// Queues the job again from the start after the server stopped while it ran (its job is
    /// prepared again by the caller, or at the next start); `false`, and nothing changed, once it
    /// was queued again [`MAX_RESTARTS`] times.
    fn requeue(&mut self) -> bool {
        if self.restarts >= MAX_RESTARTS {
            return false;
        }
        self.restarts += 1;
        self.status = Status::Queued;
        self.control = Arc::new(JobControl::default());
        self.started = None;
        self.finished = None;
        self.ended = None;
        self.failure = None;
        self.video = None;
        self.cancel_requested = false;
        true
    }

    /// The record as written to disk.
    fn stored(&self) -> StoredJob {
        let (progress, timings) = match &self.ended {
            Some((progress, timings)) => (*progress, timings.clone()),
            None => {
                let (progress, _, timings) = self.live();
                (progress, timings)
            }
        };
        StoredJob {
            object: store::RECORD_OBJECT.into(),
            format: store::RECORD_FORMAT,
            id: self.id.clone(),
            status: self.status,
            progress,
            created_at: store::unix_seconds_f64(self.created.0),
            started_at: self.started.map(|(time, _)| store::unix_seconds_f64(time)),
            finished_at: self.finished.map(store::unix_seconds_f64),
            timings,
            error: self.failure.clone(),
            video: self.video.as_ref().map(|_| store::video_name(&self.id)),
            input_reference: self.inputs.file_name(Reference::FirstFrame),
            last_frame_reference: self.inputs.file_name(Reference::LastFrame),
            video_reference: self.inputs.file_name(Reference::Video),
            restarts: self.restarts,
            cancel_requested: self.status == Status::InProgress && self.cancel_requested,
            submitted: self.submitted.clone(),
            request: self.request.clone(),
        }
    }

    /// Writes the record to the videos directory; a failure is logged (the job goes on).
    fn save(&self, videos: &Path) {
        if let Err(error) = store::save(videos, &self.stored()) {
            tracing::warn!(
                "cannot save the record of job {}: {error}\n  fix: free space in --videos, or make it writable; without its record the job is not known after a restart",
                self.id
            );
        }
    }
}

/// A job read back from its record: completed, failed and cancelled jobs stay as they were; a
/// queued one is prepared again (and fails when the executor refuses it now, or its upload is
/// gone). One that was running when the server stopped is completed when its video was written
/// (the writer renames only a whole file into place), cancelled when a client had asked it to
/// stop, else queued again from the start (at most [`MAX_RESTARTS`] times).
fn restore<E: Executor>(executor: &E, videos: &Path, stored: StoredJob) -> Record<E::Job> {
    let time = |seconds: f64| store::time_of_unix_seconds(seconds).unwrap_or(UNIX_EPOCH);
    let created = time(stored.created_at);
    let inputs = stored_inputs(videos, &stored);
    let mut record = Record {
        id: stored.id,
        status: stored.status,
        submitted: stored.submitted,
        request: stored.request,
        job: None,
        control: Arc::new(JobControl::default()),
        created: (created, instant_of(created)),
        started: stored.started_at.map(|seconds| {
            let started = time(seconds);
            (started, instant_of(started))
        }),
        finished: stored.finished_at.map(time),
        ended: Some((stored.progress, stored.timings)),
        failure: stored.error,
        video: stored.video.map(|name| videos.join(name)),
        inputs,
        restarts: stored.restarts,
        cancel_requested: stored.cancel_requested,
    };
    let failed = match record.status {
        Status::Completed if record.video.as_ref().is_some_and(|video| video.is_file()) => None,
        Status::Completed => Some(failure(
            "video_missing",
            format!(
                "its video {} is no longer in the videos directory\n  fix: submit the request again",
                store::video_name(&record.id)
            ),
        )),
        Status::Failed | Status::Cancelled => return record,
        Status::InProgress => match stopped_while_running(videos, &mut record) {
            Stopped::Ended => {
                record.save(videos);
                return record;
            }
            Stopped::Requeued => prepare_again(executor, &mut record),
            Stopped::TooOften => Some(failure("interrupted", INTERRUPTED)),
        },
        Status::Queued => prepare_again(executor, &mut record),
    };
    if let Some(failed) = failed {
        tracing::warn!("job {}: failed ({})", record.id, failed.message);
        record.status = Status::Failed;
        record.failure = Some(failed);
        record.finished = Some(SystemTime::now());
        if record.ended.is_none() {
            record.ended = Some((0, Timings::default()));
        }
        record.video = None;
        remove_unfinished_video(videos, &record.id);
    }
    record.save(videos);
    record
}

/// The uploads a record names, as paths in `videos`.
fn stored_inputs(videos: &Path, stored: &StoredJob) -> Inputs {
    let mut inputs = Inputs::default();
    for reference in Reference::ALL {
        if let Some(name) = stored.reference(reference) {
            inputs.set(reference, videos.join(name));
        }
    }
    inputs
}

/// What became of a job found running at start-up.
enum Stopped {
    /// It completed (its video is there) or was cancelled (a client had asked).
    Ended,
    /// It is queued again from the start.
    Requeued,
    /// It was queued again [`MAX_RESTARTS`] times already.
    TooOften,
}

fn stopped_while_running<J>(videos: &Path, record: &mut Record<J>) -> Stopped {
    remove_partial_videos(videos, &record.id);
    let video = videos.join(store::video_name(&record.id));
    if video.is_file() {
        tracing::info!(
            "job {}: completed (the server stopped after its video was written)",
            record.id
        );
        let written = fs_err::metadata(&video)
            .and_then(|metadata| metadata.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let timings = record.ended.take().map(|(_, timings)| timings);
        record.status = Status::Completed;
        record.finished = Some(written);
        record.ended = Some((100, timings.unwrap_or_default()));
        record.video = Some(video);
        remove_work_directory(videos, &record.id);
        return Stopped::Ended;
    }
    if record.cancel_requested {
        tracing::info!(
            "job {}: cancelled (a client asked it to stop before the server stopped)",
            record.id
        );
        record.status = Status::Cancelled;
        record.failure = Some(failure(
            "cancelled",
            "cancelled while running (the server stopped before the job did)",
        ));
        record.finished = Some(SystemTime::now());
        remove_work_directory(videos, &record.id);
        return Stopped::Ended;
    }
    if !record.requeue() {
        return Stopped::TooOften;
    }
    tracing::warn!(
        "job {}: was running when the server stopped; queued again from the start (restart {} of at most {MAX_RESTARTS})",
        record.id,
        record.restarts
    );
    Stopped::Requeued
}

/// Prepares a queued job again with the executor now served; the failure when its upload is gone
/// or the executor refuses it.
fn prepare_again<E: Executor>(executor: &E, record: &mut Record<E::Job>) -> Option<JobFailure> {
    if let Some((reference, _)) = record.inputs.iter().find(|(_, path)| !path.is_file()) {
        return Some(failure(
            "input_missing",
            format!(
                "its uploaded {} {} is no longer in the videos directory\n  fix: submit the request again with the upload",
                reference.field(),
                record.inputs.file_name(reference).unwrap_or_default()
            ),
        ));
    }
    match executor.prepare(record.submitted.clone(), &record.inputs) {
        Ok(prepared) => {
            record.job = Some(prepared.job);
            record.request = shown_request(prepared.request, &record.inputs);
            record.ended = None;
            None
        }
        Err(refused) => Some(failure(
            "refused_after_restart",
            format!(
                "the restarted server no longer accepts this request{}: {}",
                refused
                    .field
                    .map(|field| format!(" (field `{field}`)"))
                    .unwrap_or_default(),
                refused.message
            ),
        )),
    }
}

impl<J> State<J> {
    fn record_mut(&mut self, id: &str) -> Option<&mut Record<J>> {
        self.records.iter_mut().find(|r| r.id == id)
    }

    /// Removes finished jobs beyond the retention limits; returns them for their files to go.
    fn expire(&mut self, retention: &Retention, now: SystemTime) -> Vec<Removed> {
        let mut finished: Vec<(SystemTime, String)> = self
            .records
            .iter()
            .filter_map(|r| r.finished.map(|time| (time, r.id.clone())))
            .collect();
        finished.sort();
        let excess = finished.len().saturating_sub(retention.max_jobs);
        let expired: Vec<String> = finished
            .iter()
            .enumerate()
            .filter(|(index, (at, _))| {
                *index < excess || now.duration_since(*at).unwrap_or_default() > retention.max_age
            })
            .map(|(_, (_, id))| id.clone())
            .collect();
        let mut removed = Vec::new();
        self.records.retain_mut(|record| {
            if expired.contains(&record.id) {
                removed.push(Removed {
                    id: record.id.clone(),
                    video: record.video.take(),
                    inputs: std::mem::take(&mut record.inputs),
                });
                false
            } else {
                true
            }
        });
        removed
    }
}

fn remove_file(path: &Path, what: &str) {
    if let Err(error) = fs_err::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot delete {what}: {error}");
    }
}

/// Deletes what a job that did not complete may have left: its video (written before the record
/// said so), the temporary files it was being written to (`.<id>.mp4.*.partial`) and the
/// finished windows of a long video.
fn remove_unfinished_video(videos: &Path, id: &str) {
    remove_file(&videos.join(store::video_name(id)), "an unfinished video");
    remove_partial_videos(videos, id);
    remove_work_directory(videos, id);
}

/// Deletes the work directory a long job keeps its finished windows in (`<id>.mp4.work`, what a
/// job queued again after a crash resumes from) once the job will not run again; a directory
/// without the runtime's marker, or one a running job holds, stays.
fn remove_work_directory(videos: &Path, id: &str) {
    let dir = videos.join(format!("{}.work", store::video_name(id)));
    if let Err(error) = WorkDir::remove_abandoned(&dir) {
        tracing::warn!(
            "cannot delete job {id}'s work directory {}: {error}",
            dir.display()
        );
    }
}

/// Deletes the temporary files job `id`'s video was being written to (`.<id>.mp4.*.partial`).
fn remove_partial_videos(videos: &Path, id: &str) {
    let video = store::video_name(id);
    let prefix = format!(".{video}.");
    let Ok(entries) = fs_err::read_dir(videos) else {
        return;
    };
    for entry in entries.flatten() {
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(&prefix)
            && name.ends_with(".partial")
        {
            remove_file(&entry.path(), "an unfinished video");
        }
    }
}

/// Deletes each removed job's video and uploaded first frame, then its record (so a record never
/// outlives its deletion with the video still served).
fn delete_jobs(videos: &Path, removed: Vec<Removed>) {
    for job in removed {
        if let Some(video) = job.video {
            remove_file(&video, "a deleted job's video");
        }
        for (reference, input) in job.inputs.iter() {
            remove_file(input, &format!("a deleted job's {}", reference.field()));
        }
        remove_work_directory(videos, &job.id);
        if let Err(error) = store::remove(videos, &job.id) {
            tracing::warn!("cannot delete a deleted job's record: {error}");
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
    /// Creates the videos directory, restores the jobs recorded there (finished ones as they were,
    /// queued ones prepared again in their order, running ones queued again from the start, as
    /// [`restore`] says; a file that is not a record of this server is skipped with a warning),
    /// applies the retention limits and starts the
    /// worker thread; `model_load_seconds` is what loading the executor's
    /// models took (reported by `/metrics`).
    pub fn start(
        executor: E,
        config: QueueConfig,
        model_load_seconds: f64,
    ) -> std::io::Result<Queue<E>> {
        fs_err::create_dir_all(&config.videos)?;
        let loaded = store::load(&config.videos)?;
        for skipped in &loaded.skipped {
            tracing::warn!(
                "skipping {}: {}\n  fix: move the file out of {} (the server neither loads nor deletes it)",
                skipped.path.display(),
                skipped.error,
                config.videos.display()
            );
        }
        let mut state = State {
            records: Vec::new(),
            waiting: VecDeque::new(),
            running: None,
            interrupted: None,
            accepting: true,
            stopping: false,
            finished_total: BTreeMap::new(),
            rejected_invalid: 0,
            rejected_full: 0,
            stages: BTreeMap::new(),
        };
        for stored in loaded.jobs {
            let record = restore(&executor, &config.videos, stored);
            if record.status == Status::Queued {
                state.waiting.push_back(record.id.clone());
            }
            state.records.push(record);
        }
        if !state.records.is_empty() {
            tracing::info!(
                "restored {} jobs from {} ({} queued)",
                state.records.len(),
                config.videos.display(),
                state.waiting.len()
            );
        }
        let expired = state.expire(&config.retention, SystemTime::now());
        delete_jobs(&config.videos, expired);
        let shared = Arc::new(Shared {
            executor,
            config,
            model_load_seconds,
            state: Mutex::new(state),
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

    /// A new temporary path in the videos directory to receive an upload into.
    pub fn upload_path(&self) -> PathBuf {
        let random: [u8; 12] = rand::rng().random();
        self.shared
            .config
            .videos
            .join(store::upload_temporary_name(random))
    }

    /// Resolves `body` with the executor and queues it with `uploads` (at most one of each
    /// kind): each becomes `<id>.<kind>.<extension>` ([`Reference::file_name`]), deleted with
    /// the job, or at once when the request is refused.
    pub fn submit(
        &self,
        body: serde_json::Value,
        uploads: Vec<Upload>,
    ) -> Result<JobView, SubmitError> {
        let shared = &self.shared;
        let id = new_id();
        let mut inputs = Inputs::default();
        let mut unsaved = None;
        for upload in uploads {
            let input = shared
                .config
                .videos
                .join(upload.reference.file_name(&id, upload.extension));
            if unsaved.is_some() {
                remove_file(&upload.path, "an upload");
                continue;
            }
            match fs_err::rename(&upload.path, &input) {
                Ok(()) => inputs.set(upload.reference, input),
                Err(error) => {
                    remove_file(&upload.path, "an upload");
                    unsaved = Some(SubmitError::Upload {
                        field: upload.reference.field(),
                        message: error.to_string(),
                    });
                }
            }
        }
        let refuse = |error: SubmitError| {
            for (_, input) in inputs.iter() {
                remove_file(input, "the upload of a refused request");
            }
            Err(error)
        };
        if let Some(error) = unsaved {
            return refuse(error);
        }
        if !self.state().accepting {
            return refuse(SubmitError::ShuttingDown);
        }
        let submitted = body.clone();
        let prepared = match shared.executor.prepare(body, &inputs) {
            Ok(prepared) => prepared,
            Err(error) => {
                self.state().rejected_invalid += 1;
                return refuse(error.into());
            }
        };
        let mut state = self.state();
        if !state.accepting {
            return refuse(SubmitError::ShuttingDown);
        }
        if state.waiting.len() >= shared.config.max_queue {
            state.rejected_full += 1;
            return refuse(SubmitError::Full {
                max_queue: shared.config.max_queue,
            });
        }
        let request = shown_request(prepared.request, &inputs);
        let record = Record {
            id,
            status: Status::Queued,
            submitted,
            request,
            job: Some(prepared.job),
            control: Arc::new(JobControl::default()),
            created: (SystemTime::now(), Instant::now()),
            started: None,
            finished: None,
            ended: None,
            failure: None,
            video: None,
            inputs,
            restarts: 0,
            cancel_requested: false,
        };
        record.save(&shared.config.videos);
        let view = record.view(&shared.config.model, &shared.config.retention);
        state.waiting.push_back(record.id.clone());
        state.records.push(record);
        drop(state);
        shared.wake_worker.notify_all();
        Ok(view)
    }

    /// Counts a request refused before it reached [`Queue::submit`] (a bad upload), for
    /// `/metrics`.
    pub fn count_invalid(&self) {
        self.state().rejected_invalid += 1;
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
    /// one with its video and record; `None` for an unknown id.
    pub fn cancel(&self, id: &str) -> Option<CancelOutcome> {
        let config = &self.shared.config;
        let mut state = self.state();
        let record = state.record_mut(id)?;
        let outcome = match record.status {
            Status::Queued => {
                record.finish(
                    Status::Cancelled,
                    Some(failure("cancelled", "cancelled before it started")),
                );
                record.save(&config.videos);
                let view = record.view(&config.model, &config.retention);
                state.waiting.retain(|waiting| waiting != id);
                *state.finished_total.entry(Status::Cancelled).or_default() += 1;
                CancelOutcome::Cancelled(view)
            }
            Status::InProgress => {
                record.control.cancel();
                record.cancel_requested = true;
                record.save(&config.videos);
                CancelOutcome::Requested(record.view(&config.model, &config.retention))
            }
            Status::Completed | Status::Failed | Status::Cancelled => {
                let removed = Removed {
                    id: id.to_string(),
                    video: record.video.take(),
                    inputs: std::mem::take(&mut record.inputs),
                };
                state.records.retain(|r| r.id != id);
                delete_jobs(&config.videos, vec![removed]);
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
        let mut state = self.state();
        let removed = state.expire(&self.shared.config.retention, SystemTime::now());
        delete_jobs(&self.shared.config.videos, removed);
    }

    /// Stops accepting jobs and starting them (waiting jobs stay queued, in their records, for
    /// the next start); lets the running job finish for up to `grace`, then stops it (queued
    /// again from the start for the next start, up to [`MAX_RESTARTS`] times, then failed with
    /// [`INTERRUPTED`]) and waits up to `cancel_bound` for it to reach its next step.
    pub fn shutdown(&self, grace: Duration, cancel_bound: Duration) -> ShutdownOutcome {
        let shared = &self.shared;
        let mut state = self.state();
        state.accepting = false;
        state.stopping = true;
        shared.wake_worker.notify_all();
        let (mut state, wait) = shared
            .job_ended
            .wait_timeout_while(state, grace, |s| s.running.is_some())
            .unwrap_or_else(PoisonError::into_inner);
        let outcome = if !wait.timed_out() {
            // The worker takes the lock to see that it may stop: release it before joining.
            drop(state);
            ShutdownOutcome::Drained
        } else {
            if let Some(id) = state.running.clone() {
                let stopped_here = state.record_mut(&id).is_some_and(|record| {
                    let asked_before = record.control.is_cancelled();
                    record.control.cancel();
                    !asked_before
                });
                if stopped_here {
                    state.interrupted = Some(id);
                }
            }
            let (_state, wait) = shared
                .job_ended
                .wait_timeout_while(state, cancel_bound, |s| s.running.is_some())
                .unwrap_or_else(PoisonError::into_inner);
            if wait.timed_out() {
                return ShutdownOutcome::Abandoned;
            }
            ShutdownOutcome::InterruptedRunning
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
        self.config.videos.join(store::video_name(id))
    }
}

/// Takes the next waiting job (marking it running), or `None` once stopping.
fn next_job<E: Executor>(shared: &Shared<E>) -> Option<(String, E::Job, Arc<JobControl>)> {
    let mut state = shared.lock();
    loop {
        if state.stopping {
            return None;
        }
        if let Some(id) = state.waiting.pop_front() {
            let Some(record) = state.record_mut(&id) else {
                continue;
            };
            let Some(job) = record.job.take() else {
                continue;
            };
            record.status = Status::InProgress;
            record.started = Some((SystemTime::now(), Instant::now()));
            record.save(&shared.config.videos);
            let control = Arc::clone(&record.control);
            state.running = Some(id.clone());
            return Some((id, job, control));
        }
        let removed = state.expire(&shared.config.retention, SystemTime::now());
        delete_jobs(&shared.config.videos, removed);
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
        let mut state = shared.lock();
        let interrupted = matches!(outcome, Ok(Err(JobError::Cancelled)))
            && state.interrupted.as_deref() == Some(id.as_str());
        if interrupted
            && let Some(record) = state.record_mut(&id)
            && record.requeue()
        {
            tracing::warn!(
                "job {id}: stopped by the shutdown; queued again from the start for the next start (restart {} of at most {MAX_RESTARTS})",
                record.restarts
            );
            record.save(&shared.config.videos);
            state.running = None;
            remove_unfinished_video(&shared.config.videos, &id);
            drop(state);
            shared.job_ended.notify_all();
            continue;
        }
        let (status, failure) = match outcome {
            Ok(Ok(())) if output.is_file() => (Status::Completed, None),
            Ok(Ok(())) => (
                Status::Failed,
                Some(failure("job_failed", "the job wrote no video")),
            ),
            Ok(Err(JobError::Cancelled)) if interrupted => {
                (Status::Failed, Some(failure("interrupted", INTERRUPTED)))
            }
            Ok(Err(JobError::Cancelled)) => (
                Status::Cancelled,
                Some(failure("cancelled", "cancelled while running")),
            ),
            Ok(Err(JobError::Failed(message))) => {
                (Status::Failed, Some(failure("job_failed", message)))
            }
            Err(payload) => (
                Status::Failed,
                Some(failure(
                    "job_panicked",
                    format!("the job panicked: {}", panic_message(payload.as_ref())),
                )),
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
                record.save(&shared.config.videos);
            }
            None => orphan = Some(output),
        }
        if let Some(orphan) = orphan {
            remove_file(&orphan, "an unfinished video");
        }
        // Under the lock: a job that is no longer listed has no files left.
        let removed = state.expire(&shared.config.retention, SystemTime::now());
        delete_jobs(&shared.config.videos, removed);
        drop(state);
        shared.job_ended.notify_all();
    }
    shared.job_ended.notify_all();
}

#[cfg(test)]
mod tests;
