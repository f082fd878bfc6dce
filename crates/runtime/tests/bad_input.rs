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
            // Refused by `Manifest::load` with every other file of the manifest.
            &[
                "dit.layers[0].cross_attn.k.bias.file is \"../dit.weights\"",
                "never absolute or with `..`",
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
        assert!(
            stderr.contains("re-export the engine")
                || stderr.contains("regenerate it with the tool that wrote it"),
            "{stderr}"
        );
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

/// TensorRT cannot be installed on this project's machines: `--backend tensorrt` must say what is
/// missing (TensorRT's `libnvinfer`, ONNX Runtime's TensorRT provider, the GPU) and how to get it.
#[test]
fn the_tensorrt_backend_without_tensorrt_names_libnvinfer() {
    if skyreels_runtime::requirements::find_library("libnvinfer.so.10").is_some() {
        eprintln!("skipped: TensorRT is installed here");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--backend", "tensorrt"]));
    assert_refused(
        &output,
        &stderr,
        &[
            "cannot run on tensorrt here:",
            "libnvinfer.so.10 (TensorRT 10) is not on the library path",
            "install TensorRT 10 for CUDA 13",
        ],
    );
    assert_only(directory.path(), &[]);
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

/// `skyreels SUBCOMMAND --engines ENGINE ARGS`.
fn component(subcommand: &str, engine: &Path, args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg(subcommand)
        .arg("--engines")
        .arg(engine)
        .args(args);
    command
}

/// `skyreels vae-decode --engines ENGINE --latents LATENTS --out OUT EXTRA`.
fn vae_decode(engine: &Path, latents: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = component(
        "vae-decode",
        engine,
        &[
            os(Path::new("--latents")),
            os(latents),
            os(Path::new("--out")),
            os(out),
        ],
    );
    command.args(extra);
    command
}

fn os(path: &Path) -> &std::ffi::OsStr {
    path.as_os_str()
}

#[test]
fn a_work_dir_holding_other_files_is_refused_and_kept() {
    let directory = tempfile::tempdir().unwrap();
    let work = directory.path().join("photos");
    fs_err::create_dir(&work).unwrap();
    fs_err::write(work.join("holiday.jpg"), b"jpeg").unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--work-dir", work.to_str().unwrap()],
    ));
    assert_refused(
        &output,
        &stderr,
        &["work directory", "photos", "did not create"],
    );
    assert_only(&work, &["holiday.jpg"]);
    assert_only(directory.path(), &["photos"]);
}

/// A work directory that also receives the output (`--work-dir D --out D/video.mp4`): at the end
/// the job deletes only its own files, never the video (it used to remove the whole folder).
#[test]
fn finishing_removes_only_what_the_job_wrote() {
    let directory = tempfile::tempdir().unwrap();
    let work = directory.path().join("job");
    fs_err::create_dir(&work).unwrap();
    let out = work.join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--work-dir", work.to_str().unwrap()],
    ));
    assert!(output.status.success(), "{stderr}");
    assert_only(&work, &["video.mp4"]);
}

#[test]
fn a_png_output_into_a_folder_of_other_files_is_refused_before_work() {
    let directory = tempfile::tempdir().unwrap();
    fs_err::write(directory.path().join("notes.txt"), b"mine").unwrap();
    for out in [directory.path().to_path_buf(), PathBuf::from("/")] {
        let (output, stderr) = run(generate(tiny_engine(), &out, &[]));
        assert_refused(&output, &stderr, &["already holds other files"]);
    }
    assert_only(directory.path(), &["notes.txt"]);
}

#[test]
fn sizes_beyond_their_limits_are_refused_naming_flag_value_and_limit() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    for (flag, value, needle) in [
        (
            "--num-frames",
            "4000000001",
            "--num-frames 4000000001 is above 86401",
        ),
        (
            "--height",
            "1099511627776",
            "--height 1099511627776 is above 8192",
        ),
        (
            "--width",
            "18446744073709551600",
            "--width 18446744073709551600 is above 8192",
        ),
        (
            "--steps",
            "100000000000",
            "--steps 100000000000 is above 1000",
        ),
        (
            "--ar-step",
            "18446744073709551615",
            "--ar-step 18446744073709551615 is above 1000",
        ),
        ("--threads", "100000", "--threads 100000 is more than the"),
    ] {
        let (output, stderr) = run(generate(tiny_engine(), &out, &[flag, value]));
        assert_refused(&output, &stderr, &[needle]);
    }
    assert_only(directory.path(), &[]);
}

#[test]
fn a_manifest_number_no_engine_has_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replace("text_len: 8", "text_len: 18446744073709551615")
            .replace("text_len: 512", "text_len: 18446744073709551615")
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["dit.config.text_len is 18446744073709551615, outside 0..=1048576"],
    );
    assert!(!out.exists());
}

#[test]
fn manifest_files_outside_the_engine_directory_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| {
        text.replacen("file: ", "file: ../../outside/", 1)
    });
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["is \"../../outside/", "never absolute or with `..`"],
    );
    let engine = {
        let second = directory.path().join("second");
        fs_err::create_dir(&second).unwrap();
        edited_engine(&second, |text| {
            text.replace("tokenizer: tokenizer.json", "tokenizer: /etc/passwd")
        })
    };
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["text_encoder.tokenizer is \"/etc/passwd\""],
    );
    assert!(!out.exists());
}

#[test]
fn special_files_are_refused_as_inputs_without_waiting() {
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("noise.safetensors");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = directory.path().join("video.mp4");
    let started = std::time::Instant::now();
    for (flag, path, needle) in [
        (
            "--noise",
            Path::new("/dev/zero"),
            "/dev/zero is a character device, not a regular file",
        ),
        (
            "--noise",
            fifo.as_path(),
            "noise.safetensors is a FIFO, not a regular file",
        ),
        (
            "--noise",
            directory.path(),
            "is a directory, not a regular file",
        ),
        ("--video", fifo.as_path(), "noise.safetensors is a FIFO"),
        ("--image", fifo.as_path(), "image"),
        (
            "--image",
            Path::new("/nonexistent/start.png"),
            "/nonexistent/start.png",
        ),
    ] {
        let mut extra = vec![flag, path.to_str().unwrap()];
        if flag == "--video" {
            extra.extend(["--overlap-history", "1"]);
        }
        let (output, stderr) = run(generate(tiny_engine(), &out, &extra));
        assert_refused(&output, &stderr, &[needle]);
    }
    let (output, stderr) = run(vae_decode(tiny_engine(), &fifo, &out, &[]));
    assert_refused(&output, &stderr, &["is a FIFO"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    assert_only(directory.path(), &["noise.safetensors"]);
}

/// An MP4 whose `moov` holds a box of size 0: the demuxer seeks back by the size minus the header
/// and read the same header forever; now the parse fails at once.
#[test]
fn a_malformed_mp4_that_made_the_reader_loop_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let video = directory.path().join("loop.mp4");
    let mut bytes = Vec::new();
    bytes.extend(b"\0\0\0\x10ftypisom\0\0\x02\0");
    bytes.extend(b"\0\0\0\x18moov\0\0\0\0free\0\0\0\0\0\0\0\0");
    fs_err::write(&video, &bytes).unwrap();
    let out = directory.path().join("latents.safetensors");
    let mut child = component(
        "vae-encode",
        tiny_engine(),
        &[
            os(Path::new("--video")),
            os(&video),
            os(Path::new("--out")),
            os(&out),
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the MP4 reader did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_refused(&output, &stderr, &["loop.mp4", "points backwards"]);
    assert_only(directory.path(), &["loop.mp4"]);
}

#[test]
fn outputs_that_cannot_be_written_are_refused_before_any_model_loads() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let missing = directory.path().join("missing").join("latents.safetensors");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--save-latents", missing.to_str().unwrap()],
    ));
    assert_refused(
        &output,
        &stderr,
        &["missing does not exist", "--save-latents"],
    );
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--width", "4096", "--height", "4096"],
    ));
    assert_refused(
        &output,
        &stderr,
        &[
            "at most 3840×2160 (or 2160×3840)",
            "--width 4096 × --height 4096",
        ],
    );
    let (output, stderr) = run(generate(tiny_engine(), &out, &["--fps", "5000"]));
    assert_refused(&output, &stderr, &["--fps 5000 is outside 1..=1000"]);
    assert_only(directory.path(), &[]);
}

/// A safetensors file of `tensors` (name → shape, float32 values).
fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let tensors: Vec<(&str, skyreels_runtime::Tensor)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            (
                *name,
                skyreels_runtime::Tensor::new(shape.clone(), data.clone()).unwrap(),
            )
        })
        .collect();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, tensor) in &tensors {
        let bytes: Vec<u8> = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": tensor.shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend(bytes);
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    fs_err::write(path, file).unwrap();
}

#[test]
fn non_finite_inputs_are_refused_naming_their_source() {
    let directory = tempfile::tempdir().unwrap();
    let noise = directory.path().join("noise.safetensors");
    let mut values = vec![0.5f32; 16 * 2 * 2 * 2];
    values[3] = f32::NAN;
    write_tensors(&noise, &[("0", vec![1, 16, 2, 2, 2], values.clone())]);
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &["--noise", noise.to_str().unwrap()],
    ));
    assert_refused(
        &output,
        &stderr,
        &["noise.safetensors: tensor `0` holds 1 non-finite values"],
    );
    let latents = directory.path().join("latents.safetensors");
    write_tensors(&latents, &[("latents", vec![1, 16, 2, 2, 2], values)]);
    let (output, stderr) = run(vae_decode(tiny_engine(), &latents, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &[
            "latents.safetensors: tensor `latents`",
            "holds 1 non-finite values",
        ],
    );
    write_tensors(&latents, &[("latents", vec![1, 16, 0, 2, 2], Vec::new())]);
    let (output, stderr) = run(vae_decode(tiny_engine(), &latents, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &["has shape [1, 16, 0, 2, 2], with an empty dimension"],
    );
    assert_only(
        directory.path(),
        &["latents.safetensors", "noise.safetensors"],
    );
}

/// NaN weights in the DiT: the window's latents are checked, and the run fails naming the DiT
/// instead of writing an all-NaN "video" and exiting 0.
#[test]
fn nan_weights_in_the_dit_fail_the_window_naming_the_dit() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |text| text);
    let mut poisoned = 0;
    for entry in fs_err::read_dir(&engine).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "dit.weights" {
            let length = fs_err::metadata(&path).unwrap().len() as usize;
            let nan: Vec<u8> = f32::NAN
                .to_le_bytes()
                .into_iter()
                .cycle()
                .take(length)
                .collect();
            fs_err::write(&path, nan).unwrap();
            poisoned += 1;
        }
    }
    assert!(poisoned > 0, "no DiT weights file in {}", engine.display());
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &[
            "window 1 of 1: the latents the DiT sampled hold",
            "non-finite",
            "re-export",
        ],
    );
    assert!(!out.exists());
}

/// A long job refused after its work directory was taken (here: TeaCache on an unreleased
/// architecture) has no window to resume: its record and marker go with the directory.
#[test]
fn a_refused_long_job_leaves_no_work_directory() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("video.mp4");
    let (output, stderr) = run(generate(
        tiny_engine(),
        &out,
        &[
            "--num-frames",
            "57",
            "--base-num-frames",
            "25",
            "--overlap-history",
            "9",
            "--teacache",
            "0.2",
        ],
    ));
    assert_refused(
        &output,
        &stderr,
        &["no released SkyReels-V2 model has this architecture"],
    );
    assert_only(directory.path(), &[]);
}

/// `vae-decode --out X.mp4` refuses what the MP4 writer would refuse (batch > 1, a frame rate out
/// of range) before the VAE loads: the engine's decoder graphs are garbage here, and the refusals
/// still name the flag, not the graph.
#[test]
fn vae_decode_checks_its_mp4_before_decoding() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |manifest| manifest);
    for graph in ["vae_decode_first.onnx", "vae_decode_chunk.0.onnx"] {
        fs_err::write(engine.join(graph), b"not an ONNX graph").unwrap();
    }
    let latents = directory.path().join("latents.safetensors");
    let out = directory.path().join("video.mp4");
    let decode = |fps: &str| run(vae_decode(&engine, &latents, &out, &["--fps", fps]));
    write_tensors(
        &latents,
        &[("latents", vec![1, 16, 2, 2, 2], vec![0.5; 128])],
    );
    let (output, stderr) = decode("1001");
    assert_refused(
        &output,
        &stderr,
        &["--fps 1001 is outside 1..=", "fix: use 24"],
    );
    write_tensors(
        &latents,
        &[("latents", vec![2, 16, 2, 2, 2], vec![0.5; 256])],
    );
    let (output, stderr) = decode("24");
    assert_refused(&output, &stderr, &["needs batch 1 latents, got batch 2"]);
    // With nothing to refuse, the broken graphs are what fails: the checks above ran first.
    write_tensors(
        &latents,
        &[("latents", vec![1, 16, 2, 2, 2], vec![0.5; 128])],
    );
    let (output, stderr) = decode("24");
    assert!(!output.status.success());
    assert!(stderr.contains("vae_decode"), "{stderr}");
    assert!(!out.exists());
}

/// A layer weight whose byte range lies outside its file is refused, naming the range and the
/// file, before a buffer of that size is allocated (resident and streamed weights alike).
#[test]
fn a_layer_weight_outside_its_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |manifest| {
        let (before, after) = manifest
            .split_once("cross_attn.k.bias:\n        file: dit.weights\n        offset: ")
            .expect("the tiny manifest's first layer weight");
        let rest = after.split_once('\n').expect("the offset line").1;
        format!(
            "{before}cross_attn.k.bias:\n        file: dit.weights\n        offset: 1000000000000\n{rest}"
        )
    });
    let out = directory.path().join("fox.mp4");
    for extra in [&[][..], &["--offload"][..]] {
        let (output, stderr) = run(generate(&engine, &out, extra));
        assert_refused(
            &output,
            &stderr,
            &[
                "layer 0 `cross_attn.k.bias`: bytes 1000000000000..1000000000128 lie outside dit.weights",
                "re-export the engine",
            ],
        );
    }
    assert!(!out.exists());
}

/// A manifest whose layer weight claims 4 TiB (a block-graph input of 2^40 elements and byte
/// ranges to match) is refused for lying outside its file, instead of allocating the 4 TiB.
#[test]
fn a_terabyte_layer_weight_is_refused_before_allocating() {
    let directory = tempfile::tempdir().unwrap();
    let huge = 4u64 << 40;
    let engine = edited_engine(directory.path(), |manifest| {
        let manifest = manifest.replace(
            "- name: cross_attn.k.bias\n          dtype: float32\n          shape:\n            - \"32\"\n",
            "- name: cross_attn.k.bias\n          dtype: float32\n          shape:\n            - \"1048576\"\n            - \"1048576\"\n",
        );
        let marker = "cross_attn.k.bias:\n        file: dit.weights\n";
        let mut parts = manifest.split(marker);
        let mut edited = parts.next().unwrap().to_string();
        for part in parts {
            edited.push_str(marker);
            edited.push_str(&part.replacen("length: 128\n", &format!("length: {huge}\n"), 1));
        }
        edited
    });
    let out = directory.path().join("fox.mp4");
    let (output, stderr) = run(generate(&engine, &out, &[]));
    assert_refused(
        &output,
        &stderr,
        &[
            "layer 0 `cross_attn.k.bias`: bytes",
            "lie outside dit.weights",
        ],
    );
}

/// Byte ranges at the edge of u64 (a corrupt manifest) end in a refusal, not an overflow, in the
/// memory plan that sums them before anything loads.
#[test]
fn a_layer_weight_length_at_the_edge_of_u64_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let engine = edited_engine(directory.path(), |manifest| {
        manifest.replacen("length: 128\n", &format!("length: {}\n", u64::MAX), 1)
    });
    let out = directory.path().join("fox.mp4");
    for extra in [
        &["--max-gpu-memory", "1GiB"][..],
        &["--offload"][..],
        &[][..],
    ] {
        let (output, stderr) = run(generate(&engine, &out, extra));
        assert_refused(&output, &stderr, &["re-export the engine"]);
    }
}

#[test]
fn errors_name_the_problem_and_fix_without_a_backtrace_even_with_rust_backtrace_set() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("no-engine");
    let mut command = generate(&missing, &directory.path().join("out.mp4"), &[]);
    command
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1");
    let (output, stderr) = run(command);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
