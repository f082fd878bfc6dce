//! MP4 (H.264) writing with OpenH264 (built from its bundled source) and `muxide`, and reading
//! with the `mp4` demuxer and OpenH264's decoder; no external program is involved.

use std::cell::Cell;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use muxide::api::{MuxerBuilder, VideoCodec};
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{YUVSlices, YUVSource};

use crate::output::color::{self, ColorSpace};
use crate::output::{OutputError, Video, write_atomically};

/// H.264 settings for [`write_mp4`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mp4Options {
    /// Frames per second recorded in the file (SkyReels-V2 writes 24).
    pub frames_per_second: f32,
    /// The quantizer every frame is coded with, 12..=51; lower is better and larger (OpenH264's
    /// rate control does not go below 12). The default 16 is near-transparent for generated clips.
    pub quantizer: u8,
    /// Frames between IDR keyframes; 0 makes only the first frame a keyframe.
    pub keyframe_interval: u32,
}

impl Default for Mp4Options {
    fn default() -> Mp4Options {
        Mp4Options {
            frames_per_second: 24.0,
            quantizer: 16,
            keyframe_interval: 48,
        }
    }
}

/// Encodes `video` as H.264 (constrained baseline, 4:2:0, BT.709 limited range, signalled in the
/// stream's VUI) in an MP4 at `path`; the file appears complete or not at all. Width and height
/// must be even and at most 3840×2160 or 2160×3840 (the `openh264` crate's limit, [`crate::output::MAX_MP4_SIZE`]).
pub fn write_mp4(video: &Video, path: &Path, options: &Mp4Options) -> Result<(), OutputError> {
    let (width, height) = (video.width(), video.height());
    if width % 2 != 0 || height % 2 != 0 {
        return Err(OutputError::InvalidVideo(format!(
            "{width}×{height} frames cannot be stored as 4:2:0 H.264 for {}: width and height must be even\n  fix: generate at an even size (SkyReels sizes are multiples of 16) or crop one row/column",
            path.display()
        )));
    }
    if video.num_frames() == 0 {
        return Err(OutputError::InvalidVideo(format!(
            "no frames to write to {}",
            path.display()
        )));
    }
    let frames_per_second = options.frames_per_second;
    if !(frames_per_second.is_finite() && frames_per_second > 0.0) {
        return Err(OutputError::InvalidVideo(format!(
            "frames per second must be a positive number, got {frames_per_second}"
        )));
    }
    if !(12..=51).contains(&options.quantizer) {
        return Err(OutputError::InvalidVideo(format!(
            "the H.264 quantizer must be in 12..=51, got {}",
            options.quantizer
        )));
    }
    let encode_error = |error: openh264::Error| OutputError::Encode {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let mux_error = |source| OutputError::Mux {
        path: path.to_path_buf(),
        source,
    };

    let pixels_per_second = (width * height) as f64 * f64::from(frames_per_second);
    // The nominal rate (the quantizer decides the quality) stays within H.264 level 5.2's 288 Mbit/s,
    // which OpenH264 refuses to exceed: 3840×2160 at 24 fps would ask for 398 Mbit/s.
    let bits_per_second = (pixels_per_second * 2.0).min(288_000_000.0) as u32;
    let config = EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Quality)
        .bitrate(BitRate::from_bps(bits_per_second))
        .max_frame_rate(FrameRate::from_hz(frames_per_second))
        .qp(QpRange::new(options.quantizer, options.quantizer))
        .skip_frames(false)
        .background_detection(false)
        .complexity(Complexity::High)
        .intra_frame_period(IntraFramePeriod::from_num_frames(options.keyframe_interval))
        .vui(VuiConfig::bt709());
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config).map_err(encode_error)?;

    let (mut y, mut u, mut v) = (
        vec![0u8; width * height],
        vec![0u8; width * height / 4],
        vec![0u8; width * height / 4],
    );
    let mut encoded = Vec::new();
    write_atomically(path, |writer| {
        let mut muxer = MuxerBuilder::new(writer)
            .video(
                VideoCodec::H264,
                width as u32,
                height as u32,
                f64::from(frames_per_second),
            )
            .build()
            .map_err(mux_error)?;
        for (index, frame) in video.frames().enumerate() {
            color::rgb_to_i420(
                frame,
                width,
                height,
                ColorSpace::BT709_LIMITED,
                &mut y,
                &mut u,
                &mut v,
            );
            let source =
                YUVSlices::new((&y, &u, &v), (width, height), (width, width / 2, width / 2));
            let seconds = index as f64 / f64::from(frames_per_second);
            let timestamp = openh264::Timestamp::from_millis((seconds * 1000.0) as u64);
            let bitstream = if index == 0 {
                without_stderr(|| encoder.encode_at(&source, timestamp))
            } else {
                encoder.encode_at(&source, timestamp)
            }
            .map_err(encode_error)?;
            let keyframe = bitstream.frame_type() == FrameType::IDR;
            encoded.clear();
            bitstream.write_vec(&mut encoded);
            if encoded.is_empty() {
                return Err(OutputError::Encode {
                    path: path.to_path_buf(),
                    message: format!("the encoder produced no data for frame {index}"),
                });
            }
            muxer
                .write_video(seconds, &encoded, keyframe)
                .map_err(mux_error)?;
        }
        muxer.finish().map_err(mux_error)
    })
}

/// Runs `work` with the process's stderr pointed at `/dev/null`. OpenH264 validates its parameters
/// when the first frame initialises the encoder and prints a warning about frame skipping (off by
/// design here: every frame is kept) before the crate can lower its trace level; without this
/// every MP4 written would print it. Whatever another thread writes to stderr meanwhile is lost.
fn without_stderr<T>(work: impl FnOnce() -> T) -> T {
    let saved = rustix::io::dup(std::io::stderr());
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
    let (Ok(saved), Ok(null)) = (saved, null) else {
        return work();
    };
    if rustix::stdio::dup2_stderr(&null).is_err() {
        return work();
    }
    let value = work();
    // Restoring can only fail if descriptor 2 was closed meanwhile; nothing better can be done.
    let _ = rustix::stdio::dup2_stderr(&saved);
    value
}

/// Decodes the first H.264 (`avc1`) video track of the MP4 at `path` to RGB frames in output
/// order, converting with the colour space its sequence parameter set signals (BT.601 limited
/// range when unsignalled). Fragmented MP4 and other codecs are refused with a fix.
pub fn read_mp4(path: &Path) -> Result<Video, OutputError> {
    let unreadable = |message: String| OutputError::ReadMp4 {
        path: path.to_path_buf(),
        message,
    };
    let reencode_fix = "\n  fix: re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p -movflags +faststart OUT.mp4`";
    let memory = skyreels_contract::files::physical_memory();
    let (file, size) = skyreels_contract::files::open_regular(path, "video", memory)?;
    let backwards_allowed = Rc::new(Cell::new(false));
    let file = ForwardOnly {
        inner: BufReader::new(file),
        position: 0,
        backwards_allowed: Rc::clone(&backwards_allowed),
    };
    let mut reader = ::mp4::Mp4Reader::read_header(file, size).map_err(|e| {
        unreadable(format!(
            "{e}{reencode_fix} (or re-download it if it is cut short)"
        ))
    })?;
    // Samples are read by offset, in any order; each read is one bounded step.
    backwards_allowed.set(true);
    if reader.is_fragmented() {
        return Err(unreadable(format!(
            "fragmented MP4 is not supported{reencode_fix}"
        )));
    }
    let track = reader
        .tracks()
        .values()
        .filter(|track| matches!(track.track_type(), Ok(::mp4::TrackType::Video)))
        .min_by_key(|track| track.track_id())
        .ok_or_else(|| unreadable(format!("the file has no video track{reencode_fix}")))?;
    let avc = track
        .trak
        .mdia
        .minf
        .stbl
        .stsd
        .avc1
        .as_ref()
        .ok_or_else(|| unreadable(format!("the video track is not H.264 (avc1){reencode_fix}")))?;
    let (track_id, sample_count) = (track.track_id(), track.sample_count());
    check_sample_tables(track, sample_count, size)
        .map_err(|problem| unreadable(format!("{problem}{reencode_fix}")))?;
    let length_size = usize::from(avc.avcc.length_size_minus_one & 3) + 1;
    let mut parameter_sets = Vec::new();
    for nal_unit in avc
        .avcc
        .sequence_parameter_sets
        .iter()
        .chain(&avc.avcc.picture_parameter_sets)
    {
        parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
        parameter_sets.extend_from_slice(&nal_unit.bytes);
    }
    let color_space = avc
        .avcc
        .sequence_parameter_sets
        .first()
        .and_then(|nal_unit| ColorSpace::from_sequence_parameter_set(&nal_unit.bytes))
        .unwrap_or(ColorSpace::BT601_LIMITED);

    let decode_error =
        |error: openh264::Error| unreadable(format!("H.264 decoding failed: {error}"));
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder =
        Decoder::with_api_config(OpenH264API::from_source(), config).map_err(decode_error)?;
    let mut frames = DecodedFrames {
        pixels: Vec::new(),
        size: None,
        color_space,
        limit: memory / 2,
    };
    let mut annex_b = parameter_sets;
    for sample_id in 1..=sample_count {
        let sample = reader
            .read_sample(track_id, sample_id)
            .map_err(|e| unreadable(e.to_string()))?
            .ok_or_else(|| {
                unreadable(format!("sample {sample_id} of {sample_count} is missing"))
            })?;
        let mut rest: &[u8] = &sample.bytes;
        while !rest.is_empty() {
            let (length, tail) = rest.split_at_checked(length_size).ok_or_else(|| {
                unreadable(format!(
                    "sample {sample_id} ends inside a NAL length prefix"
                ))
            })?;
            let length = length
                .iter()
                .fold(0usize, |value, byte| value << 8 | usize::from(*byte));
            let (nal_unit, tail) = tail.split_at_checked(length).ok_or_else(|| {
                unreadable(format!(
                    "sample {sample_id} has a NAL unit running past its end"
                ))
            })?;
            annex_b.extend_from_slice(&[0, 0, 0, 1]);
            annex_b.extend_from_slice(nal_unit);
            rest = tail;
        }
        if let Some(picture) = decoder.decode(&annex_b).map_err(decode_error)? {
            frames.push(&picture).map_err(&unreadable)?;
        }
        annex_b.clear();
    }
    for picture in decoder.flush_remaining().map_err(decode_error)? {
        frames.push(&picture).map_err(&unreadable)?;
    }
    let Some((width, height)) = frames.size else {
        return Err(unreadable("no frame could be decoded".to_string()));
    };
    Video::new(width, height, frames.pixels)
}

/// Checks the sample tables of a track against each other and the file's `size` before any sample
/// is read, so that the demuxer's arithmetic on them (sums of sizes and durations, chunk numbers,
/// a division by samples per chunk) cannot overflow, divide by zero or look past a table.
fn check_sample_tables(
    track: &::mp4::Mp4Track,
    sample_count: u32,
    size: u64,
) -> Result<(), String> {
    let tables = &track.trak.mdia.minf.stbl;
    let sizes = &tables.stsz;
    let total_size = if sizes.sample_size > 0 {
        u64::from(sizes.sample_size).checked_mul(u64::from(sample_count))
    } else if sizes.sample_sizes.len() < sample_count as usize {
        return Err(format!(
            "its sample size table lists {} of its {sample_count} samples",
            sizes.sample_sizes.len()
        ));
    } else {
        Some(sizes.sample_sizes.iter().map(|&s| u64::from(s)).sum())
    };
    if total_size.is_none_or(|total| total > size) {
        return Err(format!(
            "its samples add up to more than the file's {size} bytes"
        ));
    }
    let (mut covered, mut duration) = (0u64, Some(0u64));
    for entry in &tables.stts.entries {
        covered += u64::from(entry.sample_count);
        duration = duration.and_then(|total| {
            total.checked_add(u64::from(entry.sample_count) * u64::from(entry.sample_delta))
        });
    }
    if covered < u64::from(sample_count) || covered >= u64::from(u32::MAX) || duration.is_none() {
        return Err("its time-to-sample table does not cover its samples".to_string());
    }
    let chunks = &tables.stsc.entries;
    if sample_count > 0 && chunks.is_empty() {
        return Err("its sample-to-chunk table is empty".to_string());
    }
    if chunks
        .iter()
        .any(|entry| entry.first_chunk == 0 || entry.samples_per_chunk == 0)
    {
        return Err("its sample-to-chunk table has an empty chunk or chunk number 0".to_string());
    }
    let offsets: Vec<u64> = match (&tables.stco, &tables.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => Vec::new(),
    };
    if offsets.iter().any(|&offset| offset > size) {
        return Err(format!(
            "a chunk starts past the end of the file ({size} bytes)"
        ));
    }
    Ok(())
}

/// A reader that fails on a backward seek while `backwards_allowed` is false: the MP4 box parser
/// seeks back by a box's size minus its header, so a box of size 0..8 would make it read the same
/// header forever. Forward-only, every box read makes progress and the parse ends with the file.
struct ForwardOnly<R> {
    inner: R,
    position: u64,
    backwards_allowed: Rc<Cell<bool>>,
}

impl<R: Read> Read for ForwardOnly<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.position += count as u64;
        Ok(count)
    }
}

impl<R: Seek> Seek for ForwardOnly<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let backwards = match to {
            SeekFrom::Current(offset) => offset < 0,
            SeekFrom::Start(offset) => offset < self.position,
            SeekFrom::End(_) => false,
        };
        if backwards && !self.backwards_allowed.get() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a box at byte {} has a size that points backwards (smaller than its header)",
                    self.position
                ),
            ));
        }
        self.position = self.inner.seek(to)?;
        Ok(self.position)
    }
}

/// Decoded pictures converted to packed RGB as they leave the decoder.
struct DecodedFrames {
    pixels: Vec<u8>,
    size: Option<(usize, usize)>,
    color_space: ColorSpace,
    /// Bytes of decoded pixels allowed (half the machine's memory).
    limit: u64,
}

impl DecodedFrames {
    fn push(&mut self, picture: &DecodedYUV<'_>) -> Result<(), String> {
        let (width, height) = picture.dimensions();
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!("odd frame size {width}×{height} is not supported"));
        }
        match self.size {
            None => self.size = Some((width, height)),
            Some(size) if size != (width, height) => {
                return Err(format!(
                    "the frame size changes from {}×{} to {width}×{height}",
                    size.0, size.1
                ));
            }
            Some(_) => {}
        }
        let start = self.pixels.len();
        let end = start + width * height * 3;
        if end as u64 > self.limit {
            return Err(format!(
                "its decoded frames need more than {} bytes, half of this machine's memory; give a shorter or smaller video",
                self.limit
            ));
        }
        self.pixels.resize(end, 0);
        color::i420_to_rgb(
            (picture.y(), picture.u(), picture.v()),
            picture.strides(),
            width,
            height,
            self.color_space,
            &mut self.pixels[start..],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient_video(num_frames: usize, width: usize, height: usize) -> Video {
        let mut pixels = Vec::with_capacity(num_frames * width * height * 3);
        for t in 0..num_frames {
            for y in 0..height {
                for x in 0..width {
                    pixels.push((x * 255 / (width - 1)) as u8);
                    pixels.push((y * 255 / (height - 1)) as u8);
                    pixels.push(
                        ((x + y) * 128 / (width + height - 2) + t * 127 / (num_frames - 1).max(1))
                            as u8,
                    );
                }
            }
        }
        Video::new(width, height, pixels).unwrap()
    }

    fn mean_absolute_error(a: &Video, b: &Video) -> f64 {
        let total: u64 = a
            .pixels()
            .iter()
            .zip(b.pixels())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f64 / a.pixels().len() as f64
    }

    #[test]
    fn mp4_round_trip_keeps_frames_size_and_colour() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("clip.mp4");
        let video = gradient_video(17, 64, 48);
        write_mp4(&video, &path, &Mp4Options::default()).unwrap();
        let bytes = fs_err::read(&path).unwrap();
        assert_eq!(&bytes[4..8], b"ftyp");
        let decoded = read_mp4(&path).unwrap();
        assert_eq!(
            (decoded.num_frames(), decoded.width(), decoded.height()),
            (17, 64, 48)
        );
        let error = mean_absolute_error(&video, &decoded);
        assert!(
            error < 1.2,
            "mean absolute error {error} (0.96 when measured at quantizer 16)"
        );
        let demuxed =
            ::mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
                .unwrap();
        let track = demuxed.tracks().values().next().unwrap();
        let signalled =
            ColorSpace::from_sequence_parameter_set(track.sequence_parameter_set().unwrap());
        assert_eq!(signalled, Some(ColorSpace::BT709_LIMITED));
        assert_eq!(track.sample_count(), 17);
        assert!(
            (track.duration().as_secs_f64() - 17.0 / 24.0).abs() < 1e-4,
            "{:?}",
            track.duration()
        );
        let leftovers: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["clip.mp4"]);
    }

    #[test]
    fn mp4_round_trip_at_a_size_that_is_not_a_multiple_of_16() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cropped.mp4");
        let video = gradient_video(3, 38, 22);
        write_mp4(&video, &path, &Mp4Options::default()).unwrap();
        let decoded = read_mp4(&path).unwrap();
        assert_eq!(
            (decoded.num_frames(), decoded.width(), decoded.height()),
            (3, 38, 22)
        );
        let error = mean_absolute_error(&video, &decoded);
        assert!(error < 2.0, "mean absolute error {error}");
    }

    #[test]
    fn mp4_quality_follows_the_quantizer() {
        let directory = tempfile::tempdir().unwrap();
        let video = gradient_video(5, 64, 48);
        let mut errors = Vec::new();
        for quantizer in [12, 30, 45] {
            let path = directory.path().join(format!("q{quantizer}.mp4"));
            write_mp4(
                &video,
                &path,
                &Mp4Options {
                    quantizer,
                    ..Mp4Options::default()
                },
            )
            .unwrap();
            errors.push(mean_absolute_error(&video, &read_mp4(&path).unwrap()));
        }
        assert!(errors[0] < errors[1] && errors[1] < errors[2], "{errors:?}");
    }

    /// The limits `check_video_destination` applies before any work are the encoder's own: the
    /// largest frame encodes and one more macroblock row does not; the highest frame rate writes.
    #[test]
    fn the_destination_limits_are_the_encoders() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("limit.mp4");
        let (long, short) = crate::output::MAX_MP4_SIZE;
        let largest = Video::new(long, short, vec![128; long * short * 3]).unwrap();
        write_mp4(&largest, &path, &Mp4Options::default()).unwrap();
        let beyond = Video::new(long + 16, short, vec![128; (long + 16) * short * 3]).unwrap();
        let error = write_mp4(&beyond, &path, &Mp4Options::default()).unwrap_err();
        assert!(matches!(error, OutputError::Encode { .. }), "{error}");
        let fast = Mp4Options {
            frames_per_second: crate::output::MAX_MP4_FRAMES_PER_SECOND as f32,
            ..Mp4Options::default()
        };
        write_mp4(&gradient_video(3, 32, 32), &path, &fast).unwrap();
        assert_eq!(read_mp4(&path).unwrap().num_frames(), 3);
    }

    #[test]
    fn mp4_writer_rejects_odd_sizes_and_bad_options() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("clip.mp4");
        let odd = Video::new(3, 2, vec![0; 18]).unwrap();
        assert!(
            write_mp4(&odd, &path, &Mp4Options::default())
                .unwrap_err()
                .to_string()
                .contains("even")
        );
        let video = gradient_video(2, 16, 16);
        let bad_quantizer = Mp4Options {
            quantizer: 60,
            ..Mp4Options::default()
        };
        assert!(write_mp4(&video, &path, &bad_quantizer).is_err());
        let bad_rate = Mp4Options {
            frames_per_second: 0.0,
            ..Mp4Options::default()
        };
        assert!(write_mp4(&video, &path, &bad_rate).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn mp4_to_an_unwritable_path_fails_naming_it_and_leaves_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("not_a_directory");
        fs_err::write(&blocker, b"x").unwrap();
        let path = blocker.join("clip.mp4");
        let message = write_mp4(&gradient_video(3, 16, 16), &path, &Mp4Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("fix:"),
            "{message}"
        );
        let entries: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["not_a_directory"]);
    }

    #[test]
    fn read_mp4_names_the_file_when_it_is_not_an_mp4() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("noise.mp4");
        fs_err::write(&path, [7u8; 64]).unwrap();
        let message = read_mp4(&path).unwrap_err().to_string();
        assert!(message.contains("noise.mp4"), "{message}");
    }
}
