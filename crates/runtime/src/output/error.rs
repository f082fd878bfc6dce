use std::path::PathBuf;

/// Failures of the output writers and file readers; each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An I/O failure on an input file (`fs-err` puts the path in the message).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An input that is not a regular file, or too large for its kind.
    #[error(transparent)]
    File(#[from] skyreels_contract::files::FileError),
    /// The destination could not be created or written; nothing was left under its name.
    #[error(
        "cannot write {}: {source}\n  fix: make sure the directory is writable and has free space, or choose another output path",
        path.display()
    )]
    Create {
        /// The destination.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// An output that cannot be written where it was asked for (checked before any work).
    #[error("cannot write {}: {problem}", path.display())]
    Destination {
        /// The destination.
        path: PathBuf,
        /// What is wrong, and the fix.
        problem: String,
    },
    /// The frames or tensor handed to a writer do not form a valid video.
    #[error("invalid video: {0}")]
    InvalidVideo(String),
    /// OpenH264 refused a frame or its settings.
    #[error("H.264 encoding for {} failed: {message}", path.display())]
    Encode {
        /// The destination.
        path: PathBuf,
        /// OpenH264's message.
        message: String,
    },
    /// The MP4 muxer refused the encoded stream.
    #[error("MP4 muxing for {} failed: {source}\n  fix: make sure the directory is writable and has free space, or choose another output path", path.display())]
    Mux {
        /// The destination.
        path: PathBuf,
        /// The muxer's error.
        source: muxide::api::MuxerError,
    },
    /// An MP4 file could not be demuxed or decoded.
    #[error("cannot read {} as an H.264 MP4: {message}", path.display())]
    ReadMp4 {
        /// The input file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The PNG encoder failed.
    #[error("cannot encode PNG {}: {source}\n  fix: make sure the directory is writable and has free space, or choose another output path", path.display())]
    Png {
        /// The destination.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
    /// A safetensors file could not be written or parsed.
    #[error("{}: not a valid safetensors file: {message}\n  fix: give a safetensors file as skyreels or `safetensors.torch.save_file` writes it (re-download or re-create it if it is cut short)", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's or serializer's message.
        message: String,
    },
    /// A tensor asked for by name is not in the file.
    #[error(
        "{}: no tensor named `{name}` (the file holds: {})\n  fix: save the tensor under the name `{name}`",
        path.display(),
        if available.is_empty() { "nothing".to_string() } else { available.join(", ") }
    )]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The requested name.
        name: String,
        /// Names present in the file, sorted.
        available: Vec<String>,
    },
    /// A tensor has the wrong shape or element type, or its data does not fill its shape.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}
