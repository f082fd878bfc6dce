//! `skyreels generate --dry-run`, the plan, progress, logs and the small user-facing commands,
//! through the real binary. Engines of released architectures are the tiny engines with their
//! manifest's DiT architecture set to a released one: a dry run reads only the manifest, so the
//! variant's defaults show without real-size weights (and no graph is ever loaded).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{TinyModel, export_tiny_engine};
use skyreels_contract::{Manifest, ModelVariant};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

fn engine(model: TinyModel) -> &'static Path {
    static DF: OnceLock<tempfile::TempDir> = OnceLock::new();
    static I2V: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = if model == TinyModel::DiffusionForcing {
        &DF
    } else {
        &I2V
    };
    cell.get_or_init(|| {
        let directory = tempfile::tempdir().expect("tempdir");
        export_tiny_engine(directory.path(), model);
        directory
    })
    .path()
}

/// A copy of the tiny `model` engine whose manifest records the DiT architecture of the released
/// variant `name` (its manifest only: the graphs stay tiny).
fn released_engine(directory: &Path, model: TinyModel, name: &str) -> PathBuf {
    let copy = directory.join(name);
    fs_err::create_dir(&copy).expect("engine dir");
    for entry in fs_err::read_dir(engine(model)).expect("read engine") {
        let entry = entry.expect("entry");
        fs_err::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
    }
    let mut manifest = Manifest::load(&copy).expect("manifest");
    let variant = ModelVariant::builtin()
        .into_iter()
        .find(|v| v.name == name)
        .expect("variant");
    manifest.dit.as_mut().expect("dit").config = variant.architecture;
    manifest.save(&copy).expect("save manifest");
    copy
}

fn skyreels(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.env("RUST_BACKTRACE", "0").args(args);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn success(output: &Output) {
    assert!(output.status.success(), "failed:\n{}", stderr(output));
}

/// `generate --dry-run --json` on `engine`, then `extra`: the plan.
fn dry_run(engine: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut command = skyreels(&["generate", "--prompt", "a fox", "--dry-run", "--json"]);
    command
        .arg("--engines")
        .arg(engine)
        .arg("--out")
        .arg(out)
        .args(extra);
    let output = command.output().expect("run");
    success(&output);
    serde_json::from_slice(&output.stdout).expect("plan json")
}

fn write_png(path: &Path) {
    image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 90]))
        .save(path)
        .expect("png");
}

/// (variant, width, height, num_frames, steps, guidance, shift, pipeline) of a plan.
fn defaults(plan: &serde_json::Value) -> (String, u64, u64, u64, u64, f64, f64, String) {
    (
        plan["variant"]["name"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
        plan["width"].as_u64().expect("width"),
        plan["height"].as_u64().expect("height"),
        plan["num_frames"].as_u64().expect("num_frames"),
        plan["steps"].as_u64().expect("steps"),
        plan["guidance"].as_f64().expect("guidance"),
        plan["shift"].as_f64().expect("shift"),
        plan["pipeline"].as_str().expect("pipeline").to_string(),
    )
}

#[test]
fn an_image_to_video_engine_gets_the_i2v_defaults() {
    let directory = tempfile::tempdir().expect("tempdir");
    let engine = released_engine(directory.path(), TinyModel::ImageToVideo, "i2v-1.3b-540p");
    let image = directory.path().join("first.png");
    write_png(&image);
    let out = directory.path().join("i2v.mp4");
    let plan = dry_run(&engine, &out, &["--image", image.to_str().unwrap()]);
    assert_eq!(
        defaults(&plan),
        (
            "i2v-1.3b-540p".into(),
            960,
            544,
            97,
            30,
            5.0,
            5.0,
            "synchronous".into()
        )
    );
    assert!(
        plan["negative_prompt"]
            .as_str()
            .expect("negative prompt")
            .starts_with("Bright tones"),
        "I2V uses upstream generate_video.py's English negative prompt: {}",
        plan["negative_prompt"]
    );
    assert_eq!(plan["model_type"], "i2v");
    assert!(!out.exists(), "a dry run writes nothing");

    let overridden = dry_run(
        &engine,
        &out,
        &[
            "--image",
            image.to_str().unwrap(),
            "--guidance",
            "7.5",
            "--size",
            "544x960",
        ],
    );
    assert_eq!(
        (
            overridden["guidance"].as_f64(),
            overridden["width"].as_u64(),
            overridden["height"].as_u64(),
            overridden["shift"].as_f64()
        ),
        (Some(7.5), Some(544), Some(960), Some(5.0)),
        "flags override single defaults, the rest stay the variant's"
    );
}

#[test]
fn a_720p_engine_gets_the_720p_defaults() {
    let directory = tempfile::tempdir().expect("tempdir");
    let engine = released_engine(directory.path(), TinyModel::DiffusionForcing, "df-14b-720p");
    let out = directory.path().join("video.mp4");
    let by_resolution = dry_run(&engine, &out, &["--resolution", "720p"]);
    assert_eq!(
        defaults(&by_resolution),
        (
            "df-14b-720p".into(),
            1280,
            720,
            121,
            30,
            6.0,
            8.0,
            "diffusion_forcing".into()
        )
    );
    let by_size = dry_run(&engine, &out, &["--size", "1280x720"]);
    assert_eq!(by_size["variant"]["name"], "df-14b-720p");
    assert_eq!(by_size["num_frames"], 121);
    let synchronous = dry_run(
        &engine,
        &out,
        &["--resolution", "720p", "--pipeline", "synchronous"],
    );
    assert_eq!(
        synchronous["variant"]["name"], "t2v-14b-720p",
        "DF-14B and T2V-14B share the architecture; the sampling loop decides"
    );
    let at_540 = dry_run(&engine, &out, &[]);
    assert_eq!(
        defaults(&at_540),
        (
            "df-14b-540p".into(),
            960,
            544,
            97,
            30,
            6.0,
            8.0,
            "diffusion_forcing".into()
        )
    );
    let teacache = dry_run(
        &engine,
        &out,
        &[
            "--resolution",
            "720p",
            "--teacache",
            "0.3",
            "--teacache-retention",
        ],
    );
    let expected = ModelVariant::builtin()
        .into_iter()
        .find(|v| v.name == "df-14b-720p")
        .expect("variant")
        .teacache
        .coefficients(true);
    assert_eq!(
        teacache["teacache"]["coefficients"],
        serde_json::json!(expected),
        "the variant's TeaCache fit"
    );
}

#[test]
fn a_resolution_the_model_was_not_released_at_is_refused_before_loading() {
    let directory = tempfile::tempdir().expect("tempdir");
    let engine = released_engine(
        directory.path(),
        TinyModel::DiffusionForcing,
        "df-1.3b-540p",
    );
    let mut command = skyreels(&["generate", "--prompt", "a fox", "--resolution", "720p"]);
    command
        .arg("--engines")
        .arg(&engine)
        .arg("--out")
        .arg(directory.path().join("video.mp4"));
    let output = command.output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("DF-1.3B was not released at 720P") && message.contains("fix:"),
        "{message}"
    );
}

#[test]
fn an_unrecognised_architecture_keeps_the_built_in_defaults_and_says_so() {
    let directory = tempfile::tempdir().expect("tempdir");
    let out = directory.path().join("video.mp4");
    let plan = dry_run(engine(TinyModel::DiffusionForcing), &out, &[]);
    assert_eq!(
        defaults(&plan),
        (
            "none".into(),
            960,
            544,
            97,
            30,
            6.0,
            8.0,
            "diffusion_forcing".into()
        )
    );
    assert!(
        plan["variant"]["note"]
            .as_str()
            .expect("note")
            .contains("no released SkyReels-V2 model has this architecture"),
        "{plan}"
    );
    let mut command = skyreels(&["generate", "--prompt", "a fox", "--dry-run"]);
    command
        .arg("--engines")
        .arg(engine(TinyModel::DiffusionForcing))
        .arg("--out")
        .arg(&out);
    let output = command.output().expect("run");
    success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("variant:   unrecognised")
            && text.contains("video:     960x544, 97 frames at 24 fps, seed 0")
            && text.contains("windows:   25 latent frames (0 prefix)"),
        "{text}"
    );
}

/// The tiny engine at a small size, stderr piped (not a terminal), then `extra`.
fn small_generate(out: &Path, extra: &[&str]) -> Output {
    small_generate_sized(out, "32x32", extra)
}

/// [`small_generate`] at `size` (`WIDTHxHEIGHT`).
fn small_generate_sized(out: &Path, size: &str, extra: &[&str]) -> Output {
    let mut command = skyreels(&[
        "generate",
        "--prompt",
        "a fox",
        "--num-frames",
        "5",
        "--size",
        size,
        "--steps",
        "2",
        "--threads",
        "1",
    ]);
    command
        .arg("--engines")
        .arg(engine(TinyModel::DiffusionForcing))
        .arg("--out")
        .arg(out)
        .args(extra);
    command.output().expect("run")
}

#[test]
fn without_a_terminal_each_stage_and_step_is_one_log_line() {
    let directory = tempfile::tempdir().expect("tempdir");
    let output = small_generate(&directory.path().join("video.mp4"), &[]);
    success(&output);
    let log = stderr(&output);
    for line in [
        "loading text encoder",
        "encoding prompt: done in",
        "loading dit",
        "loading vae decoder",
        "sampling window 1/1: 5 frames, 2 steps",
        "window 1/1 step 1/2 (50%)",
        "window 1/1 step 2/2 (100%)",
        "decoding window 1/1: done in",
        "writing ",
        "wrote ",
    ] {
        assert!(
            log.lines().any(|l| l.starts_with(line)),
            "no line starting `{line}` in:\n{log}"
        );
    }
    assert!(
        !log.contains("OpenH264"),
        "the OpenH264 banner is silenced:\n{log}"
    );
    for exact in [
        "sampling window 1/1: 5 frames, 2 steps",
        "window 1/1 step 2/2 (100%)",
    ] {
        assert!(
            log.lines().any(|l| l == exact),
            "no line `{exact}` in:\n{log}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "no terminal escapes in a log file:\n{log}"
    );

    let quiet = small_generate(
        &directory.path().join("quiet.mp4"),
        &["--log-level", "warn"],
    );
    success(&quiet);
    assert_eq!(stderr(&quiet), "", "warn hides progress lines");

    let json_logs = small_generate(
        &directory.path().join("json.mp4"),
        &["--log-format", "json"],
    );
    success(&json_logs);
    let events: Vec<serde_json::Value> = stderr(&json_logs)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["step"] == 2 && e["fields"]["steps"] == 2 && e["level"] == "INFO"),
        "{events:?}"
    );
}

#[test]
fn the_json_summary_holds_what_reproduces_the_run() {
    let directory = tempfile::tempdir().expect("tempdir");
    let out = directory.path().join("video.mp4");
    let output = small_generate(&out, &["--json", "--seed", "11"]);
    success(&output);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("summary");
    let manifest =
        fs_err::read(engine(TinyModel::DiffusionForcing).join("manifest.yaml")).expect("manifest");
    assert_eq!(summary["seed"], 11);
    assert_eq!(summary["prompt"], "a fox");
    assert_eq!(summary["size"], "32x32");
    assert_eq!(
        (summary["num_frames"].as_u64(), summary["frames"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        (
            summary["steps"].as_u64(),
            summary["guidance"].as_f64(),
            summary["shift"].as_f64()
        ),
        (Some(2), Some(6.0), Some(8.0))
    );
    assert_eq!(summary["variant"], serde_json::Value::Null);
    assert_eq!(summary["backend"], "cpu");
    assert_eq!(summary["device"], serde_json::Value::Null);
    // The arena's statistics are a GPU's: present, and null on the CPU.
    assert_eq!(summary.get("gpu_arena"), Some(&serde_json::Value::Null));
    assert_eq!(
        summary["manifest_sha256"],
        skyreels_runtime::job::plan::sha256_hex(&manifest)
    );
    assert!(
        summary["negative_prompt"]
            .as_str()
            .unwrap()
            .starts_with("色调艳丽")
    );
    assert_eq!(summary["versions"]["onnxruntime"], "1.31.1");
    for stage in [
        "loading",
        "text_encoding",
        "sampling",
        "decoding",
        "writing",
    ] {
        assert!(
            summary["timings"][stage].as_f64().is_some_and(|s| s >= 0.0),
            "{stage}: {summary}"
        );
    }
    assert_eq!(summary["plan"]["windows"].as_array().map(Vec::len), Some(1));
    assert!(out.is_file());
}

#[test]
fn errors_under_json_are_json_on_stdout() {
    let directory = tempfile::tempdir().expect("tempdir");
    let out = directory.path().join("video.mp4");
    let output = small_generate(&out, &["--json", "--overlap-history", "6"]);
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json error");
    assert_eq!(error["error"]["field"], "overlap_history");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--overlap-history 6 is not of the form 4k+1"),
        "{error}"
    );
    assert!(stderr(&output).contains("fix:"), "people still read stderr");
}

#[test]
fn unknown_output_extensions_are_refused_and_the_quantizer_is_checked() {
    let directory = tempfile::tempdir().expect("tempdir");
    let output = small_generate(&directory.path().join("fox.avi"), &[]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("writes no .avi files") && message.contains("fix:"),
        "{message}"
    );
    let output = small_generate(
        &directory.path().join("fox.mp4"),
        &["--h264-quantizer", "60"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--h264-quantizer 60 is outside 12..=51"));
    let sizes: Vec<u64> = ["12", "40"]
        .iter()
        .map(|quantizer| {
            let out = directory.path().join(format!("q{quantizer}.mp4"));
            success(&small_generate(&out, &["--h264-quantizer", quantizer]));
            fs_err::metadata(&out).expect("mp4").len()
        })
        .collect();
    assert!(
        sizes[0] > sizes[1],
        "a lower quantizer keeps more detail: {sizes:?}"
    );
    let frames = directory.path().join("frames");
    success(&small_generate(&frames, &[]));
    assert!(frames.join("frame_00000.png").is_file());
    let entries: Vec<_> = fs_err::read_dir(directory.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.starts_with("fox")), "{entries:?}");
}

#[test]
fn component_commands_take_a_backend() {
    let directory = tempfile::tempdir().expect("tempdir");
    let engine = engine(TinyModel::DiffusionForcing);
    let context = directory.path().join("context.safetensors");
    let mut command = skyreels(&[
        "text-encode",
        "--prompt",
        "a fox",
        "--backend",
        "cpu",
        "--threads",
        "1",
    ]);
    command
        .arg("--engines")
        .arg(engine)
        .arg("--out")
        .arg(&context);
    success(&command.output().expect("run"));
    let tensor =
        skyreels_runtime::output::read_tensor(&context, "context", &[Some(1), Some(512), None])
            .expect("context");
    assert_eq!(tensor.shape[1], 512);

    let bf16 = directory.path().join("bf16");
    fs_err::create_dir(&bf16).expect("dir");
    for entry in fs_err::read_dir(engine).expect("engine") {
        let entry = entry.expect("entry");
        fs_err::copy(entry.path(), bf16.join(entry.file_name())).expect("copy");
    }
    let text = fs_err::read_to_string(bf16.join("manifest.yaml")).expect("manifest");
    fs_err::write(
        bf16.join("manifest.yaml"),
        text.replacen("target: cpu", "target: cuda", 1).replacen(
            "precision: fp32",
            "precision: bf16",
            1,
        ),
    )
    .expect("write");
    for subcommand in ["text-encode", "vae-decode"] {
        let mut command = skyreels(&[subcommand, "--backend", "cpu"]);
        command.arg("--engines").arg(&bf16);
        match subcommand {
            "text-encode" => command.args(["--prompt", "a fox"]),
            _ => command.arg("--latents").arg(&context),
        };
        command
            .arg("--out")
            .arg(directory.path().join("refused.safetensors"));
        let output = command.output().expect("run");
        assert_eq!(output.status.code(), Some(1), "{subcommand}");
        let message = stderr(&output);
        assert!(
            message.contains("exported for --target cuda with bf16 weights")
                && message.contains("--backend cuda"),
            "{subcommand}: {message}"
        );
    }
    assert!(!directory.path().join("refused.safetensors").exists());
}

#[test]
fn info_prints_a_short_summary_and_version_names_onnxruntime() {
    let output = skyreels(&["info", "--engines"])
        .arg(engine(TinyModel::ImageToVideo))
        .output()
        .expect("run");
    success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("variant:    unrecognised")
            && text.contains("weights:    fp32 for --target cpu")
            && text.contains(
                "components: dit (teacache graphs), vae, text encoder (512 tokens), image encoder"
            )
            && text.contains("graph I/O:  dit float32, vae float32, text float32, image float32")
            && text.contains("build:      none"),
        "{text}"
    );
    assert!(text.lines().count() <= 9, "{text}");
    assert_eq!(stderr(&output), "");

    let directory = tempfile::tempdir().expect("tempdir");
    let released = released_engine(directory.path(), TinyModel::DiffusionForcing, "df-14b-540p");
    let output = skyreels(&["info", "--engines"])
        .arg(&released)
        .output()
        .expect("run");
    success(&output);
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("variant:    df-14b-540p or df-14b-720p or t2v-14b-540p or t2v-14b-720p"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let output = skyreels(&["--version"]).output().expect("run");
    success(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!(
            "skyreels {} (needs ONNX Runtime 1.31.1: libonnxruntime.so.1.31.1)",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// Records every event; cancels once `cancel_after_steps` steps were reported.
struct Recorder {
    events: Vec<skyreels_runtime::pipeline::progress::Progress>,
    cancel_after_steps: Option<usize>,
}

impl skyreels_runtime::pipeline::progress::Observer for Recorder {
    fn report(
        &mut self,
        progress: &skyreels_runtime::pipeline::progress::Progress,
    ) -> std::ops::ControlFlow<()> {
        use skyreels_runtime::pipeline::progress::Progress;
        self.events.push(progress.clone());
        let steps = self
            .events
            .iter()
            .filter(|e| matches!(e, Progress::Step { .. }))
            .count();
        match self.cancel_after_steps {
            Some(limit) if steps >= limit => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        }
    }
}

fn small_request() -> skyreels_runtime::job::GenerateRequest {
    skyreels_runtime::job::GenerateRequest {
        prompt: "a fox".into(),
        num_frames: Some(9),
        size: Some("32x32".into()),
        steps: Some(3),
        ..Default::default()
    }
}

#[test]
fn the_library_job_api_reuses_loaded_models_and_cancels_at_the_next_step() {
    use skyreels_runtime::job::{JobPlan, Models, OutputRequest, Residency, run_job};
    use skyreels_runtime::pipeline::progress::{Progress, Stage};
    use skyreels_runtime::session::Backend;
    let directory = tempfile::tempdir().expect("tempdir");
    let mut models = Models::open(
        engine(TinyModel::DiffusionForcing),
        Backend::Cpu { threads: 1 },
        Residency::KeepLoaded,
    )
    .expect("models");
    let output = |name: &str| OutputRequest {
        out: directory.path().join(name),
        ..OutputRequest::default()
    };
    let loads = |recorder: &Recorder| {
        recorder
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Progress::StageStarted {
                        stage: Stage::Loading,
                        ..
                    }
                )
            })
            .count()
    };

    let first = JobPlan::new(
        models.engine(),
        models.backend(),
        &small_request(),
        &output("first.mp4"),
    )
    .expect("plan");
    let mut recorder = Recorder {
        events: Vec::new(),
        cancel_after_steps: None,
    };
    let report = run_job(&first, &mut models, &mut recorder).expect("first job");
    assert_eq!(report.written.frames, 9);
    assert_eq!(loads(&recorder), 3, "text encoder, DiT, VAE decoder");
    let percents: Vec<f64> = recorder
        .events
        .iter()
        .filter_map(|e| match e {
            Progress::Step { percent, .. } => Some(*percent),
            _ => None,
        })
        .collect();
    assert_eq!(percents.len(), 3);
    assert!((percents[2] - 100.0).abs() < 1e-9, "{percents:?}");
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");

    let second = JobPlan::new(
        models.engine(),
        models.backend(),
        &skyreels_runtime::job::GenerateRequest {
            seed: Some(5),
            ..small_request()
        },
        &output("second.mp4"),
    )
    .expect("plan");
    let mut recorder = Recorder {
        events: Vec::new(),
        cancel_after_steps: None,
    };
    run_job(&second, &mut models, &mut recorder).expect("second job");
    assert_eq!(loads(&recorder), 0, "a second job loads nothing");

    let cancelled = JobPlan::new(
        models.engine(),
        models.backend(),
        &small_request(),
        &output("cancelled.mp4"),
    )
    .expect("plan");
    let mut recorder = Recorder {
        events: Vec::new(),
        cancel_after_steps: Some(1),
    };
    let error = run_job(&cancelled, &mut models, &mut recorder).unwrap_err();
    assert!(
        matches!(error, skyreels_runtime::RuntimeError::Cancelled),
        "{error}"
    );
    let steps = recorder
        .events
        .iter()
        .filter(|e| matches!(e, Progress::Step { .. }))
        .count();
    assert_eq!(
        steps, 1,
        "the job stopped at the step after the cancellation"
    );
    assert!(!directory.path().join("cancelled.mp4").exists());

    let mut recorder = Recorder {
        events: Vec::new(),
        cancel_after_steps: None,
    };
    run_job(&first, &mut models, &mut recorder).expect("the models survive a cancelled job");
    assert_eq!(loads(&recorder), 0);
}

#[test]
fn what_the_engine_cannot_do_is_refused_by_the_plan_before_loading() {
    let directory = tempfile::tempdir().expect("tempdir");
    let image = directory.path().join("first.png");
    write_png(&image);
    let refused = |engine: &Path, extra: &[&str], needles: &[&str]| {
        let mut command = skyreels(&["generate", "--prompt", "a fox", "--dry-run"]);
        command
            .arg("--engines")
            .arg(engine)
            .arg("--out")
            .arg(directory.path().join("video.mp4"))
            .args(extra);
        let output = command.output().expect("run");
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {message}");
        for needle in needles.iter().chain(&["fix:"]) {
            assert!(
                message.contains(needle),
                "{extra:?}: no `{needle}` in {message}"
            );
        }
    };
    refused(
        engine(TinyModel::ImageToVideo),
        &[],
        &["--image is missing", "image-to-video model"],
    );
    refused(
        engine(TinyModel::DiffusionForcing),
        &[
            "--pipeline",
            "synchronous",
            "--image",
            image.to_str().unwrap(),
        ],
        &["condition diffusion forcing", "drop --pipeline synchronous"],
    );
    refused(
        engine(TinyModel::DiffusionForcing),
        &["--size", "960x544", "--width", "960"],
        &["--size and --width/--height both set the frame size"],
    );
    refused(
        engine(TinyModel::DiffusionForcing),
        &["--width", "960"],
        &["--width and --height go together"],
    );
    refused(
        engine(TinyModel::DiffusionForcing),
        &["--size", "960by544"],
        &["--size \"960by544\" is not WIDTHxHEIGHT"],
    );
    refused(
        engine(TinyModel::DiffusionForcing),
        &["--teacache", "0"],
        &["--teacache 0 must be a positive threshold"],
    );
    let without_text = directory.path().join("no-text");
    fs_err::create_dir(&without_text).expect("dir");
    for entry in fs_err::read_dir(engine(TinyModel::DiffusionForcing)).expect("engine") {
        let entry = entry.expect("entry");
        fs_err::copy(entry.path(), without_text.join(entry.file_name())).expect("copy");
    }
    let mut manifest = Manifest::load(&without_text).expect("manifest");
    manifest.text_encoder = None;
    manifest.save(&without_text).expect("save");
    refused(
        &without_text,
        &[],
        &["has no text encoder", "text_encoder/"],
    );
}

/// `--vae-tiling` is planned (diffusers' 256-pixel tiles every 192) and changes the decode only:
/// at 272 pixels wide (two tiles) the sampled latents are the untiled run's bit for bit, the video
/// is not.
#[test]
fn vae_tiling_is_planned_and_changes_only_the_decode() {
    let directory = tempfile::tempdir().expect("tempdir");
    let out = directory.path().join("video.mp4");
    let engine = engine(TinyModel::DiffusionForcing);
    let plan = dry_run(engine, &out, &["--vae-tiling"]);
    assert_eq!(
        plan["vae_tiling"],
        serde_json::json!({"tile": [256, 256], "stride": [192, 192]})
    );
    assert!(dry_run(engine, &out, &[]).get("vae_tiling").is_none());
    let mut command = skyreels(&["generate", "--prompt", "a fox", "--dry-run", "--vae-tiling"]);
    command.arg("--engines").arg(engine).arg("--out").arg(&out);
    let output = command.output().expect("run");
    success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("vae:       tiled decode, 256x256 pixel tiles every 192x192"),
        "{text}"
    );

    let run = |name: &str, extra: &[&str]| {
        let video = directory.path().join(format!("{name}.mp4"));
        let latents = directory.path().join(format!("{name}.safetensors"));
        let latents_arg = latents.to_str().expect("utf-8 path");
        let args: Vec<&str> = ["--save-latents", latents_arg]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        success(&small_generate_sized(&video, "272x32", &args));
        (
            fs_err::read(&latents).expect("latents"),
            fs_err::read(&video).expect("video"),
        )
    };
    let (whole_latents, whole_video) = run("whole", &[]);
    let (tiled_latents, tiled_video) = run("tiled", &["--vae-tiling"]);
    assert_eq!(whole_latents, tiled_latents, "tiling changed the sampling");
    assert_ne!(whole_video, tiled_video, "the tiled decode was not used");
}
