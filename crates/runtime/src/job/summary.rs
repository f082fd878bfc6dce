//! What a finished job (or a failed one) reports as JSON: enough to reproduce it (seed, prompts,
//! size, sampling settings, variant, engine and its manifest hash, backend, device, versions)
//! and what it cost (timings per stage, DiT passes), with the whole plan attached.

use serde_json::{Value, json};

use super::plan::JobPlan;
use super::run::JobReport;
use crate::onnxruntime::ONNXRUNTIME_VERSION;

/// The ONNX Runtime version this process loads, or the one it needs when the library cannot be
/// found (then loading would have failed before any summary).
fn onnxruntime_loaded() -> String {
    crate::engine::onnxruntime_version().unwrap_or_else(|_| ONNXRUNTIME_VERSION.to_string())
}

/// The `--json` summary of `report`, a finished run of `plan`.
pub fn summary_json(plan: &JobPlan, report: &JobReport) -> Value {
    let s = &plan.settings;
    let timings: serde_json::Map<String, Value> = report
        .timings
        .0
        .iter()
        .map(|(stage, seconds)| (stage.name().to_string(), json!(seconds)))
        .collect();
    json!({
        "output": plan.output.out,
        "frames": report.written.frames,
        "width": report.written.width,
        "height": report.written.height,
        "size": format!("{}x{}", s.width, s.height),
        "num_frames": s.num_frames,
        "seed": s.seed,
        "prompt": s.prompt,
        "negative_prompt": s.negative_prompt,
        "steps": s.steps,
        "guidance": s.guidance,
        "shift": s.shift,
        "fps": s.fps,
        "variant": plan.variant.name,
        "engine_dir": plan.engine.dir,
        "manifest_sha256": plan.engine.manifest_sha256,
        "backend": plan.backend.name(),
        "device": plan.backend.device().map(|device| json!({
            "index": device,
            "name": crate::engine::gpu_name(device),
        })),
        "versions": {
            "skyreels": env!("CARGO_PKG_VERSION"),
            "onnxruntime": onnxruntime_loaded(),
        },
        "windows": report.stats.windows,
        "windows_resumed": report.stats.windows_resumed,
        "window_seconds": report.stats.window_seconds,
        "rows": report.stats.rows,
        "dit_forwards": report.stats.forwards,
        "blocks_computed": report.stats.blocks_computed,
        "blocks_skipped": report.stats.blocks_skipped,
        "timings": timings,
        "seconds": report.seconds,
        "gpu_arena": report.gpu_arena,
        "plan": plan,
    })
}

/// The request field an error message is about: its first `--flag`, as the field name
/// (`--num-frames 6 is …` → `num_frames`).
pub fn field_of(message: &str) -> Option<String> {
    let start = message.find("--")? + 2;
    let name: String = message[start..]
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| name.replace('-', "_"))
}

/// A failure as JSON: `{"error": {"message": …, "field": …}}`, the field when the message names
/// one.
pub fn error_json(message: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "field": field_of(message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_request_field_of_their_flag() {
        assert_eq!(
            field_of("--num-frames 6 is not of the form 4k+1").as_deref(),
            Some("num_frames")
        );
        assert_eq!(
            field_of("the --video has 9 frames, fewer than --overlap-history 17").as_deref(),
            Some("video")
        );
        assert_eq!(field_of("engine x: has no DiT"), None);
        let error = error_json("--size \"9\" is not WIDTHxHEIGHT\n  fix: …");
        assert_eq!(error["error"]["field"], "size");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("--size")
        );
    }
}
