//! An engine directory opened for running: its manifest plus checks that it fits this runtime.

use std::path::{Path, PathBuf};

use skyreels_contract::Manifest;

use crate::error::{Result, RuntimeError};

/// An opened engine directory.
pub struct Engine {
    /// Directory path.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Engine {
    /// Reads `dir/manifest.yaml`.
    pub fn open(dir: &Path) -> Result<Engine> {
        if !dir.join(skyreels_contract::manifest::MANIFEST_FILE).is_file() {
            return Err(RuntimeError::Engine {
                path: dir.to_path_buf(),
                message: "no manifest.yaml here\n  fix: point --engines at a directory written by skyreels-export".into(),
            });
        }
        let manifest = Manifest::load(dir)?;
        Ok(Engine { dir: dir.to_path_buf(), manifest })
    }

    /// An error about this engine.
    pub fn error(&self, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Engine { path: self.dir.clone(), message: message.into() }
    }
}
