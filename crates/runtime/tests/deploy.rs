//! Batch files and snapshot regression testing through the `skyreels` binary on the tiny engine.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{TinyModel, export_tiny_engine, export_tiny_engine_with};

fn skyreels(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skyreels"));
    command.args(args);
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    command
        .args(["--threads", "1"])
        .output()
        .expect("run skyreels")
}

/// The tiny engine (DiT weights from `dit_seed`; 0 is `skyreels-export tiny`'s), exported into `dir`.
fn export_engine(dir: &Path, dit_seed: u64) {
    fs_err::create_dir_all(dir).unwrap();
    match dit_seed {
        0 => export_tiny_engine(dir, TinyModel::DiffusionForcing),
        seed => export_tiny_engine_with(dir, TinyModel::DiffusionForcing, seed, None),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_batch_writes_one_video_and_one_result_per_line_and_skips_a_failing_line() {
    let scratch = tempfile::tempdir().unwrap();
    let engine = scratch.path().join("engine");
    export_engine(&engine, 0);
    let requests = scratch.path().join("requests.jsonl");
    fs_err::write(
        &requests,
        [
            r#"{"prompt": "a red fox running through fresh snow", "size": "96x64", "num_frames": 17, "steps": 3, "seed": 1}"#,
            r#"{"prompt": "a cat", "size": "95x64", "num_frames": 17, "steps": 3}"#,
            "",
            r#"{"prompt": "a cat on a wall", "size": "64x64", "num_frames": 9, "steps": 2, "seed": 2}"#,
            r#"{"prompt": "broken"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out_dir = scratch.path().join("videos");
    let output = skyreels(
        &["generate"],
        &[
            ("--engines", &engine),
            ("--batch", &requests),
            ("--out-dir", &out_dir),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 of 4 requests failed (lines 2, 5)"),
        "{stderr}"
    );
    let results: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON result line"))
        .collect();
    let lines: Vec<(u64, &str)> = results
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            (1, "completed"),
            (2, "failed"),
            (4, "completed"),
            (5, "failed")
        ]
    );
    assert_eq!(results[1]["error"]["field"], "size");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fix:")
    );
    assert_eq!(results[0]["frames"], 17);
    assert_eq!(results[2]["width"], 64);
    let first = skyreels_runtime::output::read_mp4(&out_dir.join("0001.mp4")).unwrap();
    assert_eq!(
        (first.num_frames(), first.width(), first.height()),
        (17, 96, 64)
    );
    let fourth = skyreels_runtime::output::read_mp4(&out_dir.join("0004.mp4")).unwrap();
    assert_eq!((fourth.num_frames(), fourth.width()), (9, 64));
    let mut written: Vec<String> = fs_err::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["0001.mp4", "0004.mp4"]);

    let with_flag = skyreels(
        &["generate", "--steps", "3"],
        &[
            ("--engines", &engine),
            ("--batch", &requests),
            ("--out-dir", &out_dir),
        ],
    );
    let stderr = text(&with_flag.stderr);
    assert!(
        !with_flag.status.success() && stderr.contains("--steps is a request flag"),
        "{stderr}"
    );
}

#[test]
fn a_snapshot_passes_on_its_engine_and_fails_on_another_naming_the_cases() {
    let scratch = tempfile::tempdir().unwrap();
    let engine = scratch.path().join("engine");
    export_engine(&engine, 0);
    let other = scratch.path().join("other-engine");
    export_engine(&other, 1);
    let cases = scratch.path().join("cases.yaml");
    fs_err::write(
        &cases,
        "fox:\n  prompt: a red fox running through fresh snow\n  size: 96x64\n  num_frames: 17\n  steps: 3\n  seed: 4\n\
         two-windows:\n  prompt: a cat on a wall\n  size: 48x32\n  num_frames: 33\n  base_num_frames: 17\n  overlap_history: 5\n  addnoise_condition: 20\n  ar_step: 1\n  steps: 3\n",
    )
    .unwrap();
    let snapshots = scratch.path().join("snapshots");
    let recorded = skyreels(
        &["snapshot", "record"],
        &[
            ("--engines", &engine),
            ("--cases", &cases),
            ("--out", &snapshots),
        ],
    );
    assert!(recorded.status.success(), "{}", text(&recorded.stderr));
    for case in ["fox", "two-windows"] {
        for file in [
            "case.json",
            "noise.safetensors",
            "latents.safetensors",
            "frames/frame_00000.png",
        ] {
            assert!(snapshots.join(case).join(file).is_file(), "{case}/{file}");
        }
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs_err::read(snapshots.join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(metadata["recorded"]["backend"], "cpu");
    assert_eq!(metadata["recorded"]["precision"], "fp32");
    assert_eq!(
        metadata["recorded"]["manifest_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(metadata["cases"], serde_json::json!(["fox", "two-windows"]));

    let again = skyreels(
        &["snapshot", "record"],
        &[
            ("--engines", &engine),
            ("--cases", &cases),
            ("--out", &snapshots),
        ],
    );
    assert!(text(&again.stderr).contains("exists and is not empty"));

    let same = skyreels(
        &["snapshot", "check"],
        &[("--engines", &engine), ("--snapshots", &snapshots)],
    );
    let table = text(&same.stdout);
    assert!(same.status.success(), "{table}\n{}", text(&same.stderr));
    for case in ["fox", "two-windows"] {
        let row = table.lines().find(|l| l.starts_with(case)).expect(case);
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&columns[1..], ["0", "0", "inf", "ok"], "{row}");
    }
    assert!(
        table.contains("tolerance: max-abs ≤ 0, relative ≤ 0, identical frames"),
        "{table}"
    );

    let different = skyreels(
        &["snapshot", "check"],
        &[("--engines", &other), ("--snapshots", &snapshots)],
    );
    let stderr = text(&different.stderr);
    assert_eq!(different.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 of 2 snapshot cases are outside the tolerance: fox, two-windows"),
        "{stderr}"
    );
    let table = text(&different.stdout);
    assert_eq!(table.matches("FAILED").count(), 2, "{table}");

    let not_a_snapshot = skyreels(
        &["snapshot", "check"],
        &[("--engines", &engine), ("--snapshots", &engine)],
    );
    let stderr = text(&not_a_snapshot.stderr);
    assert_eq!(not_a_snapshot.status.code(), Some(1));
    assert!(
        stderr.contains("is not a snapshot directory") && stderr.contains("fix:"),
        "{stderr}"
    );
    let with_noise = scratch.path().join("noisy.yaml");
    fs_err::write(
        &with_noise,
        "fox:\n  prompt: a fox\n  noise: noise.safetensors\n",
    )
    .unwrap();
    let refused = skyreels(
        &["snapshot", "record"],
        &[
            ("--engines", &engine),
            ("--cases", &with_noise),
            ("--out", &scratch.path().join("n")),
        ],
    );
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("case `fox` gives `noise`") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(!scratch.path().join("n").exists());

    let loose = skyreels(
        &[
            "snapshot",
            "check",
            "--tolerance",
            "max_abs=1000,relative=1000,psnr=0",
        ],
        &[("--engines", &other), ("--snapshots", &snapshots)],
    );
    assert!(loose.status.success(), "{}", text(&loose.stderr));
}

#[test]
fn skyreels_serve_runs_the_server_binary_beside_it_with_every_flag() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let skyreels = scratch.path().join("skyreels");
    fs_err::copy(env!("CARGO_BIN_EXE_skyreels"), &skyreels).unwrap();
    // A file written just now may still be open in a process another test thread is forking
    // (until its exec closes it): executing it then fails with ETXTBSY, so that is retried.
    let run = || {
        for _attempt in 0..100 {
            let output = Command::new(&skyreels)
                .args([
                    "serve",
                    "--engines",
                    "e",
                    "--listen",
                    "0.0.0.0:80",
                    "--help",
                ])
                .env("PATH", scratch.path())
                .output();
            match output {
                Err(error) if error.kind() == std::io::ErrorKind::ExecutableFileBusy => {}
                Ok(output) if text(&output.stderr).contains("Text file busy") => {}
                other => return other.unwrap(),
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("skyreels stayed busy")
    };
    let missing = run();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("cannot run skyreels-serve")
            && stderr.contains("fix: install skyreels-serve beside skyreels"),
        "{stderr}"
    );
    let server = scratch.path().join("skyreels-serve");
    fs_err::write(&server, "#!/bin/sh\necho \"server got: $*\"\nexit 3\n").unwrap();
    fs_err::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ran = run();
    assert_eq!(ran.status.code(), Some(3));
    assert_eq!(
        text(&ran.stdout),
        "server got: --engines e --listen 0.0.0.0:80 --help\n"
    );
}
