//! Where a job writes, checked before any work: the video (`.mp4`, or a folder of PNG frames),
//! the latents, the work directory of long jobs and the H.264 quantizer.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::request::OutputRequest;
use crate::error::{Result, RuntimeError};
use crate::output::Mp4Options;

/// How the video is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoFormat {
    /// One H.264 MP4 file.
    Mp4,
    /// A directory of `frame_00000.png`, ….
    PngFrames,
}

/// The checked outputs of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputPlan {
    /// The video's path.
    pub out: PathBuf,
    /// How the video is stored.
    pub format: VideoFormat,
    /// Where the final latents go, if anywhere.
    pub save_latents: Option<PathBuf>,
    /// Where finished windows are kept (multi-window jobs, or when asked for).
    pub work_dir: Option<PathBuf>,
    /// H.264 quantizer of MP4 output.
    pub h264_quantizer: u8,
}

fn invalid(message: String) -> RuntimeError {
    RuntimeError::Invalid(message)
}

/// Refuses `path` (named by `flag`) when its directory is missing or is a file.
pub fn check_output_path(flag: &str, path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.exists() && !parent.is_dir() {
        return Err(invalid(format!(
            "cannot write {}: {} is a file, not a directory\n  fix: choose another {flag}",
            path.display(),
            parent.display()
        )));
    }
    if !parent.is_dir() {
        return Err(invalid(format!(
            "cannot write {}: directory {} does not exist\n  fix: create it or choose another {flag}",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// The format `--out` asks for: `.mp4` is a video file; a name without extension (or an existing
/// directory) is a folder of PNG frames; any other extension is refused rather than guessed.
pub fn video_format(out: &Path) -> Result<VideoFormat> {
    let extension = out.extension().map(|e| e.to_string_lossy().into_owned());
    match extension {
        Some(e) if e.eq_ignore_ascii_case("mp4") => {
            if out.is_dir() {
                return Err(invalid(format!(
                    "cannot write {}: it is a directory\n  fix: choose a file name for the MP4, or a directory name without .mp4 for PNG frames",
                    out.display()
                )));
            }
            Ok(VideoFormat::Mp4)
        }
        Some(_) if out.is_dir() => Ok(VideoFormat::PngFrames),
        Some(e) => Err(invalid(format!(
            "--out {}: the runtime writes no .{e} files\n  fix: end --out with .mp4 for an H.264 video, or give a directory name without extension for PNG frames",
            out.display()
        ))),
        None => {
            if out.exists() && !out.is_dir() {
                return Err(invalid(format!(
                    "cannot write PNG frames into {}: it is a file\n  fix: end --out with .mp4 for a video, or name a directory for PNG frames",
                    out.display()
                )));
            }
            Ok(VideoFormat::PngFrames)
        }
    }
}

/// Checks `request` for a job of `windows` sampling windows.
pub fn plan_outputs(request: &OutputRequest, windows: usize) -> Result<OutputPlan> {
    check_output_path("--out", &request.out)?;
    let format = video_format(&request.out)?;
    if let Some(latents) = &request.save_latents {
        check_output_path("--save-latents", latents)?;
    }
    let h264_quantizer = request
        .h264_quantizer
        .unwrap_or(Mp4Options::default().quantizer);
    if !(12..=51).contains(&h264_quantizer) {
        return Err(invalid(format!(
            "--h264-quantizer {h264_quantizer} is outside 12..=51\n  fix: use 16 (the default, near-transparent), lower for better quality and larger files, higher for smaller ones"
        )));
    }
    let work_dir = match (&request.work_dir, windows > 1) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(PathBuf::from(format!("{}.work", request.out.display()))),
        (None, false) => None,
    };
    Ok(OutputPlan {
        out: request.out.clone(),
        format,
        save_latents: request.save_latents.clone(),
        work_dir,
        h264_quantizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_decides_the_format_and_unknown_ones_are_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| directory.path().join(name);
        assert_eq!(video_format(&at("fox.mp4")).unwrap(), VideoFormat::Mp4);
        assert_eq!(video_format(&at("fox.MP4")).unwrap(), VideoFormat::Mp4);
        assert_eq!(video_format(&at("frames")).unwrap(), VideoFormat::PngFrames);
        fs_err::create_dir(at("run.v2")).unwrap();
        assert_eq!(
            video_format(&at("run.v2")).unwrap(),
            VideoFormat::PngFrames,
            "an existing directory keeps its dotted name"
        );
        for name in ["fox.avi", "fox.webm", "fox.png"] {
            let error = video_format(&at(name)).unwrap_err().to_string();
            assert!(
                error.contains(name) && error.contains(".mp4") && error.contains("fix:"),
                "{error}"
            );
        }
    }

    #[test]
    fn long_jobs_get_a_work_directory_beside_the_output() {
        let directory = tempfile::tempdir().expect("tempdir");
        let request = OutputRequest {
            out: directory.path().join("fox.mp4"),
            ..OutputRequest::default()
        };
        assert_eq!(plan_outputs(&request, 1).unwrap().work_dir, None);
        assert_eq!(
            plan_outputs(&request, 3).unwrap().work_dir,
            Some(directory.path().join("fox.mp4.work"))
        );
        let error = plan_outputs(
            &OutputRequest {
                h264_quantizer: Some(60),
                ..request
            },
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("--h264-quantizer 60"), "{error}");
    }
}
