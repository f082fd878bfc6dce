//! Directories the tools create and may delete: each holds a marker file naming its purpose and
//! owner, locked (`flock`) by the owning process while it runs. A command removes only a directory
//! with its own marker: one it holds, or one whose owner has died (the lock is free). A second
//! process reaching a held directory gets "in use by pid N" at once.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The marker file inside every owned directory.
pub const OWNER_FILE: &str = ".skyreels-owner";

/// A directory could not be taken: used by another process, or not ours.
#[derive(Debug, thiserror::Error)]
pub enum OwnedDirError {
    /// The directory could not be created, read or locked (`fs-err` names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Another running process holds it.
    #[error(
        "{purpose} {} is in use by pid {pid}\n  fix: wait for that process to finish (or stop it), or choose another directory",
        path.display()
    )]
    InUse {
        /// What the directory is for.
        purpose: String,
        /// The directory.
        path: PathBuf,
        /// The holder's process id, as its marker records it.
        pid: String,
    },
    /// It holds files this tool did not create; it is never written into nor removed.
    #[error(
        "{purpose} {} already holds files that this tool did not create, which it would mix with its own and delete when done\n  fix: pass a new or empty directory",
        path.display()
    )]
    NotOwned {
        /// What the directory is for.
        purpose: String,
        /// The directory.
        path: PathBuf,
    },
}

/// A directory this process created (or took over from a dead owner) and holds locked.
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
    marker: File,
}

fn marker_text(purpose: &str) -> String {
    format!("skyreels {purpose}\npid {}\n", std::process::id())
}

fn recorded_pid(marker: &Path) -> String {
    std::fs::read_to_string(marker)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("pid ").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn is_empty_dir(path: &Path) -> Result<bool, std::io::Error> {
    Ok(fs_err::read_dir(path)?.next().is_none())
}

/// Whether `marker` (an existing file) records `purpose`.
fn marks(marker: &Path, purpose: &str) -> bool {
    std::fs::read_to_string(marker)
        .is_ok_and(|text| text.lines().next() == Some(&format!("skyreels {purpose}")))
}

impl OwnedDir {
    /// Creates `path` (which must not exist, or be an empty directory) for `purpose`, marked and
    /// locked by this process. Parents are created as needed.
    pub fn create(path: &Path, purpose: &str) -> Result<OwnedDir, OwnedDirError> {
        if path.exists() && !(path.is_dir() && is_empty_dir(path)?) {
            return Err(OwnedDirError::NotOwned {
                purpose: purpose.to_string(),
                path: path.to_path_buf(),
            });
        }
        fs_err::create_dir_all(path)?;
        Self::take(path, purpose)
    }

    /// Opens `path` for `purpose`: creates it when missing or empty, takes it over when it carries
    /// the marker of `purpose` from a process that has ended; refuses one a running process holds
    /// and one with files but no such marker.
    pub fn open_or_create(path: &Path, purpose: &str) -> Result<OwnedDir, OwnedDirError> {
        if !path.exists() || (path.is_dir() && is_empty_dir(path)?) {
            return Self::create(path, purpose);
        }
        let marker = path.join(OWNER_FILE);
        if !path.is_dir() || !marker.is_file() || !marks(&marker, purpose) {
            return Err(OwnedDirError::NotOwned {
                purpose: purpose.to_string(),
                path: path.to_path_buf(),
            });
        }
        Self::take(path, purpose)
    }

    /// Locks the marker of `path` (creating it) and records this process in it.
    fn take(path: &Path, purpose: &str) -> Result<OwnedDir, OwnedDirError> {
        let marker_path = path.join(OWNER_FILE);
        let mut marker = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&marker_path)?
            .into_parts()
            .0;
        match marker.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OwnedDirError::InUse {
                    purpose: purpose.to_string(),
                    path: path.to_path_buf(),
                    pid: recorded_pid(&marker_path),
                });
            }
            Err(TryLockError::Error(error)) => return Err(error.into()),
        }
        marker.set_len(0)?;
        marker.write_all(marker_text(purpose).as_bytes())?;
        Ok(OwnedDir {
            path: path.to_path_buf(),
            marker,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it (all of it is this process's work).
    pub fn remove(self) -> Result<(), std::io::Error> {
        fs_err::remove_dir_all(&self.path)
    }

    /// Removes the marker and then the directory if nothing else is left in it; files someone
    /// else put there stay (and so does the directory).
    pub fn remove_if_empty(self) -> Result<(), std::io::Error> {
        fs_err::remove_file(self.path.join(OWNER_FILE))?;
        drop(self.marker);
        if is_empty_dir(&self.path)? {
            fs_err::remove_dir(&self.path)?;
        }
        Ok(())
    }

    /// Removes the marker, keeping the files, and gives the directory up (e.g. before renaming a
    /// finished export into place). The lock is held until the marker is gone.
    pub fn release(self) -> Result<PathBuf, std::io::Error> {
        fs_err::remove_file(self.path.join(OWNER_FILE))?;
        Ok(self.path)
    }

    /// Removes `path` when it carries the marker of `purpose` and its owner has ended (the lock is
    /// free); leaves anything else alone. Returns whether it removed it.
    pub fn remove_if_abandoned(path: &Path, purpose: &str) -> Result<bool, std::io::Error> {
        let marker_path = path.join(OWNER_FILE);
        if !path.is_dir() || !marker_path.is_file() || !marks(&marker_path, purpose) {
            return Ok(false);
        }
        let marker = fs_err::File::open(&marker_path)?.into_parts().0;
        match marker.try_lock() {
            Ok(()) => {
                fs_err::remove_dir_all(path)?;
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(error)) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_in_use_and_a_released_one_can_be_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("work");
        let held = OwnedDir::open_or_create(&path, "work directory").unwrap();
        let error = OwnedDir::open_or_create(&path, "work directory").unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("is in use by pid {}", std::process::id())),
            "{error}"
        );
        assert!(!OwnedDir::remove_if_abandoned(&path, "work directory").unwrap());
        fs_err::write(path.join("window-0000.safetensors"), "x").unwrap();
        drop(held);
        let again = OwnedDir::open_or_create(&path, "work directory").unwrap();
        assert!(path.join("window-0000.safetensors").is_file());
        drop(again);
        assert!(OwnedDir::remove_if_abandoned(&path, "work directory").unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn directories_without_the_marker_are_never_taken_nor_removed() {
        let root = tempfile::tempdir().unwrap();
        fs_err::write(root.path().join("precious.txt"), "keep").unwrap();
        let error = OwnedDir::open_or_create(root.path(), "work directory").unwrap_err();
        assert!(error.to_string().contains("did not create"), "{error}");
        assert!(OwnedDir::create(root.path(), "export staging").is_err());
        assert!(!OwnedDir::remove_if_abandoned(root.path(), "work directory").unwrap());
        let other = root.path().join("other");
        drop(OwnedDir::create(&other, "export staging").unwrap());
        assert!(OwnedDir::open_or_create(&other, "work directory").is_err());
        assert!(!OwnedDir::remove_if_abandoned(&other, "work directory").unwrap());
        assert!(root.path().join("precious.txt").is_file());
    }

    #[test]
    fn removing_if_empty_keeps_files_someone_else_put_there() {
        let root = tempfile::tempdir().unwrap();
        let owned = OwnedDir::create(root.path(), "work directory").unwrap();
        fs_err::write(root.path().join("video.mp4"), "output").unwrap();
        owned.remove_if_empty().unwrap();
        assert!(root.path().join("video.mp4").is_file());
        assert!(!root.path().join(OWNER_FILE).exists());
        let empty = root.path().join("empty");
        OwnedDir::create(&empty, "work directory")
            .unwrap()
            .remove_if_empty()
            .unwrap();
        assert!(!empty.exists());
    }
}
