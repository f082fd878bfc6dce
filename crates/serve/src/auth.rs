//! The server's API key: read once at start-up from a file only its owner may read
//! (`--api-key-file`) or from `SKYREELS_API_KEY` (never from a flag value, which `ps` shows), then
//! checked against each request's `Authorization: Bearer <key>` (what OpenAI clients send) in
//! constant time.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable that may hold the key.
pub const KEY_VARIABLE: &str = "SKYREELS_API_KEY";

/// The shortest key accepted, in characters.
pub const MIN_KEY_LENGTH: usize = 16;

/// The largest key file read (a key is one line).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A command that makes a good key file.
const MAKE_KEY: &str = "openssl rand -hex 32 > KEYFILE && chmod 600 KEYFILE";

/// Why no key could be taken.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error(
        "cannot read --api-key-file {path}: {source}\n  fix: pass a file this user can read, holding the key on one line"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file's mode lets others than its owner read or write it.
    #[error(
        "--api-key-file {path} can be read or written by others than its owner (mode {mode:04o})\n  fix: chmod 600 {path}"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not a usable bearer token.
    #[error("{source_name} {problem}\n  fix: {fix}")]
    Unusable {
        /// `--api-key-file PATH` or `SKYREELS_API_KEY`.
        source_name: String,
        /// What is wrong with the key (it is never shown).
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// Both a file and the environment variable give a key.
    #[error(
        "both --api-key-file and {KEY_VARIABLE} give an API key\n  fix: give the key one way: unset {KEY_VARIABLE}, or drop --api-key-file"
    )]
    Twice,
}

/// The key the server requires; only its SHA-256 digest is kept.
pub struct ApiKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ApiKey(…)")
    }
}

impl ApiKey {
    /// The key of `--api-key-file` (`file`) or of `SKYREELS_API_KEY` (`variable`); `None` when
    /// neither is given.
    pub fn configured(
        file: Option<&Path>,
        variable: Option<OsString>,
    ) -> Result<Option<ApiKey>, KeyError> {
        match (file, variable) {
            (Some(_), Some(_)) => Err(KeyError::Twice),
            (Some(file), None) => ApiKey::from_file(file).map(Some),
            (None, Some(value)) => {
                let text = value.into_string().map_err(|_| KeyError::Unusable {
                    source_name: KEY_VARIABLE.into(),
                    problem: "is not valid UTF-8".into(),
                    fix: "set it to printable ASCII, e.g. the output of `openssl rand -hex 32`"
                        .into(),
                })?;
                ApiKey::parse(KEY_VARIABLE, &text, &format!("unset {KEY_VARIABLE}, or set it to a key, e.g. `export {KEY_VARIABLE}=$(openssl rand -hex 32)`")).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// Reads the key from `path`, which only its owner may read or write (mode `0600` or
    /// `0400`); surrounding white space (the final newline) is not part of the key.
    pub fn from_file(path: &Path) -> Result<ApiKey, KeyError> {
        let unreadable = |source| KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        // A FIFO or device would block or never end: only a small regular file is read.
        if !metadata.is_file() || metadata.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::Unusable {
                source_name: format!("--api-key-file {}", path.display()),
                problem: if metadata.is_file() {
                    format!(
                        "is {} bytes, more than the {MAX_KEY_FILE_BYTES} a key file may have",
                        metadata.len()
                    )
                } else {
                    "is not a regular file".into()
                },
                fix: make_key(path),
            });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let source_name = format!("--api-key-file {}", path.display());
        let text = String::from_utf8(bytes).map_err(|_| KeyError::Unusable {
            source_name: source_name.clone(),
            problem: "is not text".into(),
            fix: format!("write the key as printable ASCII: {}", make_key(path)),
        })?;
        ApiKey::parse(&source_name, &text, &make_key(path))
    }

    /// Checks `text` as a key: one token of printable ASCII, at least [`MIN_KEY_LENGTH`] long.
    fn parse(source_name: &str, text: &str, fix: &str) -> Result<ApiKey, KeyError> {
        let key = text.trim();
        let unusable = |problem: &str| KeyError::Unusable {
            source_name: source_name.to_string(),
            problem: problem.to_string(),
            fix: fix.to_string(),
        };
        if key.is_empty() {
            return Err(unusable("is empty"));
        }
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(unusable(
                "holds spaces, line breaks or characters other than printable ASCII, which an `Authorization: Bearer` header cannot carry",
            ));
        }
        if key.len() < MIN_KEY_LENGTH {
            return Err(unusable(&format!(
                "holds a key of {} characters, shorter than the {MIN_KEY_LENGTH} accepted",
                key.len()
            )));
        }
        Ok(ApiKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the key. Both are hashed first, so the comparison takes the same
    /// time whatever the presented key's length, and the digests are compared in constant time:
    /// the answer's timing tells nothing about how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

fn make_key(path: &Path) -> String {
    MAKE_KEY.replace("KEYFILE", &path.display().to_string())
}

/// The token of an `Authorization` header value of the `Bearer` scheme (the scheme's name in
/// any case, as RFC 7235 says), or `None` for another scheme.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn key_file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("key");
        fs_err::write(&path, contents).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (directory, path)
    }

    #[test]
    fn a_key_file_of_its_owner_only_gives_the_key_without_its_newline() {
        let (_directory, path) = key_file(&format!("{KEY}\n"), 0o600);
        let key = ApiKey::from_file(&path).unwrap();
        assert!(key.matches(KEY));
        assert!(!key.matches(&format!("{KEY}\n")));
        assert!(!key.matches(&KEY[1..]));
        assert!(!key.matches(""));
        assert_eq!(format!("{key:?}"), "ApiKey(…)");
        let (_directory, read_only) = key_file(KEY, 0o400);
        assert!(ApiKey::from_file(&read_only).unwrap().matches(KEY));
    }

    #[test]
    fn special_and_oversized_key_files_are_refused_before_reading() {
        let directory = tempfile::tempdir().unwrap();
        let fifo = directory.path().join("key.fifo");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let message = ApiKey::from_file(&fifo).unwrap_err().to_string();
        assert!(message.contains("is not a regular file"), "{message}");
        let (_directory, large) = key_file(&"a".repeat(5000), 0o600);
        let message = ApiKey::from_file(&large).unwrap_err().to_string();
        assert!(
            message.contains("is 5000 bytes, more than the 4096"),
            "{message}"
        );
        assert!(message.contains("fix: openssl rand -hex 32"), "{message}");
    }

    #[test]
    fn exposed_empty_short_and_multi_line_keys_are_refused_with_the_fix() {
        let (_directory, path) = key_file(KEY, 0o644);
        let error = ApiKey::from_file(&path).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "--api-key-file {0} can be read or written by others than its owner (mode 0644)\n  fix: chmod 600 {0}",
                path.display()
            )
        );
        let (_directory, group_writable) = key_file(KEY, 0o620);
        assert!(matches!(
            ApiKey::from_file(&group_writable),
            Err(KeyError::Exposed { mode: 0o620, .. })
        ));
        let (_directory, empty) = key_file(" \n", 0o600);
        let error = ApiKey::from_file(&empty).unwrap_err().to_string();
        assert!(
            error.ends_with(&format!(
                "is empty\n  fix: openssl rand -hex 32 > {0} && chmod 600 {0}",
                empty.display()
            )),
            "{error}"
        );
        let (_directory, short) = key_file("letmein\n", 0o600);
        let error = ApiKey::from_file(&short).unwrap_err().to_string();
        assert!(
            error.contains("holds a key of 7 characters, shorter than the 16 accepted"),
            "{error}"
        );
        assert!(
            !error.contains("letmein"),
            "the key is never shown: {error}"
        );
        let (_directory, two_lines) = key_file(&format!("{KEY}\n{KEY}\n"), 0o600);
        let error = ApiKey::from_file(&two_lines).unwrap_err().to_string();
        assert!(error.contains("line breaks"), "{error}");
        let missing = Path::new("/nonexistent/key");
        let error = ApiKey::from_file(missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read --api-key-file /nonexistent/key: "),
            "{error}"
        );
    }

    #[test]
    fn the_key_comes_from_the_file_or_the_variable_but_not_both() {
        assert!(ApiKey::configured(None, None).unwrap().is_none());
        let key = ApiKey::configured(None, Some(KEY.into())).unwrap().unwrap();
        assert!(key.matches(KEY));
        let error = ApiKey::configured(None, Some("".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("SKYREELS_API_KEY is empty\n  fix: unset SKYREELS_API_KEY"),
            "{error}"
        );
        let (_directory, path) = key_file(KEY, 0o600);
        assert!(matches!(
            ApiKey::configured(Some(&path), Some(KEY.into())),
            Err(KeyError::Twice)
        ));
    }

    #[test]
    fn bearer_tokens_are_read_with_the_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic YWJjOmRlZg=="), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
