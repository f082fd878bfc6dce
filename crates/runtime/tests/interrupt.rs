//! SIGINT and SIGTERM during `skyreels generate`: the process exits with 128 + the signal and says
//! so, leaves no output and no partial file, keeps the windows its work directory saved (the same
//! command resumes from them to the uninterrupted output), and a supervisor of CFG-parallel ranks
//! passes the signal on, so no rank outlives it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{TinyModel, export_tiny_engine, long_video_command, wait_for};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

/// The tests' long video with a work directory.
fn long_video(engine: &Path, out: &Path) -> Command {
    let mut command = long_video_command(engine, out);
    command.arg("--work-dir").arg(work_dir(out));
    command.env("RUST_BACKTRACE", "0");
    command
}

fn work_dir(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.work", out.display()))
}

fn names_in(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn send(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_interrupted_long_video_keeps_its_windows_and_resumes_to_the_same_output() {
    let root = tempfile::tempdir().unwrap();
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    export_tiny_engine(&engine, TinyModel::DiffusionForcing);
    let reference = root.path().join("reference.mp4");
    let output = long_video(&engine, &reference).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    for (signal, number) in [("INT", 2), ("TERM", 15)] {
        // A job that finishes between its first saved window and the signal (a slow, loaded
        // machine) is run again in a fresh directory.
        let mut interrupted = None;
        for attempt in 0..5 {
            let directory = root.path().join(format!("{signal}-{attempt}"));
            fs_err::create_dir(&directory).unwrap();
            let out = directory.join("fox.mp4");
            let mut child = long_video(&engine, &out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            wait_for(&mut child, &work_dir(&out).join("window-0000.safetensors"));
            send(signal, child.id());
            let output = child.wait_with_output().unwrap();
            if !output.status.success() {
                interrupted = Some((directory, out, output));
                break;
            }
        }
        let (directory, out, output) =
            interrupted.unwrap_or_else(|| panic!("every job finished before SIG{signal}"));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(128 + number), "{message}");
        assert!(
            message.contains(&format!("interrupted by SIG{signal}"))
                && message.contains("resumes from its saved windows"),
            "{message}"
        );
        assert!(!message.contains("panicked"), "{message}");
        assert_eq!(
            names_in(&directory),
            ["fox.mp4.work"],
            "SIG{signal}: only the work directory stays beside --out"
        );
        assert!(
            names_in(&work_dir(&out))
                .iter()
                .all(|name| !name.ends_with(".partial")),
            "SIG{signal} left a partial file in the work directory"
        );

        let output = long_video(&engine, &out).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(
            summary["windows_resumed"].as_u64().unwrap() >= 1,
            "{summary}"
        );
        assert_eq!(
            fs_err::read(&out).unwrap(),
            fs_err::read(&reference).unwrap()
        );
    }
}

/// The processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(command_line) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&command_line).contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_signal_to_the_supervisor_reaches_every_rank() {
    let root = tempfile::tempdir().unwrap();
    let engine = root.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    export_tiny_engine(&engine, TinyModel::DiffusionForcing);
    let out = root.path().join("supervised.mp4");
    let marker = out.to_string_lossy().into_owned();
    let mut child = Command::new(BINARY)
        .args(["generate", "--engines"])
        .arg(&engine)
        .args([
            "--prompt",
            "a fox in the snow",
            // Minutes of sampling, so the signal always lands while the ranks run.
            "--num-frames",
            "33",
            "--height",
            "64",
            "--width",
            "96",
            "--steps",
            "1000",
            "--threads",
            "1",
            "--cfg-parallel",
            "--out",
        ])
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // The supervisor and its two ranks all carry --out on their command lines.
    while processes_mentioning(&marker).len() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no ranks started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    send("TERM", child.id());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(128 + 15), "{}", stderr(&output));
    let started = Instant::now();
    while !processes_mentioning(&marker).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ranks outlived their supervisor: {:?}",
            processes_mentioning(&marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!out.exists());
    assert_eq!(names_in(root.path()), ["engine"]);
}
