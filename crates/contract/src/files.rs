//! Reading the files a user names, within bounds: only regular files (a FIFO would hang the reader,
//! `/dev/zero` would grow without end, a directory gives "No such device"), each kind read with a
//! size limit fitted to what it holds. Every reader of the tools goes through here.

use std::io::Read;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// Size limits by kind of file: far above any real file of that kind, far below what would exhaust
/// memory.
pub mod limit {
    use super::MIB;
    /// A JSON config (`config.json`, `preprocessor_config.json`): real ones are a few KiB.
    pub const JSON_CONFIG: u64 = 16 * MIB;
    /// A shard index (`*.index.json`): a weight map of some thousand names.
    pub const SHARD_INDEX: u64 = 64 * MIB;
    /// A tokenizer (`tokenizer.json`, `spiece.model`): umT5's is 16 MiB.
    pub const TOKENIZER: u64 = 256 * MIB;
    /// A YAML manifest or model config.
    pub const YAML: u64 = 16 * MIB;
    /// A PNG or JPEG picture.
    pub const IMAGE: u64 = 512 * MIB;
    /// A work directory's job record.
    pub const JOB_RECORD: u64 = MIB;
}

/// A file that is not a regular file, too large for its kind, or unreadable.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read (`fs-err` puts the path in the message).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Nothing at the path (or it cannot be looked at).
    #[error(
        "{what} {}: {failure}\n  fix: check the path; it must name an existing file",
        path.display()
    )]
    Missing {
        /// What the file should be.
        what: String,
        /// The path.
        path: PathBuf,
        /// The failure of looking it up (kept out of the error chain: the message has it).
        failure: std::io::Error,
    },
    /// A directory, FIFO, socket or device where a file was expected.
    #[error(
        "{what} {} is {kind}, not a regular file\n  fix: pass the path of a regular file",
        path.display()
    )]
    NotRegular {
        /// What the file should be (e.g. "--noise file").
        what: String,
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a FIFO", ...).
        kind: &'static str,
    },
    /// Larger than any real file of its kind.
    #[error(
        "{what} {} is {size} bytes, more than the {limit} bytes such a file can hold\n  fix: check that this is the right file",
        path.display()
    )]
    TooLarge {
        /// What the file should be.
        what: String,
        /// The path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit for its kind, in bytes.
        limit: u64,
    },
}

fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Checks, without opening it (opening a FIFO blocks), that `path` is a regular file (after
/// symbolic links); returns its size.
pub fn regular_file_size(path: &Path, what: &str) -> Result<u64, FileError> {
    let metadata = std::fs::metadata(path).map_err(|failure| FileError::Missing {
        what: what.to_string(),
        path: path.to_path_buf(),
        failure,
    })?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            what: what.to_string(),
            path: path.to_path_buf(),
            kind: file_kind(metadata.file_type()),
        });
    }
    Ok(metadata.len())
}

/// Opens the regular file `path` of at most `limit` bytes for reading; returns it with its size.
pub fn open_regular(path: &Path, what: &str, limit: u64) -> Result<(fs_err::File, u64), FileError> {
    let size = regular_file_size(path, what)?;
    if size > limit {
        return Err(FileError::TooLarge {
            what: what.to_string(),
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let file = fs_err::File::open(path)?;
    // The path may have been swapped between the check and the open.
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            what: what.to_string(),
            path: path.to_path_buf(),
            kind: file_kind(metadata.file_type()),
        });
    }
    Ok((file, metadata.len()))
}

/// Reads the whole regular file `path`, refusing anything else and files over `limit` bytes (also
/// one that grows past it while being read).
pub fn read_bounded(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>, FileError> {
    let (file, size) = open_regular(path, what, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            what: what.to_string(),
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_bounded_to_string(path: &Path, what: &str, limit: u64) -> Result<String, FileError> {
    let bytes = read_bounded(path, what, limit)?;
    String::from_utf8(bytes).map_err(|error| {
        FileError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} {} is not UTF-8 text: {error}", path.display()),
        ))
    })
}

/// The machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`), or 64 GiB where it
/// cannot be read: the bound for files read whole into memory and for allocations sized by flags.
pub fn physical_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    total.unwrap_or(64 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_kind_without_being_opened() {
        let directory = tempfile::tempdir().unwrap();
        let error = read_bounded(directory.path(), "--noise file", 10).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is a directory, not a regular file"),
            "{error}"
        );
        let error = read_bounded(Path::new("/dev/zero"), "--noise file", 10).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/dev/zero is a character device"),
            "{error}"
        );
        let fifo = directory.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read_bounded(&fifo, "config", 10).unwrap_err();
        assert!(error.to_string().contains("is a FIFO"), "{error}");
    }

    #[test]
    fn files_over_their_limit_are_refused_with_both_sizes() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config.json");
        std::fs::write(&path, [b'x'; 11]).unwrap();
        let error = read_bounded(&path, "model config", 10).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is 11 bytes, more than the 10 bytes"),
            "{error}"
        );
        assert_eq!(read_bounded(&path, "model config", 11).unwrap(), [b'x'; 11]);
        assert!(physical_memory() > 1 << 20);
    }
}
