//! Engine directories are built in a sibling staging directory and renamed into place only when
//! complete, so a failed export never leaves a half-written engine behind. The staging directory
//! is an owned directory (`skyreels_contract::owned_dir`): removed on error, on SIGINT/SIGTERM/SIGHUP
//! (with [`clean_up_on_signals`]), and by a later export once the process that made it has died.
//! `--force` replaces only an engine directory (one with a manifest) or an empty one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use skyreels_contract::manifest::MANIFEST_FILE;
use skyreels_contract::owned_dir::OwnedDir;

use crate::error::{ExportError, Result};

/// The purpose recorded in a staging directory's marker.
const STAGING: &str = "export staging";

/// Directories to remove if a signal ends the export: unfinished staging and scratch directories.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn unfinished() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    UNFINISHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers `path` (a directory this export created) for removal if a signal ends the export.
pub fn remove_on_signal(path: &Path) {
    unfinished().push(path.to_path_buf());
}

fn forget(path: &Path) {
    unfinished().retain(|registered| registered != path);
}

/// Handles SIGINT, SIGTERM and SIGHUP: removes every unfinished staging and scratch directory and
/// exits with 128 + the signal's number, as a shell reports a process the signal killed.
pub fn clean_up_on_signals() -> Result<()> {
    skyreels_contract::termination::on_termination(|_, name| {
        // Held until exit, so a commit in progress finishes first and none starts after.
        let unfinished = unfinished();
        for path in unfinished.iter() {
            remove_while_written(path);
        }
        std::mem::forget(unfinished);
        format!("interrupted by {name}: the unfinished engine directory was removed")
    })?;
    Ok(())
}

/// Removes `path` although the export's own thread may still be writing into it: a file created
/// between `remove_dir_all`'s listing and its final `rmdir` makes that attempt fail (not empty),
/// so it is repeated; once the directory is gone, the writer's next file cannot be created.
fn remove_while_written(path: &Path) {
    for _attempt in 0..1000 {
        let _ = std::fs::remove_dir_all(path);
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Refuses an `--out` whose replacement could lose data: the working directory or one of its
/// parents, a path without a name (`/`, `..`), and (unless it is empty or an engine directory, and
/// `replace` is set) anything that exists.
fn check_target(target: &Path, replace: bool) -> Result<()> {
    let refuse = |problem: String| {
        Err(ExportError::BadOptions(format!(
            "--out {}: {problem}\n  fix: choose a new directory for the engine, e.g. --out engines/my-model",
            target.display()
        )))
    };
    let named = target
        .components()
        .next_back()
        .is_some_and(|last| matches!(last, std::path::Component::Normal(_)));
    if !named {
        return refuse(
            "an export replaces its --out, and this path names no directory of its own".into(),
        );
    }
    if !target.exists() {
        return Ok(());
    }
    let working = std::env::current_dir().and_then(fs_err::canonicalize);
    if let (Ok(working), Ok(canonical)) = (working, fs_err::canonicalize(target))
        && working.starts_with(&canonical)
    {
        return refuse(
            "this is the working directory or one of its parents, which an export never replaces"
                .into(),
        );
    }
    if !replace {
        return Err(ExportError::BadOptions(format!(
            "{} already exists\n  fix: choose another --out, or pass --force to replace it",
            target.display()
        )));
    }
    let is_engine = target.join(MANIFEST_FILE).is_file();
    let is_empty = target.is_dir() && fs_err::read_dir(target)?.next().is_none();
    if !target.is_dir() || !(is_engine || is_empty) {
        return refuse(format!(
            "--force replaces only an engine directory (one with {MANIFEST_FILE}) or an empty directory, and this is {}",
            if target.is_dir() {
                "a directory of other files"
            } else {
                "not a directory"
            }
        ));
    }
    Ok(())
}

/// Removes the staging directories of `name` in `parent` whose exports have died (a SIGKILL, a
/// power cut); those of running exports and anything without the staging marker stay.
fn remove_abandoned_staging(parent: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.partial-");
    for entry in fs_err::read_dir(parent)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            OwnedDir::remove_if_abandoned(&entry.path(), STAGING)?;
        }
    }
    Ok(())
}

/// A staging directory that is removed on drop unless [`Staging::commit`] moved it into place.
pub struct Staging {
    directory: Option<OwnedDir>,
    target: PathBuf,
    replace: bool,
}

impl Staging {
    /// Prepares `target`'s staging directory; fails if `target` exists and `replace` is false, or
    /// if replacing it could lose data (see [`check_target`]).
    pub fn new(target: &Path, replace: bool) -> Result<Staging> {
        check_target(target, replace)?;
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
        remove_abandoned_staging(&parent, name)?;
        let path = parent.join(format!(".{name}.partial-{}", std::process::id()));
        // Created and registered under the lock, so a signal handler sees it as soon as it exists.
        let mut registered = unfinished();
        let directory = OwnedDir::create(&path, STAGING).map_err(|error| match error {
            skyreels_contract::owned_dir::OwnedDirError::Io(io) => cannot_create(io),
            other => other.into(),
        })?;
        registered.push(path);
        drop(registered);
        Ok(Staging {
            directory: Some(directory),
            target: target.to_path_buf(),
            replace,
        })
    }

    /// The directory to write into.
    pub fn path(&self) -> &Path {
        self.directory
            .as_ref()
            .expect("staging until committed")
            .path()
    }

    /// Moves the finished directory to its target (replacing an old engine directory).
    pub fn commit(mut self) -> Result<PathBuf> {
        let no_signal_cleanup_meanwhile = unfinished();
        check_target(&self.target, self.replace)?;
        if self.target.exists() {
            fs_err::remove_dir_all(&self.target)?;
        }
        let directory = self.directory.take().expect("staging until committed");
        let path = directory.path().to_path_buf();
        let moved = directory
            .release()
            .and_then(|_| fs_err::rename(&path, &self.target));
        if moved.is_err() {
            let _ = std::fs::remove_dir_all(&path);
        }
        drop(no_signal_cleanup_meanwhile);
        forget(&path);
        moved?;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(directory) = self.directory.take() {
            let path = directory.path().to_path_buf();
            let _ = directory.remove();
            forget(&path);
        }
    }
}
