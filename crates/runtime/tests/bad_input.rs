//! Bad inputs to `skyreels generate`, run through the real binary: each must exit non-zero with a
//! message that names the problem and a fix, and leave no output file behind (docs/BAD_INPUT.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

use common::{TinyModel, export_tiny_engine};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

/// The built-in tiny model exported once per test process (as `skyreels-export tiny` does).
fn tiny_engine() -> &'static Path {
    static ENGINE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, engine) = ENGINE.get_or_init(|| {
        let directory = tempfile::tempdir().unwrap();
        let engine = directory.path().join("engine");
        fs_err::create_dir(&engine).unwrap();
        export_tiny_engine(&engine, TinyModel::DiffusionForcing);
        (directory, engine)
    });
    engine
}

/// A copy of the tiny engine whose manifest is `edit(manifest text)`.
fn edited_engine(directory: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let engine = directory.join("engine");
    fs_err::create_dir(&engine).unwrap();
    for entry in fs_err::read_dir(tiny_engine()).unwrap() {
        let entry = entry.unwrap();
        fs_err::copy(entry.path(), engine.join(entry.file_name())).unwrap();
    }
    let manifest = engine.join("manifest.yaml");
    let text = fs_err::read_to_string(&manifest).unwrap();
    fs_err::write(&manifest, edit(text)).unwrap();
    engine
}

/// `skyreels generate` on `engine` with a small valid request, then `extra` flags (later flags win
/// only where clap allows; callers pass flags not in the base set).
fn generate(engine: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg("generate")
        .arg("--engines")
        .arg(engine)
        .arg("--out")
        .arg(out);
    let has = |flag: &str| extra.contains(&flag);
    for (flag, value) in [
        ("--prompt", "a fox"),
        ("--num-frames", "5"),
        ("--height", "32"),
        ("--width", "32"),
        ("--steps", "2"),
    ] {
        if !has(flag) {
            command.args([flag, value]);
        }
    }
    command.args(extra);
    command
}

fn run(mut command: Command) -> (Output, String) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// Exit code 1, every `needles` in the message, a `fix:` line, no panic.
fn assert_refused(output: &Output, stderr: &str, needles: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1, stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(stderr.contains("fix:"), "no fix in:\n{stderr}");
}

/// Nothing in `directory` but `expected` (no output, no temporary or partial file).
fn assert_only(directory: &Path, expected: &[&str]) {
    let mut names: Vec<String> = fs_err::read_dir(directory)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        expected,
        "unexpected files in {}",
        directory.display()
    );
}

#[test]
fn frames_not_4k_plus_1_are_refused_before_loading() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--num-frames", "6"]));
    assert_refused(&output, &stderr, &["--num-frames 6", "4k+1", "use 5 or 9"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn sizes_not_multiple_of_16_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--width", "40"]));
    assert_refused(
        &output,
        &stderr,
        &["--width 40", "multiple of 16", "use 32 or 48"],
    );
    assert_only(directory.path(), &[]);
}

#[test]
fn a_block_size_that_does_not_divide_the_latent_frames_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--num-frames", "17", "--causal-block-size", "3"],
    ));
    assert_refused(
        &output,
        &stderr,
        &[
            "--causal-block-size 3",
            "does not divide the 5 latent frames",
        ],
    );
    assert_only(directory.path(), &[]);
}

#[test]
fn an_empty_prompt_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--prompt", "  "]));
    assert_refused(&output, &stderr, &["--prompt is empty"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn an_over_long_prompt_is_truncated_with_a_warning() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let prompt = "a red fox running through fresh snow ".repeat(400);
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--prompt", &prompt]));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: --prompt is longer than the text encoder's 512 tokens")
            && stderr.contains("fix:"),
        "{stderr}"
    );
    assert_only(directory.path(), &["video.mp4"]);
}

#[test]
fn a_missing_engine_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&directory.path().join("nowhere"), &out, &[]));
    assert_refused(&output, &stderr, &["nowhere", "no manifest.yaml"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn a_malformed_manifest_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen(&current_version(), "format_version: [1", 1)
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["manifest.yaml is not a valid engine manifest"],
    );
    assert_only(directory.path(), &["engine"]);
}

#[test]
fn a_manifest_with_an_unknown_field_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen("target: cpu", "target: cpu\ntarget_gpu: h100", 1)
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["not a valid engine manifest", "unknown field `target_gpu`"],
    );
    assert_only(directory.path(), &["engine"]);
}

/// A manifest whose layer weights do not fit the block graphs: a byte range of the wrong length, or
/// a file outside the engine directory.
#[test]
fn layer_weights_that_do_not_fit_are_refused() {
    for (edit, needles) in [
        (
            ("        length: 4096\n", "        length: 4092\n"),
            &[
                "layer 0 `cross_attn.k.weight`",
                "4092 bytes",
                "which needs 4096",
            ][..],
        ),
        (
            (
                "        file: dit.weights\n",
                "        file: ../dit.weights\n",
            ),
            &[
                "layer 0 weight `cross_attn.k.bias`",
                "not a file of the engine directory",
            ][..],
        ),
    ] {
        let directory = tempfile::tempdir().unwrap();
        let engine = edited_engine(directory.path(), |text| {
            assert!(text.contains(edit.0), "the tiny manifest has `{}`", edit.0);
            text.replacen(edit.0, edit.1, 1)
        });
        let out = directory.path().join("video.mp4");
        let (output, stderr) = run(generate(&engine, &out, &[]));
        assert_refused(&output, &stderr, needles);
        assert!(stderr.contains("re-export the engine"), "{stderr}");
        assert_only(directory.path(), &["engine"]);
    }
}

fn current_version() -> String {
    format!(
        "format_version: {}",
        skyreels_contract::manifest::FORMAT_VERSION
    )
}

/// An engine of format 1 (whole-stack `blocks` graphs, a `blocks_causal` field this version does
/// not know) is refused for its version, not for its first unknown field.
#[test]
fn an_engine_of_format_1_is_refused_for_its_version() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen(&current_version(), "format_version: 1", 1)
            .replacen("  layers:", "  blocks_causal: null\n  layers:", 1)
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &[
            "format_version 1 but this tool reads",
            "re-export the engine",
        ],
    );
    assert_only(directory.path(), &["engine"]);
}

#[test]
fn a_manifest_from_another_format_version_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen(&current_version(), "format_version: 99", 1)
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["format_version 99", "re-export the engine"],
    );
}

#[test]
fn an_engine_exported_for_cuda_is_refused_on_the_cpu() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen("target: cpu", "target: cuda", 1).replacen(
            "precision: fp32",
            "precision: bf16",
            1,
        )
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &[
            "exported for --target cuda with bf16 weights",
            "--target cpu",
        ],
    );
    assert_only(directory.path(), &["engine"]);
}

#[test]
fn a_missing_onnxruntime_library_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let mut command = generate(tiny_engine(), &out, &[]);
    command.env(
        "ORT_DYLIB_PATH",
        directory.path().join("libonnxruntime.so.missing"),
    );
    let (output, stderr) = run(command);
    assert_refused(
        &output,
        &stderr,
        &[
            "ONNX Runtime 1.31.1 not found",
            "libonnxruntime.so.missing",
            "ORT_DYLIB_PATH",
        ],
    );
    assert_only(directory.path(), &[]);
}

#[test]
fn an_output_in_a_missing_directory_is_refused_before_work() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("missing").join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &[]));
    assert_refused(&output, &stderr, &["missing/video.mp4", "does not exist"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn an_output_under_a_file_is_refused_before_work() {
    let directory = tempfile::tempdir().unwrap();
    fs_err::write(directory.path().join("file"), b"x").unwrap();
    let out = directory.path().join("file").join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["file/video.mp4", "is a file, not a directory"],
    );
    assert_only(directory.path(), &["file"]);
}

#[test]
fn an_mp4_output_that_is_a_directory_is_refused_before_work() {
    let directory = tempfile::tempdir().unwrap();
    fs_err::create_dir(directory.path().join("video.mp4")).unwrap();
    let (output, stderr) = run(generate(
        tiny_engine(),
        &directory.path().join("video.mp4"),
        &[],
    ));
    assert_refused(&output, &stderr, &["video.mp4", "it is a directory"]);
    assert_only(directory.path(), &["video.mp4"]);
}

/// Runs `command` with a 1 KiB file-size limit and SIGXFSZ ignored, so every write past 1 KiB fails
/// with EFBIG, as a full disk fails with ENOSPC: the writer's error path, without root.
fn with_tiny_file_size_limit(command: &Command) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            limited.env(key, value);
        }
    }
    limited
}

#[test]
fn a_write_failure_midway_leaves_no_mp4_and_no_temporary() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let command = generate(
        tiny_engine(),
        &out,
        &["--num-frames", "9", "--height", "64", "--width", "64"],
    );
    let (output, stderr) = run(with_tiny_file_size_limit(&command));
    assert_refused(&output, &stderr, &["video.mp4", "File too large"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn a_write_failure_midway_leaves_no_png_frames() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("frames");
    let command = generate(
        tiny_engine(),
        &out,
        &["--num-frames", "9", "--height", "64", "--width", "64"],
    );
    let (output, stderr) = run(with_tiny_file_size_limit(&command));
    assert_refused(&output, &stderr, &["frames", "File too large"]);
    assert_only(directory.path(), &[]);
}

#[test]
fn a_write_failure_of_the_latents_leaves_no_file() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let latents = directory.path().join("latents.safetensors");
    let latents_flag = latents.to_str().unwrap();
    let command = generate(
        tiny_engine(),
        &out,
        &[
            "--num-frames",
            "9",
            "--height",
            "64",
            "--width",
            "64",
            "--save-latents",
            latents_flag,
        ],
    );
    let (output, stderr) = run(with_tiny_file_size_limit(&command));
    assert_refused(&output, &stderr, &["latents.safetensors", "File too large"]);
    assert_only(directory.path(), &[]);
}

/// A real full disk: a 64 KiB tmpfs. Needs root and a kernel that lets this process mount; where
/// it cannot mount, the test says so and passes (the file-size-limit tests above cover the path).
#[test]
fn a_full_disk_leaves_no_partial_file() {
    let directory = tempfile::tempdir().unwrap();
    let mount_point = directory.path().join("tiny-disk");
    fs_err::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mount_point)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the file-size-limit tests cover the write-failure path"
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount_point);
    fs_err::write(mount_point.join("filler"), vec![0u8; 60 * 1024]).unwrap();
    let out = mount_point.join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--num-frames", "9", "--height", "64", "--width", "64"],
    ));
    assert_refused(&output, &stderr, &["video.mp4", "No space left on device"]);
    assert_only(&mount_point, &["filler"]);
}

#[test]
fn an_unreleased_architecture_with_teacache_needs_explicit_coefficients() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--teacache", "0.2"]));
    assert_refused(
        &output,
        &stderr,
        &[
            "no released SkyReels-V2 model has this architecture",
            "dim 32",
            "--teacache-coefficients",
        ],
    );
    assert_only(directory.path(), &[]);
    let coefficients = "--teacache-coefficients=-5.21862437e4,9.23041404e3,-5.28275948e2,1.36987616e1,-4.99875664e-2";
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--teacache", "0.2", coefficients],
    ));
    assert!(output.status.success(), "{stderr}");
    assert_only(directory.path(), &["video.mp4"]);
}

#[test]
fn unreadable_images_and_videos_are_refused_naming_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("start.png");
    fs_err::write(&image, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let Err(message) = skyreels_runtime::image::RgbImage::open(&image) else {
        panic!("a corrupt PNG is refused")
    };
    let message = message.to_string();
    assert!(
        message.contains("start.png") && message.contains("fix:"),
        "{message}"
    );
    let Err(missing) = skyreels_runtime::image::RgbImage::open(&directory.path().join("none.jpg"))
    else {
        panic!("a missing image is refused")
    };
    let missing = missing.to_string();
    assert!(missing.contains("none.jpg"), "{missing}");
    let video = directory.path().join("clip.mp4");
    fs_err::write(&video, b"\0\0\0\x18ftypmp42 not really").unwrap();
    let Err(message) = skyreels_runtime::output::read_mp4(&video) else {
        panic!("a corrupt MP4 is refused")
    };
    let message = message.to_string();
    assert!(
        message.contains("clip.mp4") && message.contains("fix:"),
        "{message}"
    );
}

#[test]
fn an_unreadable_image_is_refused_by_the_cli() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("start.png");
    fs_err::write(&image, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let out = directory.path().join("image_context.safetensors");
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg("image-encode")
        .arg("--engines")
        .arg(tiny_engine())
        .arg("--image")
        .arg(&image)
        .arg("--out")
        .arg(&out);
    let (output, stderr) = run(command);
    assert_refused(&output, &stderr, &["cannot decode image", "start.png"]);
    assert_only(directory.path(), &["start.png"]);
}

#[test]
fn an_unreadable_video_is_refused_by_the_cli() {
    let directory = tempfile::tempdir().unwrap();
    let video = directory.path().join("clip.mp4");
    fs_err::write(&video, b"\0\0\0\x18ftypmp42 not really").unwrap();
    let out = directory.path().join("latents.safetensors");
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg("vae-encode")
        .arg("--engines")
        .arg(tiny_engine())
        .arg("--video")
        .arg(&video)
        .arg("--out")
        .arg(&out);
    let (output, stderr) = run(command);
    assert_refused(
        &output,
        &stderr,
        &["cannot read", "clip.mp4", "as an H.264 MP4"],
    );
    assert_only(directory.path(), &["clip.mp4"]);
}

#[test]
fn a_missing_video_is_refused_by_the_cli() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("latents.safetensors");
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg("vae-encode")
        .arg("--engines")
        .arg(tiny_engine())
        .arg("--video")
        .arg(directory.path().join("none.mp4"))
        .arg("--out")
        .arg(&out);
    let (output, stderr) = run(command);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none.mp4") && stderr.contains("No such file"),
        "{stderr}"
    );
    assert_only(directory.path(), &[]);
}
