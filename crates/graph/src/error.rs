use std::path::PathBuf;

/// Errors raised while wiring or writing a graph; `scope` names the module being built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A node's inputs have incompatible shapes or types.
    #[error("`{scope}`: {message}")]
    Wiring {
        /// Dotted path of the module under construction, e.g. `blocks.3.ffn`.
        scope: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the model file failed.
    #[error("cannot write ONNX model {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Reading a model file failed.
    #[error("cannot read ONNX model {path}: {message}")]
    Read {
        /// The file being read.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}
