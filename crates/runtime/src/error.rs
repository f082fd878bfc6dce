use std::path::PathBuf;

/// Runtime failures; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An I/O failure (`fs-err` puts the path in the message).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An input that is not a regular file, or too large for its kind.
    #[error(transparent)]
    File(#[from] skyreels_contract::files::FileError),
    /// A directory held by another process, or not this tool's.
    #[error(transparent)]
    OwnedDir(#[from] skyreels_contract::owned_dir::OwnedDirError),
    /// The ONNX Runtime library was not found.
    #[error("ONNX Runtime {version} not found (looked in: {})\n  fix: {hint}", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    OnnxRuntimeMissing {
        /// The version looked for.
        version: &'static str,
        /// Paths tried.
        searched: Vec<PathBuf>,
        /// How to fix it.
        hint: String,
    },
    /// The library was found but could not be loaded.
    #[error("{0}")]
    OnnxRuntimeLoad(String),
    /// A backend's libraries or GPU are missing here (every missing piece and the fix).
    #[error("{0}")]
    BackendUnavailable(String),
    /// An ONNX Runtime call failed.
    #[error("ONNX Runtime: {context}: {message}")]
    Ort {
        /// What we were doing.
        context: String,
        /// ORT's message.
        message: String,
    },
    /// The engine directory is missing a piece or does not fit the request.
    #[error("engine {path}: {message}")]
    Engine {
        /// Engine directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] skyreels_contract::YamlError),
    /// A tensor has the wrong shape or is missing.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Writing or reading an output file (video, frames, latents) failed.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Invalid user input (frames, sizes, options).
    #[error("{0}")]
    Invalid(String),
    /// The job's observer asked it to stop (see `pipeline::progress::Observer`).
    #[error("the job was cancelled")]
    Cancelled,
    /// A CUDA driver call of the runtime's own (weight streaming) failed.
    #[error("CUDA: {context}: {message}")]
    Cuda {
        /// What we were doing.
        context: String,
        /// The driver's message.
        message: String,
    },
    /// Multi-rank set-up or communication failed.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
}

/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Wraps an `ort` error with what we were doing.
pub(crate) fn ort_error(context: impl Into<String>) -> impl FnOnce(ort::Error) -> RuntimeError {
    let context = context.into();
    move |e| RuntimeError::Ort {
        context,
        message: e.to_string(),
    }
}
