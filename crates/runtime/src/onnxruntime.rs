//! Finding and loading the ONNX Runtime shared library (dynamic loading; see docs/DESIGN.md).
//! Search order: `ORT_DYLIB_PATH`, next to the running binary, the project cache that
//! `scripts/setup.sh` fills from the official `onnxruntime` wheel on PyPI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Result, RuntimeError};

/// ONNX Runtime version the project is built and tested against.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// What `skyreels --version` prints after the name: this version and the ONNX Runtime it needs
/// (kept equal to [`ONNXRUNTIME_VERSION`] by a test).
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (needs ONNX Runtime 1.31.1: libonnxruntime.so.1.31.1)"
);

fn library_file_name() -> String {
    format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}")
}

/// The cache directory `scripts/setup.sh` installs ONNX Runtime into.
pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SKYREELS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".cache")
        });
    base.join("skyreels")
}

fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        paths.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        paths.push(dir.join(library_file_name()));
        paths.push(dir.join("libonnxruntime.so"));
    }
    paths.push(
        cache_dir()
            .join("onnxruntime")
            .join(ONNXRUNTIME_VERSION)
            .join(library_file_name()),
    );
    paths
}

/// The library file that will be loaded.
pub fn library_path() -> Result<PathBuf> {
    let candidates = candidates();
    if let Ok(explicit) = std::env::var("ORT_DYLIB_PATH")
        && !Path::new(&explicit).is_file()
    {
        return Err(RuntimeError::OnnxRuntimeMissing {
            version: ONNXRUNTIME_VERSION,
            searched: vec![PathBuf::from(explicit)],
            hint: "ORT_DYLIB_PATH points to a file that does not exist".into(),
        });
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| RuntimeError::OnnxRuntimeMissing {
            version: ONNXRUNTIME_VERSION,
        searched: candidates,
        hint: "run scripts/setup.sh (it fetches the official onnxruntime wheel from PyPI), or set ORT_DYLIB_PATH".into(),
    })
}

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

/// Loads ONNX Runtime once per process and returns its environment.
pub fn environment() -> Result<ort::environment::Environment> {
    let outcome = ENVIRONMENT.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("skyreels")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    outcome.clone().map_err(RuntimeError::OnnxRuntimeLoad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_the_onnxruntime_version_in_use() {
        assert!(
            VERSION_LINE.contains(&format!("ONNX Runtime {ONNXRUNTIME_VERSION}"))
                && VERSION_LINE.contains(&library_file_name()),
            "{VERSION_LINE}"
        );
    }
}
