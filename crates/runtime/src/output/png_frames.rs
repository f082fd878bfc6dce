use std::path::{Path, PathBuf};

use crate::output::{OutputError, Video, write_atomically};

/// The file of frame `index` in a PNG frames directory: `directory/frame_00000.png`, … (five
/// digits, more past 99999).
pub fn png_frame_path(directory: &Path, index: usize) -> PathBuf {
    directory.join(format!("frame_{index:05}.png"))
}

/// Writes every frame of `video` as an 8-bit RGB PNG at [`png_frame_path`] in `directory`
/// (created if missing). The frames are written into a staging directory beside it and moved in
/// only when all of them are complete, so a failed run adds no frames at all.
pub fn write_png_frames(video: &Video, directory: &Path) -> Result<(), OutputError> {
    let (width, height) = (video.width() as u32, video.height() as u32);
    let cannot_write = |source: std::io::Error| OutputError::Create {
        path: directory.to_path_buf(),
        source,
    };
    let parent = match directory.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = directory
        .file_name()
        .map_or_else(|| "frames".into(), |n| n.to_string_lossy().into_owned());
    std::fs::create_dir_all(parent).map_err(cannot_write)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(parent)
        .map_err(cannot_write)?;
    for (index, frame) in video.frames().enumerate() {
        let path = png_frame_path(staging.path(), index);
        write_atomically(&path, |writer| {
            let png_error = |source| OutputError::Png {
                path: png_frame_path(directory, index),
                source,
            };
            let mut encoder = png::Encoder::new(writer, width, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut image = encoder.write_header().map_err(png_error)?;
            image.write_image_data(frame).map_err(png_error)?;
            image.finish().map_err(png_error)
        })
        .map_err(|error| match error {
            OutputError::Create { source, .. } => OutputError::Create {
                path: png_frame_path(directory, index),
                source,
            },
            other => other,
        })?;
    }
    std::fs::create_dir_all(directory).map_err(cannot_write)?;
    for index in 0..video.num_frames() {
        let path = png_frame_path(directory, index);
        if let Err(source) = std::fs::rename(png_frame_path(staging.path(), index), &path) {
            for moved in 0..index {
                let _ = std::fs::remove_file(png_frame_path(directory, moved));
            }
            return Err(OutputError::Create { path, source });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::BufReader::new(fs_err::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        buffer.truncate(info.buffer_size());
        (info.width, info.height, buffer)
    }

    #[test]
    fn png_frames_round_trip_exactly() {
        let directory = tempfile::tempdir().unwrap();
        let frames_directory = directory.path().join("nested").join("frames");
        let (width, height, num_frames) = (7, 5, 3);
        let pixels: Vec<u8> = (0..num_frames * width * height * 3)
            .map(|i| (i * 37 % 256) as u8)
            .collect();
        let video = Video::new(width, height, pixels).unwrap();
        write_png_frames(&video, &frames_directory).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&frames_directory)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
        );
        for index in 0..num_frames {
            let (read_width, read_height, data) =
                read_png(&png_frame_path(&frames_directory, index));
            assert_eq!((read_width as usize, read_height as usize), (width, height));
            assert_eq!(data, video.frame(index));
        }
    }

    #[test]
    fn png_frames_to_an_unwritable_directory_fail_naming_it() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("file");
        fs_err::write(&blocker, b"x").unwrap();
        let video = Video::new(2, 2, vec![9; 12]).unwrap();
        let message = write_png_frames(&video, &blocker.join("frames"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("file/frames") && message.contains("fix:"),
            "{message}"
        );
        let entries: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["file"]);
    }

    #[test]
    fn a_failed_frame_leaves_no_frames_behind() {
        let directory = tempfile::tempdir().unwrap();
        let frames_directory = directory.path().join("frames");
        let video = Video::new(2, 2, vec![9; 12 * 3]).unwrap();
        // A frame path that is a non-empty directory cannot be renamed onto: the third frame fails.
        fs_err::create_dir_all(png_frame_path(&frames_directory, 2).join("occupied")).unwrap();
        let message = write_png_frames(&video, &frames_directory)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("frame_00002.png") && message.contains("fix:"),
            "{message}"
        );
        let left: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["frames"], "the staging directory is removed");
        let frames: Vec<_> = std::fs::read_dir(&frames_directory)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(frames, ["frame_00002.png"], "frames 0 and 1 are taken back");
    }
}
