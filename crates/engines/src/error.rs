use std::path::PathBuf;

/// Builder failures; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An I/O failure (`fs-err` puts the path in the message).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A manifest or profile YAML could not be read or written.
    #[error(transparent)]
    Yaml(#[from] skyreels_contract::YamlError),
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Runtime(#[from] skyreels_runtime::RuntimeError),
    /// The backend's libraries or device are missing on this machine (one line each, and the fix).
    #[error("{0}")]
    BackendUnavailable(String),
    /// The options do not fit the engine directory.
    #[error("{message}\n  fix: {fix}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A TensorRT optimisation profile could not be made.
    #[error("TensorRT profile: {0}")]
    Profile(String),
    /// An ONNX Runtime call failed while building one graph.
    #[error("ONNX Runtime: {context}: {message}")]
    Ort {
        /// What we were doing.
        context: String,
        /// ORT's message.
        message: String,
    },
    /// A graph file could not be read or is malformed.
    #[error("{path}: {message}")]
    Graph {
        /// The ONNX file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result alias for the builder.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;
