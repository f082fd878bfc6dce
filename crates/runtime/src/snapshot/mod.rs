//! Snapshot regression testing for users: `record` runs named requests (a cases YAML) and keeps,
//! per case, the noise it drew, its final latents, its decoded frames (PNG) and where it ran;
//! `check` replays every case with the recorded noise (so any backend sees the same draws) and
//! compares latents and frames within a tolerance (docs/SNAPSHOTS.md).
//!
//! ```text
//! SNAPDIR/snapshot.json              format, cases, where it was recorded
//! SNAPDIR/<case>/case.json           the request as given, the plan, the frame count
//! SNAPDIR/<case>/noise.safetensors   every draw, tensors "0", "1", … (NoiseSource::from_file)
//! SNAPDIR/<case>/latents.safetensors tensor `latents` [1, 16, F, h, w]
//! SNAPDIR/<case>/frames/frame_NNNNN.png
//! ```

pub mod compare;
pub mod tolerance;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, RuntimeError};
use crate::job::json::{parse_request, plan_error};
use crate::job::run::first_video;
use crate::job::{GenerateRequest, JobPlan, Models, OutputRequest, generate_job_with_noise};
use crate::noise::NoiseSource;
use crate::output::{self, Video};
use crate::pipeline::progress::Observer;
use compare::{Comparison, compare_latents, frames_psnr};
use tolerance::{Platform, Tolerance};

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const SNAPSHOT_FILE: &str = "snapshot.json";
const CASE_FILE: &str = "case.json";
const NOISE_FILE: &str = "noise.safetensors";
const LATENTS_FILE: &str = "latents.safetensors";
const FRAMES_DIR: &str = "frames";

/// Where and with what a snapshot was recorded or replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// Backend and engine precision (they pick the default tolerance).
    #[serde(flatten)]
    pub platform: Platform,
    /// SHA-256 of the engine's `manifest.yaml`.
    pub manifest_sha256: String,
    /// The GPU's name, or the CPU's model name.
    pub device: String,
    /// ONNX Runtime version loaded.
    pub onnxruntime: String,
    /// The skyreels version.
    pub skyreels: String,
}

/// `snapshot.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    format_version: u32,
    recorded: RunMetadata,
    cases: Vec<String>,
}

/// `<case>/case.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CaseFile {
    /// The request as the cases file gave it.
    request: Value,
    /// Decoded frames stored.
    frames: usize,
    /// The plan it ran (for people reading the snapshot).
    plan: Value,
}

fn invalid(message: String) -> RuntimeError {
    RuntimeError::Invalid(message)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Where `models` run now.
pub fn run_metadata(models: &Models) -> Result<RunMetadata> {
    let engine = models.engine();
    let manifest = fs_err::read(engine.dir.join(skyreels_contract::manifest::MANIFEST_FILE))?;
    let backend = models.backend();
    let device = match backend.device() {
        Some(index) => {
            crate::engine::gpu_name(index).unwrap_or_else(|| format!("CUDA device {index}"))
        }
        None => cpu_name(),
    };
    Ok(RunMetadata {
        platform: Platform {
            backend: backend.name().to_string(),
            precision: engine.manifest.precision.name().to_string(),
        },
        manifest_sha256: crate::job::plan::sha256_hex(&manifest),
        device,
        onnxruntime: crate::engine::onnxruntime_version()?,
        skyreels: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Reads a cases file: a YAML map from case name to request (the server's fields).
pub fn read_cases(path: &Path) -> Result<BTreeMap<String, Value>> {
    let text = fs_err::read_to_string(path)?;
    let cases: BTreeMap<String, Value> =
        skyreels_contract::parse_yaml(&text, path, "snapshot cases")?;
    if cases.is_empty() {
        return Err(invalid(format!(
            "{} has no cases\n  fix: map case names to requests, e.g.\n  fox: {{prompt: a red fox running through fresh snow, size: 96x64, num_frames: 17, steps: 4}}",
            path.display()
        )));
    }
    for (name, request) in &cases {
        let clean = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !clean {
            return Err(invalid(format!(
                "{}: case name `{name}` is not a plain file name\n  fix: use letters, digits, -, _ and . only",
                path.display()
            )));
        }
        for field in ["noise", "image", "last_image", "video"] {
            if request.get(field).is_some() {
                return Err(invalid(format!(
                    "{}: case `{name}` gives `{field}`; snapshots record their own noise and take no input files yet\n  fix: drop `{field}` from the case",
                    path.display()
                )));
            }
        }
    }
    Ok(cases)
}

fn case_request(name: &str, body: &Value) -> Result<GenerateRequest> {
    parse_request(body).map_err(|error| invalid(format!("case `{name}`: {}", error.message)))
}

fn plan_case(
    models: &Models,
    name: &str,
    request: &GenerateRequest,
    dir: &Path,
) -> Result<JobPlan> {
    let output = OutputRequest {
        out: dir.join("video.mp4"),
        ..OutputRequest::default()
    };
    JobPlan::new(models.engine(), models.backend(), request, &output).map_err(|error| {
        invalid(format!(
            "case `{name}`: {}",
            plan_error(request, &error.to_string()).message
        ))
    })
}

/// Samples and decodes `plan` drawing from `noise`; returns the final latents and the 8-bit video.
fn run_case(
    plan: &JobPlan,
    models: &mut Models,
    noise: &mut NoiseSource,
    observer: &mut dyn Observer,
) -> Result<(crate::Tensor, Video)> {
    let generated = generate_job_with_noise(plan, models, noise, observer)?;
    if let Some(work_dir) = generated.work_dir {
        work_dir.finish()?;
    }
    let video = generated
        .generation
        .video
        .as_ref()
        .ok_or_else(|| invalid("the generation decoded no video".into()))?;
    let frames = first_video(video)?;
    Ok((generated.generation.latents, frames))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| invalid(format!("cannot write {} as JSON: {e}", path.display())))?;
    let partial = path.with_extension("json.partial");
    fs_err::write(&partial, text + "\n")?;
    fs_err::rename(&partial, path)?;
    Ok(())
}

/// Records every case of `cases` into the new directory `out`; returns the case names.
pub fn record(
    cases: &Path,
    out: &Path,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> Result<Vec<String>> {
    let requests = read_cases(cases)?;
    if out.exists() && fs_err::read_dir(out)?.next().is_some() {
        return Err(invalid(format!(
            "snapshot directory {} exists and is not empty\n  fix: choose a new --out, or delete it to record again",
            out.display()
        )));
    }
    // Every case is planned (and so checked) before anything runs or is written.
    let checked = requests
        .iter()
        .map(|(name, body)| {
            let request = case_request(name, body)?;
            plan_case(models, name, &request, &std::env::temp_dir())?;
            Ok(request)
        })
        .collect::<Result<Vec<_>>>()?;
    let recorded = run_metadata(models)?;
    for ((name, body), request) in requests.iter().zip(&checked) {
        let dir = out.join(name);
        fs_err::create_dir_all(&dir)?;
        let plan = &plan_case(models, name, request, &dir)?;
        let mut noise = NoiseSource::recording(NoiseSource::seeded(plan.settings.seed));
        let (latents, frames) = run_case(plan, models, &mut noise, observer)
            .map_err(|error| invalid(format!("case `{name}`: {error}")))?;
        noise.save_draws(&dir.join(NOISE_FILE))?;
        output::save_latents(&dir.join(LATENTS_FILE), [("latents", &latents)])?;
        output::write_png_frames(&frames, &dir.join(FRAMES_DIR))?;
        let plan_json = serde_json::to_value(plan).map_err(|e| {
            invalid(format!(
                "case `{name}`: the plan cannot be written as JSON: {e}"
            ))
        })?;
        write_json(
            &dir.join(CASE_FILE),
            &CaseFile {
                request: body.clone(),
                frames: frames.num_frames(),
                plan: plan_json,
            },
        )?;
        tracing::info!("recorded case {name}");
    }
    let names: Vec<String> = requests.keys().cloned().collect();
    write_json(
        &out.join(SNAPSHOT_FILE),
        &SnapshotFile {
            format_version: FORMAT_VERSION,
            recorded,
            cases: names.clone(),
        },
    )?;
    Ok(names)
}

/// One case's replay.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case.
    pub name: String,
    /// The differences, when the replay ran and matched in shape.
    pub comparison: Option<Comparison>,
    /// Why the case could not be compared (failed run, other shapes).
    pub error: Option<String>,
    /// Whether it is within the tolerance.
    pub passed: bool,
}

/// A whole check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Where the snapshot was recorded.
    pub recorded: RunMetadata,
    /// Where it was replayed.
    pub replayed: RunMetadata,
    /// The limits applied.
    pub tolerance: Tolerance,
    /// Every case, in name order.
    pub cases: Vec<CaseResult>,
}

impl CheckReport {
    /// The names of the cases outside the tolerance.
    pub fn failed(&self) -> Vec<&str> {
        self.cases
            .iter()
            .filter(|case| !case.passed)
            .map(|case| case.name.as_str())
            .collect()
    }
}

fn read_frames(dir: &Path, count: usize) -> Result<Video> {
    let mut pixels = Vec::new();
    let mut size = (0, 0);
    for index in 0..count {
        let picture = crate::image::RgbImage::open(&output::png_frame_path(dir, index))?;
        size = (picture.width, picture.height);
        pixels.extend_from_slice(&picture.pixels);
    }
    Ok(Video::new(size.0, size.1, pixels)?)
}

fn check_case(
    snapshots: &Path,
    name: &str,
    models: &mut Models,
    tolerance: &Tolerance,
    observer: &mut dyn Observer,
) -> Result<CaseResult> {
    let dir = snapshots.join(name);
    let case: CaseFile = serde_json::from_slice(&fs_err::read(dir.join(CASE_FILE))?)
        .map_err(|e| invalid(format!("{}: {e}", dir.join(CASE_FILE).display())))?;
    let request = case_request(name, &case.request)?;
    let recorded_latents = output::read_tensor(&dir.join(LATENTS_FILE), "latents", &[None; 5])?;
    let recorded_frames = read_frames(&dir.join(FRAMES_DIR), case.frames)?;
    let plan = plan_case(models, name, &request, &dir)?;
    let mut noise = NoiseSource::from_file(&dir.join(NOISE_FILE))?;
    let failed = |error: String| CaseResult {
        name: name.to_string(),
        comparison: None,
        error: Some(error),
        passed: false,
    };
    let (latents, frames) = match run_case(&plan, models, &mut noise, observer) {
        Ok(replayed) => replayed,
        Err(error) => return Ok(failed(format!("the replay failed: {error}"))),
    };
    if noise.remaining() > 0 {
        return Ok(failed(format!(
            "the replay drew fewer noise tensors than were recorded ({} left)",
            noise.remaining()
        )));
    }
    let Some((latents_max_abs, latents_relative)) = compare_latents(&latents, &recorded_latents)
    else {
        return Ok(failed(format!(
            "latents have shape {:?}, recorded {:?}",
            latents.shape, recorded_latents.shape
        )));
    };
    let Some(frames_psnr) = frames_psnr(&frames, &recorded_frames) else {
        return Ok(failed(format!(
            "{} frames of {}x{}, recorded {} of {}x{}",
            frames.num_frames(),
            frames.width(),
            frames.height(),
            recorded_frames.num_frames(),
            recorded_frames.width(),
            recorded_frames.height()
        )));
    };
    let comparison = Comparison {
        latents_max_abs,
        latents_relative,
        frames_psnr,
    };
    Ok(CaseResult {
        name: name.to_string(),
        passed: tolerance.admits(&comparison),
        comparison: Some(comparison),
        error: None,
    })
}

/// Replays every case of the snapshot directory `snapshots` with `models` and compares it with
/// its recording, within `tolerance` (`--tolerance` text: `exact` or `max_abs=…,relative=…,psnr=…`
/// over the default for the recorded and replaying backends and precisions).
pub fn check(
    snapshots: &Path,
    tolerance: Option<&str>,
    models: &mut Models,
    observer: &mut dyn Observer,
) -> Result<CheckReport> {
    let path = snapshots.join(SNAPSHOT_FILE);
    if !path.is_file() {
        return Err(invalid(format!(
            "{} is not a snapshot directory (no {SNAPSHOT_FILE})\n  fix: record one with skyreels snapshot record --out {}",
            snapshots.display(),
            snapshots.display()
        )));
    }
    let snapshot: SnapshotFile = serde_json::from_slice(&fs_err::read(&path)?)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if snapshot.format_version != FORMAT_VERSION {
        return Err(invalid(format!(
            "{} has snapshot format {}, this build reads {FORMAT_VERSION}\n  fix: record it again with this build",
            path.display(),
            snapshot.format_version
        )));
    }
    let replayed = run_metadata(models)?;
    let base = Tolerance::default_for(&snapshot.recorded.platform, &replayed.platform);
    let tolerance = match tolerance {
        Some(text) => Tolerance::parse(text, base)?,
        None => base,
    };
    let mut cases = Vec::new();
    for name in &snapshot.cases {
        cases.push(check_case(snapshots, name, models, &tolerance, observer)?);
    }
    Ok(CheckReport {
        recorded: snapshot.recorded,
        replayed,
        tolerance,
        cases,
    })
}

fn number(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.is_infinite() {
        "inf".into()
    } else {
        format!("{value:.3e}")
    }
}

/// The check as a table for people: one row per case, then the tolerance and both platforms.
pub fn table(report: &CheckReport) -> String {
    let width = report
        .cases
        .iter()
        .map(|case| case.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>15}  {:>16}  {:>13}  result",
        "case", "latents max-abs", "latents relative", "frames PSNR"
    );
    for case in &report.cases {
        match (&case.comparison, &case.error) {
            (Some(c), _) => {
                let psnr = if c.frames_psnr.is_infinite() {
                    "inf".to_string()
                } else {
                    format!("{:.2} dB", c.frames_psnr)
                };
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>15}  {:>16}  {:>13}  {}",
                    case.name,
                    number(c.latents_max_abs),
                    number(c.latents_relative),
                    psnr,
                    if case.passed { "ok" } else { "FAILED" }
                );
            }
            (None, error) => {
                let _ = writeln!(
                    out,
                    "{:<width$}  FAILED: {}",
                    case.name,
                    error.as_deref().unwrap_or("not compared")
                );
            }
        }
    }
    let t = &report.tolerance;
    let psnr = if t.frames_min_psnr.is_infinite() {
        "identical frames".to_string()
    } else {
        format!("PSNR ≥ {} dB", t.frames_min_psnr)
    };
    let _ = writeln!(
        out,
        "tolerance: max-abs ≤ {}, relative ≤ {}, {psnr}",
        number(t.latents_max_abs),
        number(t.latents_relative)
    );
    for (label, run) in [
        ("recorded", &report.recorded),
        ("replayed", &report.replayed),
    ] {
        let _ = writeln!(
            out,
            "{label}: {} {} on {}, ONNX Runtime {}, manifest {}",
            run.platform.backend,
            run.platform.precision,
            run.device,
            run.onnxruntime,
            &run.manifest_sha256[..run.manifest_sha256.len().min(12)]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(backend: &str, sha: &str) -> RunMetadata {
        RunMetadata {
            platform: Platform {
                backend: backend.into(),
                precision: "fp32".into(),
            },
            manifest_sha256: sha.into(),
            device: "Test CPU".into(),
            onnxruntime: "1.31.1".into(),
            skyreels: "0.1.0".into(),
        }
    }

    #[test]
    fn the_table_shows_every_case_and_both_platforms() {
        let report = CheckReport {
            recorded: run("cpu", "0123456789abcdef"),
            replayed: run("cuda", "0123456789abcdef"),
            tolerance: Tolerance::FLOAT32_ACROSS_BACKENDS,
            cases: vec![
                CaseResult {
                    name: "fox".into(),
                    comparison: Some(Comparison {
                        latents_max_abs: 0.0,
                        latents_relative: 0.0,
                        frames_psnr: f64::INFINITY,
                    }),
                    error: None,
                    passed: true,
                },
                CaseResult {
                    name: "long-video".into(),
                    comparison: Some(Comparison {
                        latents_max_abs: 0.5,
                        latents_relative: 0.0301,
                        frames_psnr: 28.456,
                    }),
                    error: None,
                    passed: false,
                },
                CaseResult {
                    name: "cat".into(),
                    comparison: None,
                    error: Some("latents have shape [1], recorded [2]".into()),
                    passed: false,
                },
            ],
        };
        assert_eq!(report.failed(), ["long-video", "cat"]);
        insta::assert_snapshot!(table(&report), @r"
        case        latents max-abs  latents relative    frames PSNR  result
        fox                       0                 0            inf  ok
        long-video         5.000e-1          3.010e-2       28.46 dB  FAILED
        cat         FAILED: latents have shape [1], recorded [2]
        tolerance: max-abs ≤ 1.000e-1, relative ≤ 1.000e-2, PSNR ≥ 40 dB
        recorded: cpu fp32 on Test CPU, ONNX Runtime 1.31.1, manifest 0123456789ab
        replayed: cuda fp32 on Test CPU, ONNX Runtime 1.31.1, manifest 0123456789ab
        ");
    }
}
