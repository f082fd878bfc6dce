//! The job life cycle against a test double executor.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::executor::Prepared;
use crate::reference::{Inputs, Reference};

/// What the double does when run.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Complete,
    Fail,
    Panic,
    BlockUntilCancelled,
    /// Runs on, cancelled or not, until the test sets [`Double::release`] (a long step).
    BlockUntilReleased,
    WriteNothing,
}

struct DoubleJob {
    steps: usize,
    behaviour: Behaviour,
}

/// Runs `steps` steps of 2 ms each (at most `max_steps`), then does what `behaviour` says; writes
/// 3 bytes as its video; remembers the steps of every job it ran, in order.
struct Double {
    max_steps: u64,
    runs: Mutex<Vec<usize>>,
    release: std::sync::atomic::AtomicBool,
}

impl Double {
    fn new(max_steps: u64) -> Double {
        Double {
            max_steps,
            runs: Mutex::new(Vec::new()),
            release: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Executor for Double {
    type Job = DoubleJob;

    fn prepare(&self, body: Value, inputs: &Inputs) -> Result<Prepared<DoubleJob>, RequestError> {
        let steps = match body.get("steps") {
            None => 3,
            Some(value) => value
                .as_u64()
                .filter(|&steps| steps > 0 && steps <= self.max_steps)
                .ok_or_else(|| RequestError {
                    field: Some("steps".into()),
                    message: format!(
                        "steps must be an integer from 1 to {}, got {value}",
                        self.max_steps
                    ),
                })? as usize,
        };
        let behaviour = match body.get("behaviour").and_then(Value::as_str) {
            None => Behaviour::Complete,
            Some("fail") => Behaviour::Fail,
            Some("panic") => Behaviour::Panic,
            Some("block") => Behaviour::BlockUntilCancelled,
            Some("block_until_released") => Behaviour::BlockUntilReleased,
            Some("write_nothing") => Behaviour::WriteNothing,
            Some(other) => {
                return Err(RequestError {
                    field: Some("behaviour".into()),
                    message: format!("unknown behaviour {other}"),
                });
            }
        };
        let mut request = json!({"steps": steps});
        for (reference, input) in inputs.iter() {
            request[format!("prepared_with_{}", reference.field())] = json!(input);
        }
        Ok(Prepared {
            job: DoubleJob { steps, behaviour },
            request,
        })
    }

    fn run(&self, job: &DoubleJob, output: &Path, control: &JobControl) -> Result<(), JobError> {
        self.runs.lock().unwrap().push(job.steps);
        control.enter_stage("denoise");
        for step in 0..job.steps {
            if control.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            control.set_percent(100.0 * step as f64 / job.steps as f64);
            std::thread::sleep(Duration::from_millis(2));
        }
        match job.behaviour {
            Behaviour::Complete => {}
            Behaviour::Fail => return Err(JobError::Failed("the double failed".into())),
            Behaviour::Panic => panic!("the double panicked"),
            Behaviour::WriteNothing => return Ok(()),
            Behaviour::BlockUntilCancelled => loop {
                if control.is_cancelled() {
                    return Err(JobError::Cancelled);
                }
                control.set_percent(50.0);
                std::thread::sleep(Duration::from_millis(1));
            },
            Behaviour::BlockUntilReleased => {
                control.enter_stage("long_step");
                while !self.release.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if control.is_cancelled() {
                    return Err(JobError::Cancelled);
                }
            }
        }
        control.enter_stage("write");
        fs_err::write(output, b"mp4").map_err(|e| JobError::Failed(e.to_string()))
    }
}

fn start(max_queue: usize, retention: Retention) -> (tempfile::TempDir, Queue<Double>) {
    let directory = tempfile::tempdir().unwrap();
    let queue = start_in(
        &directory.path().join("videos"),
        max_queue,
        Double::new(1000),
        retention,
    );
    (directory, queue)
}

fn start_in(
    videos: &Path,
    max_queue: usize,
    double: Double,
    retention: Retention,
) -> Queue<Double> {
    Queue::start(
        double,
        QueueConfig {
            model: "double".into(),
            max_queue,
            videos: videos.to_path_buf(),
            retention,
        },
        0.5,
    )
    .unwrap()
}

fn keep_all() -> Retention {
    Retention {
        max_jobs: 100,
        max_age: Duration::from_secs(3600),
    }
}

fn wait_for(queue: &Queue<Double>, id: &str, status: Status) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = queue.get(id).expect("job kept");
        if view.status == status {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stayed {:?}, expected {status:?}",
            view.status
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_job_runs_to_completion_with_timings_and_a_video() {
    let (_directory, queue) = start(4, keep_all());
    let submitted = queue.submit(json!({"steps": 5}), Vec::new()).unwrap();
    assert_eq!(submitted.status, Status::Queued);
    assert_eq!(submitted.progress, 0);
    assert!(submitted.id.starts_with("video_") && submitted.id.len() == 30);
    assert_eq!(submitted.request["steps"], 5);
    let done = wait_for(&queue, &submitted.id, Status::Completed);
    assert_eq!(done.progress, 100);
    assert!(done.error.is_none());
    assert_eq!(
        done.timings
            .stages
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["denoise", "write"]
    );
    assert!(
        done.timings.stages["denoise"] >= 0.010,
        "{:?}",
        done.timings
    );
    assert!(
        done.completed_at.is_some() && done.expires_at == Some(done.completed_at.unwrap() + 3600)
    );
    let video = queue.video(&submitted.id).unwrap();
    assert_eq!(fs_err::read(&video).unwrap(), b"mp4");
    let metrics = queue.metrics();
    assert_eq!(metrics.finished_total[&Status::Completed], 1);
    assert_eq!(metrics.stages["denoise"].count, 1);
    assert_eq!(metrics.model_load_seconds, 0.5);
}

#[test]
fn an_invalid_request_is_refused_naming_the_field() {
    let (_directory, queue) = start(4, keep_all());
    let refused = queue.submit(json!({"steps": 0}), Vec::new()).unwrap_err();
    match refused {
        SubmitError::Invalid(error) => assert_eq!(error.field.as_deref(), Some("steps")),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(queue.list().is_empty());
    assert_eq!(queue.metrics().rejected_invalid, 1);
}

#[test]
fn a_full_queue_refuses_and_cancels_free_a_place() {
    let (_directory, queue) = start(1, keep_all());
    let running = queue
        .submit(json!({"behaviour": "block"}), Vec::new())
        .unwrap();
    wait_for(&queue, &running.id, Status::InProgress);
    let waiting = queue.submit(json!({}), Vec::new()).unwrap();
    assert_eq!(
        queue.submit(json!({}), Vec::new()).unwrap_err(),
        SubmitError::Full { max_queue: 1 }
    );
    assert_eq!(queue.metrics().rejected_full, 1);
    assert_eq!(queue.metrics().queue_depth, 1);

    match queue.cancel(&waiting.id) {
        Some(CancelOutcome::Cancelled(view)) => {
            assert_eq!(view.status, Status::Cancelled);
            assert_eq!(view.error.unwrap().code, "cancelled");
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(queue.metrics().queue_depth, 0);
    let next = queue.submit(json!({}), Vec::new()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.get(&running.id).unwrap().progress != 50 {
        assert!(Instant::now() < deadline, "the running job never blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
    match queue.cancel(&running.id) {
        Some(CancelOutcome::Requested(view)) => {
            assert_eq!(view.status, Status::InProgress);
            assert!(view.cancel_requested);
        }
        other => panic!("expected Requested, got {other:?}"),
    }
    let cancelled = wait_for(&queue, &running.id, Status::Cancelled);
    assert_eq!(cancelled.progress, 50);
    assert!(!queue.videos_dir_has(&running.id));
    wait_for(&queue, &next.id, Status::Completed);
    assert_eq!(
        queue.video(&running.id).unwrap_err(),
        ContentError::NotReady {
            id: running.id.clone(),
            status: Status::Cancelled
        }
    );
    assert_eq!(queue.cancel("video_unknown"), None);
}

#[test]
fn failing_and_panicking_jobs_are_recorded_and_the_worker_goes_on() {
    let (_directory, queue) = start(8, keep_all());
    let failing = queue
        .submit(json!({"behaviour": "fail"}), Vec::new())
        .unwrap();
    let panicking = queue
        .submit(json!({"behaviour": "panic"}), Vec::new())
        .unwrap();
    let silent = queue
        .submit(json!({"behaviour": "write_nothing"}), Vec::new())
        .unwrap();
    let fine = queue.submit(json!({}), Vec::new()).unwrap();
    wait_for(&queue, &fine.id, Status::Completed);
    let failure = |id: &str| queue.get(id).unwrap().error.unwrap();
    assert_eq!(failure(&failing.id).code, "job_failed");
    assert_eq!(failure(&failing.id).message, "the double failed");
    assert_eq!(failure(&panicking.id).code, "job_panicked");
    assert_eq!(
        failure(&panicking.id).message,
        "the job panicked: the double panicked"
    );
    assert_eq!(failure(&silent.id).message, "the job wrote no video");
    assert_eq!(queue.metrics().finished_total[&Status::Failed], 3);
}

#[test]
fn retention_deletes_the_oldest_finished_jobs_and_their_videos() {
    let (_directory, queue) = start(
        8,
        Retention {
            max_jobs: 2,
            max_age: Duration::from_secs(3600),
        },
    );
    let ids: Vec<String> = (0..3)
        .map(|_| queue.submit(json!({"steps": 1}), Vec::new()).unwrap().id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.get(&ids[2]).map(|v| v.status) != Some(Status::Completed) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(queue.get(&ids[0]), None);
    assert!(!queue.videos_dir_has(&ids[0]));
    assert!(queue.videos_dir_has(&ids[1]) && queue.videos_dir_has(&ids[2]));

    match queue.cancel(&ids[1]) {
        Some(CancelOutcome::Deleted) => {}
        other => panic!("expected Deleted, got {other:?}"),
    }
    assert!(!queue.videos_dir_has(&ids[1]));
    assert_eq!(queue.list().len(), 1);
}

#[test]
fn finished_jobs_expire_after_the_retention_age() {
    let (_directory, queue) = start(
        8,
        Retention {
            max_jobs: 100,
            max_age: Duration::from_millis(200),
        },
    );
    let id = queue.submit(json!({"steps": 1}), Vec::new()).unwrap().id;
    wait_for(&queue, &id, Status::Completed);
    assert!(queue.videos_dir_has(&id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.get(&id).is_some() {
        assert!(Instant::now() < deadline, "the job never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!queue.videos_dir_has(&id));
}

#[test]
fn shutdown_keeps_waiting_jobs_queued_and_queues_the_running_one_again_after_the_grace() {
    let (directory, queue) = start(8, keep_all());
    let running = queue
        .submit(json!({"behaviour": "block"}), Vec::new())
        .unwrap();
    wait_for(&queue, &running.id, Status::InProgress);
    let waiting = queue.submit(json!({}), Vec::new()).unwrap();
    let outcome = queue.shutdown(Duration::from_millis(50), Duration::from_secs(10));
    assert_eq!(outcome, ShutdownOutcome::InterruptedRunning);
    let interrupted = queue.get(&running.id).unwrap();
    assert_eq!(
        (
            interrupted.status,
            interrupted.progress,
            interrupted.restarts,
            interrupted.started_at,
            interrupted.error
        ),
        (Status::Queued, 0, 1, None, None)
    );
    let stored = store::load(&directory.path().join("videos")).unwrap().jobs;
    let stored = stored.iter().find(|job| job.id == running.id).unwrap();
    assert_eq!(
        (stored.status, stored.progress, stored.restarts),
        (Status::Queued, 0, 1)
    );
    assert_eq!(queue.get(&waiting.id).unwrap().status, Status::Queued);
    assert_eq!(*queue.shared.executor.runs.lock().unwrap(), [3]);
    assert_eq!(
        queue.submit(json!({}), Vec::new()).unwrap_err(),
        SubmitError::ShuttingDown
    );
    assert!(!queue.is_accepting());
}

#[test]
fn shutdown_lets_a_short_running_job_finish() {
    let (_directory, queue) = start(8, keep_all());
    let running = queue.submit(json!({"steps": 20}), Vec::new()).unwrap();
    wait_for(&queue, &running.id, Status::InProgress);
    let outcome = queue.shutdown(Duration::from_secs(10), Duration::from_secs(10));
    assert_eq!(outcome, ShutdownOutcome::Drained);
    assert_eq!(queue.get(&running.id).unwrap().status, Status::Completed);
}

/// A record of job `id` found `in_progress` at start-up (the server crashed while it ran), made
/// from the finished record `like`.
fn crashed_record(videos: &Path, like: &StoredJob, id: &str) -> StoredJob {
    let mut record = like.clone();
    record.id = id.into();
    record.status = Status::InProgress;
    record.progress = 40;
    record.finished_at = None;
    record.video = None;
    store::save(videos, &record).unwrap();
    fs_err::write(videos.join(format!(".{id}.mp4.Xy12Ab.partial")), b"ha").unwrap();
    record
}

#[test]
fn a_restarted_queue_keeps_finished_jobs_and_runs_queued_ones_in_their_order() {
    let directory = tempfile::tempdir().unwrap();
    let videos = directory.path().join("videos");
    let first = start_in(&videos, 8, Double::new(1000), keep_all());
    let completed = first.submit(json!({"steps": 4}), Vec::new()).unwrap();
    let failed = first
        .submit(json!({"behaviour": "fail"}), Vec::new())
        .unwrap();
    wait_for(&first, &failed.id, Status::Failed);
    let completed = wait_for(&first, &completed.id, Status::Completed);
    let failed = first.get(&failed.id).unwrap();
    let running = first
        .submit(json!({"behaviour": "block"}), Vec::new())
        .unwrap();
    wait_for(&first, &running.id, Status::InProgress);
    let queued: Vec<String> = [7, 2, 50, 5]
        .into_iter()
        .map(|steps| {
            first
                .submit(json!({"steps": steps}), Vec::new())
                .unwrap()
                .id
        })
        .collect();
    let cancelled = first.submit(json!({}), Vec::new()).unwrap();
    first.cancel(&cancelled.id).unwrap();
    let cancelled = first.get(&cancelled.id).unwrap();
    assert_eq!(
        first.shutdown(Duration::from_millis(20), Duration::from_secs(10)),
        ShutdownOutcome::InterruptedRunning
    );
    drop(first);
    let like = store::load(&videos).unwrap().jobs[0].clone();
    assert_eq!(like.id, completed.id);
    let written = "video_00000000000000000000c4a5";
    crashed_record(&videos, &like, written);
    fs_err::write(videos.join(format!("{written}.mp4")), b"mp4").unwrap();
    let rerun = "video_00000000000000000000c4a6";
    crashed_record(&videos, &like, rerun);
    let asked_to_stop = "video_00000000000000000000c4a7";
    let mut record = crashed_record(&videos, &like, asked_to_stop);
    record.cancel_requested = true;
    store::save(&videos, &record).unwrap();
    let too_often = "video_00000000000000000000c4a8";
    let mut record = crashed_record(&videos, &like, too_often);
    record.restarts = MAX_RESTARTS;
    store::save(&videos, &record).unwrap();
    let upload_gone = "video_00000000000000000000c4a9";
    let mut record = crashed_record(&videos, &like, upload_gone);
    record.input_reference = Some(Reference::FirstFrame.file_name(upload_gone, "png"));
    fs_err::write(
        videos.join(Reference::FirstFrame.file_name(upload_gone, "png")),
        b"kept",
    )
    .unwrap();
    record.video_reference = Some(Reference::Video.file_name(upload_gone, "mp4"));
    store::save(&videos, &record).unwrap();
    // Long jobs keep their finished windows in `<id>.mp4.work`: the jobs that will not run again
    // lose theirs at the restart; a folder of the same name without the runtime's marker stays.
    let work_dir = |id: &str| videos.join(format!("{id}.mp4.work"));
    for id in [written, asked_to_stop, too_often, upload_gone] {
        // What a killed job leaves: the marker, the job record and a finished window.
        let kept = skyreels_runtime::pipeline::generate::WorkDir::open(&work_dir(id), "job");
        fs_err::write(work_dir(id).join("window-0000.safetensors"), b"window").unwrap();
        drop(kept.unwrap());
        assert!(work_dir(id).join("window-0000.safetensors").is_file());
    }
    // A file someone put into a job's work directory is not the job's: it stays, and the folder.
    fs_err::write(work_dir(upload_gone).join("notes.txt"), b"mine").unwrap();
    let foreign = work_dir(rerun);
    fs_err::create_dir_all(&foreign).unwrap();
    fs_err::write(foreign.join("notes.txt"), b"mine").unwrap();

    let second = start_in(&videos, 8, Double::new(10), keep_all());
    for id in [written, asked_to_stop, too_often] {
        assert!(!work_dir(id).exists(), "{id}'s work directory is left");
    }
    let left: Vec<String> = fs_err::read_dir(work_dir(upload_gone))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["notes.txt"], "only the job's own files are deleted");
    assert!(
        foreign.join("notes.txt").is_file(),
        "a foreign folder is kept"
    );
    assert_eq!(second.get(&completed.id).unwrap(), completed);
    assert_eq!(
        fs_err::read(second.video(&completed.id).unwrap()).unwrap(),
        b"mp4"
    );
    assert_eq!(second.get(&failed.id).unwrap(), failed);
    assert_eq!(second.get(&cancelled.id).unwrap(), cancelled);
    let view = second.get(written).unwrap();
    assert_eq!(
        (view.status, view.progress, view.error),
        (Status::Completed, 100, None),
        "a video written before the crash is kept"
    );
    assert_eq!(
        fs_err::read(second.video(written).unwrap()).unwrap(),
        b"mp4"
    );
    let view = second.get(asked_to_stop).unwrap();
    assert_eq!(
        (view.status, view.error),
        (
            Status::Cancelled,
            Some(failure(
                "cancelled",
                "cancelled while running (the server stopped before the job did)"
            ))
        )
    );
    let view = second.get(too_often).unwrap();
    assert_eq!(
        (view.status, view.error),
        (Status::Failed, Some(failure("interrupted", INTERRUPTED)))
    );
    assert!(INTERRUPTED.contains(&format!("ran {} times", MAX_RESTARTS + 1)));
    let view = second.get(upload_gone).unwrap();
    assert_eq!(
        (view.status, view.error),
        (
            Status::Failed,
            Some(failure(
                "input_missing",
                format!(
                    "its uploaded video_reference {upload_gone}.video.mp4 is no longer in the videos directory\n  fix: submit the request again with the upload"
                )
            ))
        )
    );
    for id in [written, rerun, asked_to_stop, too_often, upload_gone] {
        assert!(
            !videos.join(format!(".{id}.mp4.Xy12Ab.partial")).exists(),
            "{id}'s unfinished video is deleted"
        );
    }
    let view = wait_for(&second, rerun, Status::Completed);
    assert_eq!((view.progress, view.restarts), (100, 1));
    let restarted = wait_for(&second, &running.id, Status::InProgress);
    assert_eq!(restarted.restarts, 1);
    assert!(matches!(
        second.cancel(&running.id),
        Some(CancelOutcome::Requested(_))
    ));
    wait_for(&second, &running.id, Status::Cancelled);
    for id in [&queued[0], &queued[1], &queued[3]] {
        assert_eq!(wait_for(&second, id, Status::Completed).progress, 100);
    }
    assert_eq!(
        *second.shared.executor.runs.lock().unwrap(),
        [4, 3, 7, 2, 5],
        "the crashed job and the one the shutdown stopped run again first, in their order"
    );
    let refused = second.get(&queued[2]).unwrap();
    assert_eq!(refused.status, Status::Failed);
    let refusal = refused.error.unwrap();
    assert_eq!(refusal.code, "refused_after_restart");
    assert_eq!(
        refusal.message,
        "the restarted server no longer accepts this request (field `steps`): steps must be an integer from 1 to 10, got 50"
    );
    let order: Vec<String> = second.list().into_iter().map(|view| view.id).collect();
    let mut expected: Vec<String> = [written, rerun, asked_to_stop, too_often, upload_gone]
        .map(String::from)
        .to_vec();
    expected.extend([completed.id.clone(), failed.id.clone(), running.id.clone()]);
    expected.extend(queued.iter().cloned());
    expected.push(cancelled.id.clone());
    assert_eq!(order, expected);
    drop(second);

    let third = start_in(&videos, 8, Double::new(10), keep_all());
    assert_eq!(third.get(&queued[0]).unwrap().status, Status::Completed);
    assert_eq!(third.get(rerun).unwrap().status, Status::Completed);
    assert_eq!(third.get(&running.id).unwrap().status, Status::Cancelled);
    assert_eq!(third.metrics().queue_depth, 0);
    assert!(third.shared.executor.runs.lock().unwrap().is_empty());
}

#[test]
fn a_cancel_asked_of_a_running_job_is_in_its_record_before_the_job_stops() {
    let (directory, queue) = start(8, keep_all());
    let videos = directory.path().join("videos");
    let running = queue
        .submit(json!({"behaviour": "block_until_released"}), Vec::new())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.get(&running.id).unwrap().stage != Some("long_step") {
        assert!(
            Instant::now() < deadline,
            "the job never reached its long step"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(matches!(
        queue.cancel(&running.id),
        Some(CancelOutcome::Requested(_))
    ));
    let stored = &store::load(&videos).unwrap().jobs[0];
    assert_eq!(
        (stored.status, stored.cancel_requested),
        (Status::InProgress, true),
        "a server killed now cancels the job at its next start instead of running it again"
    );
    queue
        .shared
        .executor
        .release
        .store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(&queue, &running.id, Status::Cancelled);
    let stored = &store::load(&videos).unwrap().jobs[0];
    assert_eq!(
        (stored.status, stored.cancel_requested),
        (Status::Cancelled, false)
    );
}

#[test]
fn retention_applies_to_restored_jobs_and_deletes_their_records_and_videos() {
    let directory = tempfile::tempdir().unwrap();
    let videos = directory.path().join("videos");
    let first = start_in(&videos, 8, Double::new(10), keep_all());
    let ids: Vec<String> = (0..3)
        .map(|_| first.submit(json!({"steps": 1}), Vec::new()).unwrap().id)
        .collect();
    wait_for(&first, &ids[2], Status::Completed);
    drop(first);
    let files = |id: &str| {
        [
            videos.join(format!("{id}.mp4")).exists(),
            store::record_path(&videos, id).exists(),
        ]
    };
    assert_eq!(files(&ids[0]), [true, true]);

    let two = Retention {
        max_jobs: 2,
        max_age: Duration::from_secs(3600),
    };
    let second = start_in(&videos, 8, Double::new(10), two);
    assert_eq!(second.get(&ids[0]), None);
    assert_eq!(files(&ids[0]), [false, false]);
    assert_eq!(files(&ids[1]), [true, true]);
    assert_eq!(second.list().len(), 2);
    drop(second);

    std::thread::sleep(Duration::from_millis(30));
    let young = Retention {
        max_jobs: 100,
        max_age: Duration::from_millis(20),
    };
    let third = start_in(&videos, 8, Double::new(10), young);
    assert!(third.list().is_empty());
    assert_eq!(files(&ids[1]), [false, false]);
    assert_eq!(files(&ids[2]), [false, false]);
    assert!(fs_err::read_dir(&videos).unwrap().next().is_none());
}

#[test]
fn a_restored_completed_job_whose_video_is_gone_is_failed() {
    let directory = tempfile::tempdir().unwrap();
    let videos = directory.path().join("videos");
    let first = start_in(&videos, 8, Double::new(10), keep_all());
    let id = first.submit(json!({"steps": 1}), Vec::new()).unwrap().id;
    wait_for(&first, &id, Status::Completed);
    drop(first);
    fs_err::remove_file(videos.join(format!("{id}.mp4"))).unwrap();

    let second = start_in(&videos, 8, Double::new(10), keep_all());
    let view = second.get(&id).unwrap();
    assert_eq!(view.status, Status::Failed);
    assert_eq!(
        view.error,
        Some(failure(
            "video_missing",
            format!(
                "its video {id}.mp4 is no longer in the videos directory\n  fix: submit the request again"
            )
        ))
    );
    assert_eq!(
        second.video(&id).unwrap_err(),
        ContentError::NotReady {
            id: id.clone(),
            status: Status::Failed
        }
    );
    let stored = store::load(&videos).unwrap().jobs;
    assert_eq!(
        (stored[0].status, stored[0].video.as_deref()),
        (Status::Failed, None)
    );
}

impl Queue<Double> {
    fn videos_dir_has(&self, id: &str) -> bool {
        self.shared.video_path(id).exists()
    }
}

#[test]
fn an_upload_becomes_the_jobs_file_until_the_job_is_deleted_and_goes_at_once_when_refused() {
    let (directory, queue) = start(1, keep_all());
    let videos = directory.path().join("videos");
    let upload = |reference: Reference, extension: &'static str, bytes: &[u8]| {
        let path = queue.upload_path();
        assert_eq!(path.parent(), Some(videos.as_path()));
        fs_err::write(&path, bytes).unwrap();
        Upload {
            reference,
            path,
            extension,
        }
    };
    let first_frame = |bytes: &[u8]| upload(Reference::FirstFrame, "png", bytes);
    let refused = [
        first_frame(b"refused"),
        upload(Reference::Video, "mp4", b"refused video"),
    ];
    assert!(matches!(
        queue.submit(json!({"steps": 0}), refused.to_vec()),
        Err(SubmitError::Invalid(_))
    ));
    assert!(refused.iter().all(|upload| !upload.path.exists()));

    let uploads = vec![
        first_frame(b"first"),
        upload(Reference::LastFrame, "jpg", b"last"),
        upload(Reference::Video, "mp4", b"clip"),
    ];
    let running = queue
        .submit(json!({"behaviour": "block"}), uploads)
        .unwrap();
    let id = &running.id;
    for (field, name, bytes) in [
        ("input_reference", format!("{id}.input.png"), &b"first"[..]),
        (
            "last_frame_reference",
            format!("{id}.last_frame.jpg"),
            b"last",
        ),
        ("video_reference", format!("{id}.video.mp4"), b"clip"),
    ] {
        let input = videos.join(&name);
        assert_eq!(fs_err::read(&input).unwrap(), bytes);
        assert_eq!(
            running.request[&format!("prepared_with_{field}")],
            json!(input)
        );
        assert_eq!(running.request[field], name.as_str());
    }
    let stored = &store::load(&videos).unwrap().jobs[0];
    assert_eq!(
        (
            stored.input_reference.clone(),
            stored.last_frame_reference.clone(),
            stored.video_reference.clone()
        ),
        (
            Some(format!("{id}.input.png")),
            Some(format!("{id}.last_frame.jpg")),
            Some(format!("{id}.video.mp4"))
        )
    );
    wait_for(&queue, &running.id, Status::InProgress);
    let waiting = queue
        .submit(json!({}), vec![first_frame(b"second")])
        .unwrap();
    let full = first_frame(b"third");
    assert!(matches!(
        queue.submit(json!({}), vec![full.clone()]),
        Err(SubmitError::Full { max_queue: 1 })
    ));
    assert!(!full.path.exists());

    for job in [&waiting, &running] {
        queue.cancel(&job.id).unwrap();
        wait_for(&queue, &job.id, Status::Cancelled);
        assert!(
            videos.join(format!("{}.input.png", job.id)).is_file(),
            "a finished job keeps its upload"
        );
        assert_eq!(queue.cancel(&job.id), Some(CancelOutcome::Deleted));
    }
    let left: Vec<_> = fs_err::read_dir(&videos).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
