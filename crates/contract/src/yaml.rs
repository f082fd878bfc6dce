use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A YAML file that could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not a regular file, or too large for a YAML config.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The file is not valid YAML for the expected schema.
    #[error(
        "{path} is not a valid {what}: {message}\n  fix: correct the file, or regenerate it with the tool that wrote it"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the file should contain (e.g. "engine manifest").
        what: &'static str,
        /// Parser message, with line and column.
        message: String,
    },
    /// A value could not be rendered as YAML.
    #[error("cannot render YAML: {0}")]
    Render(String),
}

/// Reads and parses a YAML file; the single entry point for every YAML the project reads.
pub fn load_yaml<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, YamlError> {
    let text = crate::files::read_bounded_to_string(path, what, crate::files::limit::YAML)?;
    parse_yaml(&text, path, what)
}

/// Parses YAML text that came from `origin` (a file, or the file an embedded text was compiled from).
pub fn parse_yaml<T: DeserializeOwned>(
    text: &str,
    origin: &Path,
    what: &'static str,
) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| YamlError::Parse {
        path: origin.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

/// Renders a value as YAML text.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Render(e.to_string()))
}

/// Writes a value as YAML to `path` (via a temporary file in the same directory, then rename).
pub fn save_yaml<T: Serialize>(path: &Path, value: &T) -> Result<(), YamlError> {
    let text = to_yaml(value)?;
    let tmp = path.with_extension("yaml.tmp");
    fs_err::write(&tmp, text)?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}
