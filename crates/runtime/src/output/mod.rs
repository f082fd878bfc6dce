//! What a run leaves on disk, and the file inputs that mirror it: decoded video as 8-bit RGB,
//! MP4 (H.264 through OpenH264, muxed by `muxide`), PNG frames, and latents as safetensors.
//!
//! Every writer goes through a temporary file beside the destination and renames it into place,
//! so a failed or killed write never leaves a partial file under the final name.

mod color;
mod destination;
mod error;
mod frames;
mod latents;
mod mp4_file;
mod png_frames;

use std::io::{BufWriter, Write};
use std::path::Path;

pub use color::{ColorSpace, YuvMatrix};
pub use destination::{
    MAX_MP4_FRAMES_PER_SECOND, MAX_MP4_SIZE, check_file_destination, check_generate_destinations,
    check_video_destination,
};
pub use error::OutputError;
pub use frames::{Video, to_uint8};
pub use latents::{read_tensor, save_latents};
pub use mp4_file::{Mp4Options, read_mp4, write_mp4};
pub use png_frames::{png_frame_path, write_png_frames};

/// Writes `path` through a temporary file in the same directory (created if missing) and renames
/// it into place only when `write` succeeds; on failure the temporary file is removed.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> Result<(), OutputError>,
) -> Result<(), OutputError> {
    let cannot_write = |source: std::io::Error| OutputError::Create {
        path: path.to_path_buf(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        cannot_write(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    std::fs::create_dir_all(directory).map_err(cannot_write)?;
    let temporary = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name.to_string_lossy()))
        .suffix(".partial")
        .tempfile_in(directory)
        .map_err(cannot_write)?;
    let unfinished = crate::interrupt::remove_on_signal(temporary.path());
    let mut writer = BufWriter::new(temporary.as_file());
    write(&mut writer)?;
    writer.flush().map_err(cannot_write)?;
    drop(writer);
    // Temporary files are created 0600; outputs get the usual 0644 (then the umask applies on creation only).
    use std::os::unix::fs::PermissionsExt;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(cannot_write)?;
    unfinished
        .finish(|| temporary.persist(path))
        .map_err(|error| cannot_write(error.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_leaves_no_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("clip.mp4");
        fs_err::write(&path, b"previous").unwrap();
        let result = write_atomically(&path, |writer| {
            writer.write_all(b"half of a new file").unwrap();
            Err(OutputError::InvalidVideo("stopped halfway".to_string()))
        });
        assert!(result.is_err());
        assert_eq!(fs_err::read(&path).unwrap(), b"previous");
        let entries: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["clip.mp4"]);
        write_atomically(&path, |writer| {
            writer.write_all(b"new").map_err(OutputError::Io)
        })
        .unwrap();
        assert_eq!(fs_err::read(&path).unwrap(), b"new");
    }
}
