use std::path::PathBuf;

/// Everything that can go wrong while exporting; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An I/O failure (the path is in the message, via `fs-err`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file that is not a regular file, or too large for its kind.
    #[error(transparent)]
    File(#[from] skyreels_contract::files::FileError),
    /// A directory that is another process's, or not this tool's.
    #[error(transparent)]
    OwnedDir(#[from] skyreels_contract::owned_dir::OwnedDirError),
    /// A safetensors file is truncated, corrupt or lies about its offsets.
    #[error(
        "{path} is not a valid safetensors file: {reason}\n  fix: re-download the file (it may be truncated or corrupt)"
    )]
    CorruptSafetensors {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },
    /// No weights were found where a checkpoint was expected.
    #[error(
        "no checkpoint found at {path}: {}",
        with_fix(
            reason,
            "pass the model's directory (its *.safetensors, or *.pth for the original VAE/T5/CLIP) or a single weights file"
        )
    )]
    NoCheckpoint {
        /// The directory or file given.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error(
        "weight `{name}` not found in {path}\n  fix: check that the checkpoint is a complete SkyReels-V2 / Wan2.1 model of the expected kind"
    )]
    MissingWeight {
        /// Canonical (original-layout) name.
        name: String,
        /// Checkpoint location.
        path: PathBuf,
    },
    /// The checkpoint has tensors the architecture does not use.
    #[error(
        "{count} unexpected weight(s) in {path}, e.g. `{first}`\n  fix: the checkpoint does not match the detected architecture ({architecture}); check config.json"
    )]
    UnusedWeights {
        /// How many.
        count: usize,
        /// One example.
        first: String,
        /// Checkpoint location.
        path: PathBuf,
        /// What was detected.
        architecture: String,
    },
    /// A tensor has the wrong shape.
    #[error(
        "weight `{name}` has shape {actual:?} but the architecture needs {expected:?}\n  fix: check config.json against the weights (dim, num_heads, ffn_dim, in_dim)"
    )]
    WrongShape {
        /// Canonical name.
        name: String,
        /// Found.
        actual: Vec<usize>,
        /// Needed.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong number of dimensions.
    #[error(
        "weight `{name}` has shape {actual:?} but must be shaped {expected}\n  fix: the checkpoint is corrupt or not a SkyReels-V2 / Wan2.1 model; re-download it"
    )]
    WrongRank {
        /// Canonical name.
        name: String,
        /// Found.
        actual: Vec<usize>,
        /// The dimensions it needs, e.g. `[out, in]`.
        expected: &'static str,
    },
    /// A tensor's element type is not a float type we read.
    #[error(
        "weight `{name}` has dtype {dtype}; only F32, F16 and BF16 weights are supported\n  fix: convert the checkpoint to a float dtype, or use the original release (quantized checkpoints are not supported)"
    )]
    WrongDtype {
        /// Canonical name.
        name: String,
        /// Found.
        dtype: String,
    },
    /// The config could not be understood.
    #[error("bad model config {path}: {}", with_fix(reason, &format!("correct {} so it agrees with the weights, or re-download the model", path.display())))]
    BadConfig {
        /// The config file (or checkpoint dir).
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A model id is not in the local Hugging Face cache (nothing is downloaded).
    #[error("{model_id}: {reason}\n  fix: {fix}")]
    NotCached {
        /// `Org/Name`.
        model_id: String,
        /// What is missing where.
        reason: String,
        /// How to get it.
        fix: String,
    },
    /// Components the engine needs were not found next to the checkpoint (`--require`).
    #[error("{}\n  fix: {fix}", missing.join("\n"))]
    MissingComponents {
        /// One line per missing component: what was looked for, where.
        missing: Vec<String>,
        /// How to get them, or how to export without them.
        fix: String,
    },
    /// Requested options do not fit together.
    #[error("{0}")]
    BadOptions(String),
    /// Graph wiring failed (a bug or an unsupported architecture).
    #[error(transparent)]
    Graph(#[from] skyreels_graph::GraphError),
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] skyreels_contract::YamlError),
}

/// `reason`, followed by a `fix:` line unless it already has one.
fn with_fix(reason: &str, fix: &str) -> String {
    if reason.contains("fix:") {
        reason.to_string()
    } else {
        format!("{reason}\n  fix: {fix}")
    }
}

/// Result alias for the exporter.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
