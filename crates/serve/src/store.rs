//! Job records on disk: one small JSON file per job (`video_<24 hex digits>.json`) beside its
//! video in the videos directory, so that a restarted server knows its jobs again. A record is
//! written to a temporary name and renamed; only files named like a job record are read back, and
//! one that is not a record this server wrote is skipped and left in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::queue::{JobFailure, Status, Timings};
use crate::reference::Reference;

/// The `object` every job record carries, to tell it from other JSON files.
pub const RECORD_OBJECT: &str = "skyreels.video_job";

/// The record layout this server writes and reads.
pub const RECORD_FORMAT: u32 = 1;

const RECORD_SUFFIX: &str = ".json";
const TEMPORARY_SUFFIX: &str = ".json.partial";
const UPLOAD_PREFIX: &str = ".upload-";
const UPLOAD_SUFFIX: &str = ".partial";

/// A job as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredJob {
    /// Always [`RECORD_OBJECT`].
    pub object: String,
    /// Always [`RECORD_FORMAT`].
    pub format: u32,
    /// The job's id (the file is `<id>.json`).
    pub id: String,
    /// The status when the record was written.
    pub status: Status,
    /// Percent done when the record was written.
    pub progress: u32,
    /// Unix seconds (with fractions, to keep the submission order) when the job was submitted.
    pub created_at: f64,
    /// Unix seconds when it started running.
    pub started_at: Option<f64>,
    /// Unix seconds when it finished.
    pub finished_at: Option<f64>,
    /// Where the time went, as far as known.
    pub timings: Timings,
    /// Why it failed or was cancelled.
    pub error: Option<JobFailure>,
    /// The video's file name in the videos directory (`<id>.mp4`), once completed.
    pub video: Option<String>,
    /// The uploaded first frame's file name in the videos directory (`<id>.input.png` or
    /// `<id>.input.jpg`), for a job submitted with an `input_reference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_reference: Option<String>,
    /// The uploaded last frame's file name (`<id>.last_frame.png` or `.jpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_reference: Option<String>,
    /// The uploaded video to extend's file name (`<id>.video.mp4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_reference: Option<String>,
    /// How many times the job was queued again because the server stopped while it ran.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Whether a client asked the running job to stop (a job found running at start-up with this
    /// set is cancelled, not queued again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The request as submitted (prepared again when a queued job is restored).
    pub submitted: serde_json::Value,
    /// The request with its defaults filled in, as shown to clients.
    pub request: serde_json::Map<String, serde_json::Value>,
}

impl StoredJob {
    /// The file name of the upload of kind `reference`, if the job has one.
    pub fn reference(&self, reference: Reference) -> Option<&str> {
        match reference {
            Reference::FirstFrame => self.input_reference.as_deref(),
            Reference::LastFrame => self.last_frame_reference.as_deref(),
            Reference::Video => self.video_reference.as_deref(),
        }
    }
}

/// Why a record could not be written, removed, or read back.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed (the error names the file).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not JSON of a job record.
    #[error("{path} is not a job record: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The file parses but is not a record this server wrote.
    #[error("{path} is not a job record of this server: {reason}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
}

/// A file named like a job record that was not loaded.
#[derive(Debug)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub error: StoreError,
}

/// What [`load`] found in the videos directory.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The records, oldest submission first.
    pub jobs: Vec<StoredJob>,
    /// Files named like records that are not records of this server (left in place).
    pub skipped: Vec<Skipped>,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// Whether `id` has the form of the ids this server gives (`video_` and 24 lowercase hex digits).
pub fn is_job_id(id: &str) -> bool {
    id.strip_prefix("video_").is_some_and(is_random_hex)
}

/// Whether `text` is the 24 lowercase hex digits of 12 random bytes (job ids, upload names).
fn is_random_hex(text: &str) -> bool {
    text.len() == 24
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The record file of job `id` in `directory`.
pub fn record_path(directory: &Path, id: &str) -> PathBuf {
    directory.join(format!("{id}{RECORD_SUFFIX}"))
}

/// The video file name of job `id`.
pub fn video_name(id: &str) -> String {
    format!("{id}.mp4")
}

/// A new temporary file name in the videos directory for an upload being received
/// (`.upload-<24 hex digits>.partial`); one left by a crash is deleted at the next start.
pub fn upload_temporary_name(random: [u8; 12]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{UPLOAD_PREFIX}{hex}{UPLOAD_SUFFIX}")
}

/// Unix seconds of `time`, with fractions.
pub fn unix_seconds_f64(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The time `seconds` after the Unix epoch; `None` unless a finite number ≥ 0.
pub fn time_of_unix_seconds(seconds: f64) -> Option<SystemTime> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|since| UNIX_EPOCH.checked_add(since))
}

/// Writes `job`'s record to `<id>.json.partial` in `directory`, then renames it to `<id>.json`.
pub fn save(directory: &Path, job: &StoredJob) -> std::io::Result<()> {
    let temporary = directory.join(format!("{}{TEMPORARY_SUFFIX}", job.id));
    let json = serde_json::to_vec_pretty(job).map_err(std::io::Error::other)?;
    fs_err::write(&temporary, json)?;
    fs_err::rename(&temporary, record_path(directory, &job.id))
}

/// Deletes job `id`'s record (a missing one is not an error).
pub fn remove(directory: &Path, id: &str) -> std::io::Result<()> {
    match fs_err::remove_file(record_path(directory, id)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Reads every `video_<hex>.json` record in `directory` (other files are not looked at), oldest
/// submission first; a record left half-written by a crash (`<id>.json.partial`) is deleted, and
/// so is an upload that was being received (`.upload-<24 hex digits>.partial`).
pub fn load(directory: &Path) -> std::io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut names: Vec<String> = Vec::new();
    for entry in fs_err::read_dir(directory)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    for name in names {
        if let Some(id) = name.strip_suffix(TEMPORARY_SUFFIX)
            && is_job_id(id)
        {
            remove_temporary(&directory.join(&name));
            continue;
        }
        // Only names this server gives its uploads: a user's `.upload-notes.partial` stays.
        if name
            .strip_prefix(UPLOAD_PREFIX)
            .and_then(|rest| rest.strip_suffix(UPLOAD_SUFFIX))
            .is_some_and(is_random_hex)
        {
            remove_temporary(&directory.join(&name));
            continue;
        }
        let Some(id) = name.strip_suffix(RECORD_SUFFIX) else {
            continue;
        };
        if !is_job_id(id) {
            continue;
        }
        let path = directory.join(&name);
        match read(&path, id) {
            Ok(job) => loaded.jobs.push(job),
            Err(error) => loaded.skipped.push(Skipped { path, error }),
        }
    }
    loaded
        .jobs
        .sort_by(|a, b| a.created_at.total_cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(loaded)
}

fn remove_temporary(path: &Path) {
    if let Err(error) = fs_err::remove_file(path) {
        tracing::warn!("cannot delete a half-written file: {error}");
    }
}

fn read(path: &Path, id: &str) -> Result<StoredJob, StoreError> {
    let bytes = fs_err::read(path)?;
    let job: StoredJob =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    let foreign = |reason: String| StoreError::Foreign {
        path: path.to_path_buf(),
        reason,
    };
    if job.object != RECORD_OBJECT {
        return Err(foreign(format!(
            "`object` is `{}`, not `{RECORD_OBJECT}`",
            job.object
        )));
    }
    if job.format != RECORD_FORMAT {
        return Err(foreign(format!(
            "record format {} (this server reads format {RECORD_FORMAT})",
            job.format
        )));
    }
    if job.id != id {
        return Err(foreign(format!(
            "it holds the record of `{}`, not of `{id}`",
            job.id
        )));
    }
    if let Some(video) = &job.video
        && *video != video_name(id)
    {
        return Err(foreign(format!(
            "its video `{video}` is not `{}`",
            video_name(id)
        )));
    }
    for reference in Reference::ALL {
        if let Some(name) = job.reference(reference)
            && !reference.is_file_name(id, name)
        {
            return Err(foreign(format!(
                "its {} `{name}` is not `{}`",
                reference.field(),
                reference.file_name(id, reference.extensions()[0])
            )));
        }
    }
    if job.status.is_finished() != job.finished_at.is_some()
        || (job.status == Status::Completed) != job.video.is_some()
    {
        return Err(foreign(format!(
            "a {} job with{} `finished_at` and with{} `video`",
            job.status.name(),
            if job.finished_at.is_some() { "" } else { "out" },
            if job.video.is_some() { "" } else { "out" },
        )));
    }
    let times = [Some(job.created_at), job.started_at, job.finished_at];
    if times
        .into_iter()
        .flatten()
        .any(|seconds| time_of_unix_seconds(seconds).is_none())
    {
        return Err(foreign("a time is not a number of Unix seconds ≥ 0".into()));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    const ID: &str = "video_0123456789abcdef01234567";

    fn job(id: &str, created_at: f64) -> StoredJob {
        StoredJob {
            object: RECORD_OBJECT.into(),
            format: RECORD_FORMAT,
            id: id.into(),
            status: Status::Completed,
            progress: 100,
            created_at,
            started_at: Some(created_at + 1.0),
            finished_at: Some(created_at + 3.5),
            timings: Timings {
                queued_seconds: 1.0,
                run_seconds: Some(2.5),
                stages: BTreeMap::from([("sampling".to_string(), 2.0)]),
            },
            error: None,
            video: Some(video_name(id)),
            input_reference: None,
            last_frame_reference: None,
            video_reference: None,
            restarts: 0,
            cancel_requested: false,
            submitted: json!({"prompt": "fox", "steps": 2}),
            request: json!({"prompt": "fox", "steps": 2})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    #[test]
    fn ids_are_video_and_24_lowercase_hex_digits() {
        assert!(is_job_id(ID));
        assert!(!is_job_id("video_0123456789ABCDEF01234567"));
        assert!(!is_job_id("video_0123456789abcdef0123456"));
        assert!(!is_job_id("video_../../etc/passwd000000"));
        assert!(!is_job_id("clip_0123456789abcdef01234567"));
    }

    #[test]
    fn records_round_trip_in_submission_order_and_foreign_files_are_skipped() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path();
        let later = "video_ffffffffffffffffffffff00";
        save(dir, &job(later, 1_700_000_000.75)).unwrap();
        save(dir, &job(ID, 1_700_000_000.25)).unwrap();
        fs_err::write(dir.join("notes.json"), "not ours").unwrap();
        fs_err::write(dir.join("video_aaaaaaaaaaaaaaaaaaaaaaaa.json"), "{trunc").unwrap();
        let mut other = job(ID, 1.0);
        other.object = "something.else".into();
        fs_err::write(
            dir.join("video_bbbbbbbbbbbbbbbbbbbbbbbb.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        let mut misnamed = job("video_cccccccccccccccccccccccc", 1.0);
        misnamed.video = Some("../../elsewhere.mp4".into());
        save(dir, &misnamed).unwrap();
        fs_err::write(dir.join(format!("{ID}.json.partial")), "{half").unwrap();
        let stale_upload = dir.join(upload_temporary_name([7; 12]));
        fs_err::write(&stale_upload, "half an upload").unwrap();
        let someone_elses = dir.join(".upload-notes.partial");
        fs_err::write(&someone_elses, "not the server's").unwrap();
        let mut elsewhere = job("video_dddddddddddddddddddddddd", 1.0);
        elsewhere.input_reference = Some("/etc/passwd".into());
        save(dir, &elsewhere).unwrap();
        let mut not_a_video = job("video_eeeeeeeeeeeeeeeeeeeeeeee", 1.0);
        not_a_video.video_reference =
            Some("video_eeeeeeeeeeeeeeeeeeeeeeee.video.safetensors".into());
        save(dir, &not_a_video).unwrap();
        let mut uploaded = job(later, 1_700_000_000.75);
        uploaded.input_reference = Some(Reference::FirstFrame.file_name(later, "jpg"));
        uploaded.last_frame_reference = Some(Reference::LastFrame.file_name(later, "png"));
        uploaded.video_reference = Some(Reference::Video.file_name(later, "mp4"));
        save(dir, &uploaded).unwrap();

        let loaded = load(dir).unwrap();
        let ids: Vec<&str> = loaded.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, [ID, later]);
        assert_eq!(loaded.jobs[0], job(ID, 1_700_000_000.25));
        assert_eq!(loaded.jobs[1], uploaded);
        assert!(
            !fs_err::read_to_string(record_path(dir, ID))
                .unwrap()
                .contains("input_reference"),
            "a job without an upload keeps the record layout of servers before uploads"
        );
        let restarted = json!({"restarts": 2, "cancel_requested": true});
        let mut record: serde_json::Value =
            serde_json::from_slice(&fs_err::read(record_path(dir, ID)).unwrap()).unwrap();
        for key in ["restarts", "cancel_requested"] {
            assert!(record.get(key).is_none(), "{key} is written only when set");
            record[key] = restarted[key].clone();
        }
        fs_err::write(record_path(dir, ID), record.to_string()).unwrap();
        let reread = &load(dir).unwrap().jobs[0];
        assert_eq!((reread.restarts, reread.cancel_requested), (2, true));
        let skipped: Vec<String> = loaded.skipped.iter().map(|s| s.error.to_string()).collect();
        assert_eq!(skipped.len(), 5, "{skipped:#?}");
        assert!(skipped[0].contains("video_aaaaaaaaaaaaaaaaaaaaaaaa.json is not a job record: "));
        assert!(skipped[1].ends_with(
            "video_bbbbbbbbbbbbbbbbbbbbbbbb.json is not a job record of this server: `object` is `something.else`, not `skyreels.video_job`"
        ));
        assert!(skipped[2].ends_with(
            "its video `../../elsewhere.mp4` is not `video_cccccccccccccccccccccccc.mp4`"
        ));
        assert!(skipped[3].ends_with(
            "its input_reference `/etc/passwd` is not `video_dddddddddddddddddddddddd.input.png`"
        ));
        assert!(skipped[4].ends_with(
            "its video_reference `video_eeeeeeeeeeeeeeeeeeeeeeee.video.safetensors` is not `video_eeeeeeeeeeeeeeeeeeeeeeee.video.mp4`"
        ));
        assert!(!stale_upload.exists());
        assert!(
            someone_elses.exists(),
            "only names the server gives are deleted"
        );
        assert!(dir.join("notes.json").exists());
        assert!(dir.join("video_aaaaaaaaaaaaaaaaaaaaaaaa.json").exists());
        assert!(!dir.join(format!("{ID}.json.partial")).exists());

        remove(dir, ID).unwrap();
        remove(dir, ID).unwrap();
        assert!(!record_path(dir, ID).exists());
    }
}
