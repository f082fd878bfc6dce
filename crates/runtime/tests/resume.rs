//! A long-video job killed with SIGKILL after its second window and rerun with the same arguments
//! resumes from the work directory and writes output identical to an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{TinyModel, export_tiny_engine, long_video_command, wait_for};

/// The built-in tiny model, exported into `out`.
fn tiny_engine(out: &Path) {
    export_tiny_engine(out, TinyModel::DiffusionForcing);
}

fn generate_command(engine: &Path, out: &Path) -> Command {
    let mut command = long_video_command(engine, out);
    command
        .arg("--save-latents")
        .arg(out.with_extension("safetensors"));
    command
}

fn work_dir(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.work", out.display()))
}

/// Starts the long job writing `out` and kills it once its second window is saved.
fn kill_after_second_window(engine: &Path, out: &Path) {
    let mut child = generate_command(engine, out).spawn().expect("spawn");
    wait_for(&mut child, &work_dir(out).join("window-0001.safetensors"));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(!out.exists(), "no output file after a kill");
}

/// A long video killed on one rank resumes on several: rank 0 reads the finished windows from
/// its work directory and shares them, every rank skips the same windows, and the output is the
/// uninterrupted one-rank output (CFG parallel and sequence parallel are exact on the CPU).
#[test]
fn a_run_on_several_ranks_resumes_finished_windows_to_the_same_output() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).expect("engine dir");
    tiny_engine(&engine);
    let reference = root.path().join("reference.mp4");
    let status = generate_command(&engine, &reference).status().expect("run");
    assert!(status.success());
    for (name, ranks) in [
        ("cfg", &["--cfg-parallel"][..]),
        ("ulysses", &["--ulysses-degree", "2"][..]),
    ] {
        let out = root.path().join(format!("{name}.mp4"));
        kill_after_second_window(&engine, &out);
        let output = generate_command(&engine, &out)
            .args(ranks)
            .output()
            .expect("rerun on two ranks");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {stderr}");
        let summary: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("json summary");
        assert_eq!(summary["windows_resumed"], 2, "{name}: {summary}");
        assert_eq!(
            fs_err::read(&out).expect("mp4"),
            fs_err::read(&reference).expect("mp4"),
            "{name}"
        );
        assert_eq!(
            fs_err::read(out.with_extension("safetensors")).expect("latents"),
            fs_err::read(reference.with_extension("safetensors")).expect("latents"),
            "{name}"
        );
        assert!(
            !work_dir(&out).exists(),
            "{name}: the work directory is removed"
        );
    }
}

#[test]
fn a_killed_long_video_resumes_to_the_same_output() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).expect("engine dir");
    tiny_engine(&engine);

    let reference = root.path().join("reference.mp4");
    let status = generate_command(&engine, &reference).status().expect("run");
    assert!(status.success());
    assert!(
        !work_dir(&reference).exists(),
        "the work directory is removed after success"
    );

    let resumed = root.path().join("resumed.mp4");
    kill_after_second_window(&engine, &resumed);

    let output = generate_command(&engine, &resumed).output().expect("rerun");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json summary");
    assert_eq!(summary["windows_resumed"], 2, "{summary}");
    assert_eq!(
        fs_err::read(&resumed).expect("mp4"),
        fs_err::read(&reference).expect("mp4")
    );
    assert_eq!(
        fs_err::read(resumed.with_extension("safetensors")).expect("latents"),
        fs_err::read(reference.with_extension("safetensors")).expect("latents")
    );
}

#[test]
fn a_work_directory_of_another_job_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).expect("engine dir");
    tiny_engine(&engine);
    let out = root.path().join("video.mp4");
    fs_err::create_dir(work_dir(&out)).expect("work dir");
    fs_err::write(work_dir(&out).join("job.json"), "another job").expect("job");
    fs_err::write(
        work_dir(&out).join(".skyreels-owner"),
        "skyreels work directory\npid 4000000\n",
    )
    .expect("marker of a job that has ended");
    let output = generate_command(&engine, &out).output().expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to another job") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Two runs of one job at once: the second is refused at once naming the first's pid, instead of
/// sampling every window again and failing at the end.
#[test]
fn a_work_directory_in_use_is_refused_at_once_naming_the_pid() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).expect("engine dir");
    tiny_engine(&engine);
    let out = root.path().join("video.mp4");
    let mut first = generate_command(&engine, &out).spawn().expect("spawn");
    wait_for(&mut first, &work_dir(&out).join("job.json"));
    let second_started = Instant::now();
    let output = generate_command(&engine, &out)
        .output()
        .expect("second run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let still_running = first.try_wait().expect("poll").is_none();
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    assert!(
        still_running,
        "the first job ended before the second was refused; the check proves nothing"
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("is in use by pid {}", first.id())) && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(
        second_started.elapsed() < Duration::from_secs(60),
        "the second job was not refused at once"
    );
}
