//! What SIGINT, SIGTERM and SIGHUP do to a running command: the unfinished output files it
//! registered (the `.partial` files outputs are written to before their rename) are removed, the
//! worker processes it started get the same signal, and the process exits with 128 + the signal's
//! number, as a shell reports a process the signal killed. Finished work stays: a job's work
//! directory keeps its saved windows, so the same command resumes.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

struct Registered {
    files: Vec<PathBuf>,
    workers: Vec<u32>,
}

static REGISTERED: Mutex<Registered> = Mutex::new(Registered {
    files: Vec::new(),
    workers: Vec::new(),
});

fn registered() -> MutexGuard<'static, Registered> {
    REGISTERED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes `file` if a signal ends the process before the returned guard is dropped.
pub fn remove_on_signal(file: &Path) -> UnfinishedFile {
    registered().files.push(file.to_path_buf());
    UnfinishedFile(file.to_path_buf())
}

/// Keeps a file registered for removal on a signal; dropping it (after the file was renamed into
/// place or removed) forgets it.
pub struct UnfinishedFile(PathBuf);

impl UnfinishedFile {
    /// Runs `finish` (e.g. the rename into place) with signal handling held off, so a signal
    /// never removes a file that is being moved into place, nor finds it half moved.
    pub fn finish<T>(self, finish: impl FnOnce() -> T) -> T {
        let _held = registered();
        finish()
    }
}

impl Drop for UnfinishedFile {
    fn drop(&mut self) {
        registered().files.retain(|file| file != &self.0);
    }
}

/// Sends the signal that ends this process on to worker `pid` too, until [`forget_worker`].
pub fn forward_to_worker(pid: u32) {
    registered().workers.push(pid);
}

/// Stops forwarding signals to `pid` (it has been reaped).
pub fn forget_worker(pid: u32) {
    registered().workers.retain(|worker| *worker != pid);
}

/// Removes every registered file and signals every registered worker; returns how many files it
/// removed. Holds the registry until the process exits, so nothing is registered or renamed
/// into place meanwhile.
fn clean_up(signal: i32) -> usize {
    let registered = registered();
    let mut removed = 0;
    for file in &registered.files {
        if std::fs::remove_file(file).is_ok() {
            removed += 1;
        }
    }
    for worker in &registered.workers {
        let pid = i32::try_from(*worker)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let (Some(pid), Some(signal)) = (pid, rustix::process::Signal::from_named_raw(signal)) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
    std::mem::forget(registered);
    removed
}

/// Installs the handler (once, at the start of a command that writes outputs or starts workers).
pub fn install() -> std::io::Result<()> {
    skyreels_contract::termination::on_termination(|signal, name| {
        let removed = clean_up(signal);
        let what = if removed == 0 {
            String::new()
        } else {
            format!(": {removed} unfinished output file(s) removed")
        };
        format!(
            "interrupted by {name}{what}; a job with a work directory resumes from its saved windows when run again"
        )
    })
}
