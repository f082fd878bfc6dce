//! Engine directories are built in a sibling staging directory and renamed into place only when
//! complete, so a failed export never leaves a half-written engine behind.

use std::path::{Path, PathBuf};

use crate::error::{ExportError, Result};

/// A staging directory that is removed on drop unless [`Staging::commit`] moved it into place.
pub struct Staging {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staging {
    /// Prepares `target`'s staging directory; fails if `target` exists and `replace` is false.
    pub fn new(target: &Path, replace: bool) -> Result<Staging> {
        if target.exists() && !replace {
            return Err(ExportError::BadOptions(format!(
                "{} already exists\n  fix: choose another --out, or pass --force to replace it",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("engine");
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let cannot_create = |error: std::io::Error| {
            ExportError::BadOptions(format!(
                "cannot create the engine directory {}: {error}\n  fix: choose an --out whose parent is a writable directory",
                target.display()
            ))
        };
        fs_err::create_dir_all(&parent).map_err(cannot_create)?;
        let path = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if path.exists() {
            fs_err::remove_dir_all(&path)?;
        }
        fs_err::create_dir(&path).map_err(cannot_create)?;
        Ok(Staging {
            path,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// The directory to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the finished directory to its target (replacing an old one).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            fs_err::remove_dir_all(&self.target)?;
        }
        fs_err::rename(&self.path, &self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
