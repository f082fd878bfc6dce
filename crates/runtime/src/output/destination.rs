//! Where outputs go, checked before any model loads (a whole generation must not be thrown away at
//! the end): the directory exists and takes a file, the name is free for its kind, and the video
//! fits the H.264 encoder's limits. A PNG folder that already holds files other than frames is
//! refused, so `--out /` or `--out .` never scatters frames among a user's files.

use std::path::Path;

use crate::output::OutputError;

/// The encoder's largest frame (the `openh264` crate's limit): 3840×2160, or 2160×3840 upright.
pub const MAX_MP4_SIZE: (usize, usize) = (3840, 2160);
/// The highest frame rate an MP4 is written at: frames are stamped in whole milliseconds, so above
/// this two frames would share a timestamp.
pub const MAX_MP4_FRAMES_PER_SECOND: u32 = 1000;

fn refused(path: &Path, problem: String) -> OutputError {
    OutputError::Destination {
        path: path.to_path_buf(),
        problem,
    }
}

/// The directory `path` goes into (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Checks that the directory of `path` exists and takes a new file, and that `path` is not a
/// directory; `flag` names the option in messages.
pub fn check_file_destination(path: &Path, flag: &str) -> Result<(), OutputError> {
    let parent = parent_of(path);
    if parent.exists() && !parent.is_dir() {
        return Err(refused(
            path,
            format!(
                "{} is a file, not a directory\n  fix: choose another {flag}",
                parent.display()
            ),
        ));
    }
    if !parent.is_dir() {
        return Err(refused(
            path,
            format!(
                "directory {} does not exist\n  fix: create it or choose another {flag}",
                parent.display()
            ),
        ));
    }
    if path.is_dir() {
        return Err(refused(
            path,
            format!("it is a directory\n  fix: choose a file name for {flag}"),
        ));
    }
    tempfile::Builder::new()
        .prefix(".skyreels-write-check.")
        .tempfile_in(parent)
        .map_err(|source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|rest| rest.strip_suffix(".png"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a video `--out`: an `.mp4` file of `width`×`height` at `frames_per_second` within the
/// encoder's limits, or a directory for PNG frames that is new, empty or holds only frames.
pub fn check_video_destination(
    out: &Path,
    width: usize,
    height: usize,
    frames_per_second: u32,
) -> Result<(), OutputError> {
    let is_mp4 = out
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("mp4"));
    if !is_mp4 {
        if out.exists() && !out.is_dir() {
            return Err(refused(
                out,
                "it is a file, and a name without .mp4 is a directory for PNG frames\n  fix: end --out with .mp4 for a video, or name a directory for PNG frames".into(),
            ));
        }
        if out.is_dir() {
            let other = fs_err::read_dir(out)?
                .filter_map(|entry| entry.ok())
                .find(|entry| !entry.file_name().to_str().is_some_and(is_frame_name));
            if let Some(other) = other {
                return Err(refused(
                    out,
                    format!(
                        "the PNG frames directory already holds other files (e.g. {})\n  fix: name a new or empty directory, or one holding only frame_NNNNN.png files",
                        other.file_name().to_string_lossy()
                    ),
                ));
            }
            return check_file_destination(&out.join("frame_00000.png"), "--out");
        }
        return check_file_destination(out, "--out");
    }
    if out.is_dir() {
        return Err(refused(
            out,
            "it is a directory\n  fix: choose a file name for the MP4, or a directory name without .mp4 for PNG frames".into(),
        ));
    }
    check_file_destination(out, "--out")?;
    let (long, short) = MAX_MP4_SIZE;
    if !((width <= long && height <= short) || (width <= short && height <= long)) {
        return Err(refused(
            out,
            format!(
                "the H.264 encoder (OpenH264) takes frames of at most {long}×{short} (or {short}×{long}), and this is --width {width} × --height {height}\n  fix: generate at a smaller size, or write PNG frames (an --out without .mp4)"
            ),
        ));
    }
    if !(1..=MAX_MP4_FRAMES_PER_SECOND).contains(&frames_per_second) {
        return Err(refused(
            out,
            format!(
                "--fps {frames_per_second} is outside 1..={MAX_MP4_FRAMES_PER_SECOND}, the frame rates an MP4 is written at\n  fix: use 24 (or 16, the model's other fps bucket)"
            ),
        ));
    }
    Ok(())
}

/// The checks of every output of `skyreels generate`: the video `--out` (see
/// [`check_video_destination`]) and the `--save-latents` file.
pub fn check_generate_destinations(
    out: &Path,
    save_latents: Option<&Path>,
    width: usize,
    height: usize,
    frames_per_second: u32,
) -> Result<(), OutputError> {
    check_video_destination(out, width, height, frames_per_second)?;
    if let Some(latents) = save_latents {
        check_file_destination(latents, "--save-latents")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_directory_with_other_files_is_refused_and_one_with_frames_is_not() {
        let directory = tempfile::tempdir().unwrap();
        let frames = directory.path().join("frames");
        check_video_destination(&frames, 32, 32, 24).unwrap();
        fs_err::create_dir(&frames).unwrap();
        fs_err::write(frames.join("frame_00000.png"), "old frame").unwrap();
        check_video_destination(&frames, 32, 32, 24).unwrap();
        fs_err::write(frames.join("notes.txt"), "mine").unwrap();
        let error = check_video_destination(&frames, 32, 32, 24)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("already holds other files (e.g. notes.txt)") && error.contains("fix:"),
            "{error}"
        );
        let error = check_video_destination(Path::new("/"), 32, 32, 24)
            .unwrap_err()
            .to_string();
        assert!(error.contains("already holds other files"), "{error}");
    }

    #[test]
    fn mp4_limits_name_the_flags_and_the_limit() {
        let directory = tempfile::tempdir().unwrap();
        let out = directory.path().join("video.mp4");
        check_video_destination(&out, 3840, 2160, 24).unwrap();
        check_video_destination(&out, 2160, 3840, 24).unwrap();
        let error = check_video_destination(&out, 3856, 2160, 24)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("at most 3840×2160 (or 2160×3840)")
                && error.contains("--width 3856 × --height 2160"),
            "{error}"
        );
        let error = check_video_destination(&out, 32, 32, 1001)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--fps 1001 is outside 1..=1000"), "{error}");
        let error = check_generate_destinations(
            &out,
            Some(&directory.path().join("missing/latents.safetensors")),
            32,
            32,
            24,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("missing does not exist") && error.contains("--save-latents"),
            "{error}"
        );
        assert_eq!(
            fs_err::read_dir(directory.path()).unwrap().count(),
            0,
            "the write check leaves nothing"
        );
    }
}
