//! The files a client uploads with a request, as `multipart/form-data` file parts: the first frame
//! (`input_reference`, the OpenAI Videos API's name), the last frame (`last_frame_reference`) and a
//! video to extend (`video_reference`), the server's names for `skyreels generate`'s `--image`,
//! `--last-image` and `--video`. Each is kept in the videos directory as
//! `<id>.<kind>.<extension>` until its job is deleted.

use std::path::{Path, PathBuf};

const MIB: usize = 1024 * 1024;

/// What an uploaded file is to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// The first frame (`input_reference`; `--image`).
    FirstFrame,
    /// The last frame (`last_frame_reference`; `--last-image`).
    LastFrame,
    /// The video the job extends (`video_reference`; `--video`).
    Video,
}

impl Reference {
    /// Every kind of upload, in the order they are listed.
    pub const ALL: [Reference; 3] = [
        Reference::FirstFrame,
        Reference::LastFrame,
        Reference::Video,
    ];

    /// The form part (and job object field) that carries it.
    pub fn field(self) -> &'static str {
        match self {
            Reference::FirstFrame => "input_reference",
            Reference::LastFrame => "last_frame_reference",
            Reference::Video => "video_reference",
        }
    }

    /// The kind named by form part `name`, if it is a file part.
    pub fn of_field(name: &str) -> Option<Reference> {
        Reference::ALL
            .into_iter()
            .find(|reference| reference.field() == name)
    }

    /// The request field of `skyreels generate`'s plan that takes its path (`image`, …), which a
    /// client may not set itself.
    pub fn request_field(self) -> &'static str {
        match self {
            Reference::FirstFrame => "image",
            Reference::LastFrame => "last_image",
            Reference::Video => "video",
        }
    }

    /// The `skyreels generate` flag that takes its path.
    pub fn flag(self) -> &'static str {
        match self {
            Reference::FirstFrame => "--image",
            Reference::LastFrame => "--last-image",
            Reference::Video => "--video",
        }
    }

    /// What it is, in words.
    pub fn what(self) -> &'static str {
        match self {
            Reference::FirstFrame => "the first frame",
            Reference::LastFrame => "the last frame",
            Reference::Video => "the video to extend",
        }
    }

    /// The largest upload accepted, in bytes: 20 MiB for a picture, 256 MiB for a video.
    pub fn limit(self) -> usize {
        match self {
            Reference::FirstFrame | Reference::LastFrame => 20 * MIB,
            Reference::Video => 256 * MIB,
        }
    }

    /// The formats accepted, in words.
    pub fn formats(self) -> &'static str {
        match self {
            Reference::FirstFrame | Reference::LastFrame => "a PNG or JPEG file",
            Reference::Video => "an H.264 MP4 file",
        }
    }

    /// The extensions it is saved with (from its signature).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Reference::FirstFrame | Reference::LastFrame => &["png", "jpg"],
            Reference::Video => &["mp4"],
        }
    }

    /// Its file name in the videos directory for job `id`: `<id>.input.png`,
    /// `<id>.last_frame.jpg`, `<id>.video.mp4`.
    pub fn file_name(self, id: &str, extension: &str) -> String {
        let kind = match self {
            Reference::FirstFrame => "input",
            Reference::LastFrame => "last_frame",
            Reference::Video => "video",
        };
        format!("{id}.{kind}.{extension}")
    }

    /// Whether `name` is a file name [`Reference::file_name`] gives for job `id`.
    pub fn is_file_name(self, id: &str, name: &str) -> bool {
        self.extensions()
            .iter()
            .any(|extension| name == self.file_name(id, extension))
    }
}

/// A job's uploaded files, by what they are to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    first_frame: Option<PathBuf>,
    last_frame: Option<PathBuf>,
    video: Option<PathBuf>,
}

impl Inputs {
    fn slot(&mut self, reference: Reference) -> &mut Option<PathBuf> {
        match reference {
            Reference::FirstFrame => &mut self.first_frame,
            Reference::LastFrame => &mut self.last_frame,
            Reference::Video => &mut self.video,
        }
    }

    /// The file uploaded as `reference`, if one was.
    pub fn get(&self, reference: Reference) -> Option<&Path> {
        match reference {
            Reference::FirstFrame => self.first_frame.as_deref(),
            Reference::LastFrame => self.last_frame.as_deref(),
            Reference::Video => self.video.as_deref(),
        }
    }

    /// Records `path` as the file uploaded as `reference`.
    pub fn set(&mut self, reference: Reference, path: PathBuf) {
        *self.slot(reference) = Some(path);
    }

    /// Every uploaded file with what it is, in [`Reference::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Reference, &Path)> {
        Reference::ALL
            .into_iter()
            .filter_map(|reference| self.get(reference).map(|path| (reference, path)))
    }

    /// Whether nothing was uploaded.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The file name (in the videos directory) of the file uploaded as `reference`.
    pub fn file_name(&self, reference: Reference) -> Option<String> {
        self.get(reference)
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upload_has_its_part_flag_and_file_name() {
        let id = "video_0123456789abcdef01234567";
        let names: Vec<_> = Reference::ALL
            .into_iter()
            .map(|reference| {
                (
                    reference.field(),
                    reference.flag(),
                    reference.file_name(id, reference.extensions()[0]),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("input_reference", "--image", format!("{id}.input.png")),
                (
                    "last_frame_reference",
                    "--last-image",
                    format!("{id}.last_frame.png")
                ),
                ("video_reference", "--video", format!("{id}.video.mp4")),
            ]
        );
        assert_eq!(
            Reference::of_field("video_reference"),
            Some(Reference::Video)
        );
        assert_eq!(Reference::of_field("image"), None);
        assert!(Reference::LastFrame.is_file_name(id, &format!("{id}.last_frame.jpg")));
        assert!(!Reference::LastFrame.is_file_name(id, &format!("{id}.input.jpg")));
        assert!(!Reference::Video.is_file_name(id, &format!("{id}.video.png")));

        let mut inputs = Inputs::default();
        assert!(inputs.is_empty());
        inputs.set(
            Reference::Video,
            PathBuf::from(format!("/v/{id}.video.mp4")),
        );
        inputs.set(
            Reference::FirstFrame,
            PathBuf::from(format!("/v/{id}.input.png")),
        );
        let kinds: Vec<Reference> = inputs.iter().map(|(reference, _)| reference).collect();
        assert_eq!(kinds, [Reference::FirstFrame, Reference::Video]);
        assert_eq!(
            inputs.file_name(Reference::Video),
            Some(format!("{id}.video.mp4"))
        );
        assert_eq!(inputs.get(Reference::LastFrame), None);
    }
}
