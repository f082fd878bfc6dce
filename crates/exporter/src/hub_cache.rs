//! Model ids resolved in the local Hugging Face cache, offline: `Org/Name` at a revision becomes the
//! snapshot folder `HF_HUB_CACHE/models--Org--Name/snapshots/<commit>/`, whose files are symlinks
//! into `../../blobs/`. The layout and the variables follow `huggingface_hub`'s
//! `constants.py` and `file_download.py`; nothing is downloaded. (docs/DESIGN.md says why this is
//! not the `hf-hub` crate.)

use std::path::{Component, Path, PathBuf};

use crate::error::{ExportError, Result};

/// The branch a model id resolves to without `--revision`.
pub const DEFAULT_REVISION: &str = "main";

/// The Hugging Face hub cache folder, and which variable chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    /// The folder holding `models--Org--Name` folders.
    pub root: PathBuf,
    /// Where `root` came from (`HF_HUB_CACHE`, `HF_HOME`, ...), for messages.
    pub chosen_by: String,
}

/// A model id resolved to one snapshot folder of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `Org/Name`.
    pub model_id: String,
    /// The revision asked for (branch, tag or commit).
    pub revision: String,
    /// The commit the revision points at.
    pub commit: String,
    /// `…/models--Org--Name/snapshots/<commit>`.
    pub path: PathBuf,
}

/// Whether `text` is spelled like a Hugging Face model id (`Org/Name`: one slash, letters, digits,
/// `-`, `_`, `.`, neither part starting with `.`), which `skyreels-export` looks up in the cache
/// when no file or folder of that name exists.
pub fn is_model_id(text: &str) -> bool {
    let Some((owner, name)) = text.split_once('/') else {
        return false;
    };
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    part(owner) && part(name)
}

/// `model_id` at `revision` in the cache the environment names (see [`cache_from`]).
pub fn resolve(model_id: &str, revision: &str) -> Result<Snapshot> {
    let cache = HubCache::from_env().ok_or_else(|| ExportError::NotCached {
        model_id: model_id.to_string(),
        reason: "there is no Hugging Face cache to look in: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME or HOME is set".into(),
        fix: "set HF_HUB_CACHE to your Hugging Face cache folder, or pass the model's folder".into(),
    })?;
    cache.snapshot(model_id, revision)
}

/// What the variables `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME` and
/// `HOME` say, as `huggingface_hub` reads them: the first of `HF_HUB_CACHE`,
/// `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`.
pub fn cache_from(variable: impl Fn(&str) -> Option<String>) -> Option<HubCache> {
    let set = |name: &str| variable(name).filter(|v| !v.is_empty());
    let expand = |value: String| match value.strip_prefix("~/") {
        Some(rest) => set("HOME").map_or(PathBuf::from(&value), |home| Path::new(&home).join(rest)),
        None => PathBuf::from(value),
    };
    for name in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(value) = set(name) {
            return Some(HubCache {
                root: expand(value),
                chosen_by: name.to_string(),
            });
        }
    }
    if let Some(home) = set("HF_HOME") {
        return Some(HubCache {
            root: expand(home).join("hub"),
            chosen_by: "HF_HOME".into(),
        });
    }
    if let Some(cache) = set("XDG_CACHE_HOME") {
        return Some(HubCache {
            root: expand(cache).join("huggingface").join("hub"),
            chosen_by: "XDG_CACHE_HOME".into(),
        });
    }
    set("HOME").map(|home| HubCache {
        root: Path::new(&home).join(".cache/huggingface/hub"),
        chosen_by: "the default, ~/.cache/huggingface/hub".into(),
    })
}

impl HubCache {
    /// The cache this process's environment names; `None` when not even `HOME` is set.
    pub fn from_env() -> Option<HubCache> {
        cache_from(|name| std::env::var(name).ok())
    }

    /// The snapshot of `model_id` at `revision` (a branch or tag under `refs/`, or a full commit
    /// hash), which must already be in the cache.
    pub fn snapshot(&self, model_id: &str, revision: &str) -> Result<Snapshot> {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .ok()
            .filter(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        self.snapshot_with(model_id, revision, offline.is_some())
    }

    fn snapshot_with(&self, model_id: &str, revision: &str, offline: bool) -> Result<Snapshot> {
        let download = match offline {
            true => format!(
                "HF_HUB_OFFLINE is set, so download it where the hub is reachable (`hf download {model_id} --revision {revision}`) and copy the cache here"
            ),
            false => format!("download it first: `hf download {model_id} --revision {revision}`"),
        };
        let not_cached = |reason: String, fix: String| ExportError::NotCached {
            model_id: model_id.to_string(),
            reason,
            fix,
        };
        let elsewhere = format!(
            "{download}; or point HF_HUB_CACHE (or HF_HOME) at the cache that has it, or pass the model's folder"
        );
        if !self.root.is_dir() {
            return Err(not_cached(
                format!(
                    "the Hugging Face cache {} (chosen by {}) does not exist",
                    self.root.display(),
                    self.chosen_by
                ),
                elsewhere,
            ));
        }
        let repository = self
            .root
            .join(format!("models--{}", model_id.replace('/', "--")));
        if !repository.is_dir() {
            return Err(not_cached(
                format!(
                    "it is not in the Hugging Face cache {} (chosen by {}; no {})",
                    self.root.display(),
                    self.chosen_by,
                    repository
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
                elsewhere,
            ));
        }
        let plain = Path::new(revision)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if revision.is_empty() || !plain {
            return Err(not_cached(
                format!("--revision `{revision}` is not a branch, tag or commit name"),
                "pass a branch (main), a tag or a full commit hash".into(),
            ));
        }
        let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit && repository.join("snapshots").join(revision).is_dir() {
            revision.to_string()
        } else {
            let reference = repository.join("refs").join(revision);
            match fs_err::read_to_string(&reference) {
                Ok(text) => text.trim().to_string(),
                Err(_) => {
                    let cached = cached_revisions(&repository);
                    return Err(not_cached(
                        format!(
                            "revision `{revision}` is not in the cache ({} has no refs/{revision}; cached: {})",
                            repository.display(),
                            match cached.is_empty() {
                                true => "nothing".to_string(),
                                false => cached.join(", "),
                            }
                        ),
                        match cached.is_empty() {
                            true => download,
                            false => format!(
                                "pass one of the cached revisions with --revision, or {download}"
                            ),
                        },
                    ));
                }
            }
        };
        let path = repository.join("snapshots").join(&commit);
        let valid_commit = !commit.is_empty()
            && Path::new(&commit)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && !commit.contains('/');
        if !valid_commit || !path.is_dir() {
            return Err(not_cached(
                format!(
                    "revision `{revision}` points at commit `{commit}`, whose snapshot {} is missing (an interrupted download?)",
                    path.display()
                ),
                download,
            ));
        }
        Ok(Snapshot {
            model_id: model_id.to_string(),
            revision: revision.to_string(),
            commit,
            path,
        })
    }
}

/// `refs/` names (`main`, `refs/pr/1` as `pr/1`) and snapshot commits found in `repository`.
fn cached_revisions(repository: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![repository.join("refs")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = fs_err::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(name) = path.strip_prefix(repository.join("refs")) {
                found.push(name.to_string_lossy().into_owned());
            }
        }
    }
    if let Ok(entries) = fs_err::read_dir(repository.join("snapshots")) {
        found.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            set.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn model_ids_are_told_from_paths() {
        for id in [
            "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
            "org_1/model.v2",
        ] {
            assert!(is_model_id(id), "{id}");
        }
        for not_id in [
            "tiny",
            "./models/x",
            "/models/x",
            "models/x/y",
            "Org/",
            "/Name",
            "../x",
            "Org/.hidden",
            "a b/c",
        ] {
            assert!(!is_model_id(not_id), "{not_id}");
        }
    }

    #[test]
    fn the_cache_folder_follows_huggingface_hub() {
        let cache = |set: &[(&str, &str)]| cache_from(variables(set)).map(|c| c.root);
        let home = ("HOME", "/home/u");
        assert_eq!(
            cache(&[home]),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(
            cache(&[home, ("XDG_CACHE_HOME", "/xdg")]),
            Some(PathBuf::from("/xdg/huggingface/hub"))
        );
        assert_eq!(
            cache(&[home, ("XDG_CACHE_HOME", "/xdg"), ("HF_HOME", "~/hf")]),
            Some(PathBuf::from("/home/u/hf/hub"))
        );
        assert_eq!(
            cache(&[
                home,
                ("HF_HOME", "/hf"),
                ("HUGGINGFACE_HUB_CACHE", "/legacy")
            ]),
            Some(PathBuf::from("/legacy"))
        );
        assert_eq!(
            cache(&[
                ("HF_HOME", "/hf"),
                ("HUGGINGFACE_HUB_CACHE", "/legacy"),
                ("HF_HUB_CACHE", "/hub")
            ]),
            Some(PathBuf::from("/hub"))
        );
        assert_eq!(
            cache(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/hf")]),
            Some(PathBuf::from("/hf/hub"))
        );
        assert_eq!(cache(&[]), None);
    }

    fn repository(root: &Path) -> PathBuf {
        let repository = root.join("models--Org--Model");
        fs_err::create_dir_all(repository.join("snapshots").join("a".repeat(40))).unwrap();
        fs_err::create_dir_all(repository.join("snapshots").join("b".repeat(40))).unwrap();
        fs_err::create_dir_all(repository.join("refs/pr")).unwrap();
        fs_err::write(
            repository.join("refs/main"),
            format!("{}\n", "a".repeat(40)),
        )
        .unwrap();
        fs_err::write(repository.join("refs/pr/1"), "b".repeat(40)).unwrap();
        repository
    }

    #[test]
    fn revisions_resolve_through_refs_or_as_commits() {
        let root = tempfile::tempdir().unwrap();
        let repository = repository(root.path());
        let cache = HubCache {
            root: root.path().to_path_buf(),
            chosen_by: "HF_HUB_CACHE".into(),
        };
        let main = cache.snapshot_with("Org/Model", "main", false).unwrap();
        assert_eq!(main.commit, "a".repeat(40));
        assert_eq!(main.path, repository.join("snapshots").join("a".repeat(40)));
        let pull = cache.snapshot_with("Org/Model", "pr/1", false).unwrap();
        assert_eq!(pull.commit, "b".repeat(40));
        let commit = cache
            .snapshot_with("Org/Model", &"b".repeat(40), false)
            .unwrap();
        assert_eq!(commit.path, pull.path);
    }

    #[test]
    fn what_is_not_cached_is_named_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        repository(root.path());
        let cache = HubCache {
            root: root.path().to_path_buf(),
            chosen_by: "HF_HUB_CACHE".into(),
        };
        let error = |id: &str, revision: &str, offline: bool| {
            cache
                .snapshot_with(id, revision, offline)
                .unwrap_err()
                .to_string()
        };
        let missing = error("Org/Other", "main", false);
        assert!(
            missing.contains("Org/Other: it is not in the Hugging Face cache")
                && missing.contains("no models--Org--Other")
                && missing
                    .contains("fix: download it first: `hf download Org/Other --revision main`"),
            "{missing}"
        );
        let revision = error("Org/Model", "v2", false);
        assert!(
            revision.contains("revision `v2` is not in the cache")
                && revision.contains(&format!(
                    "cached: {}, {}, main, pr/1",
                    "a".repeat(40),
                    "b".repeat(40)
                ))
                && revision.contains("fix: pass one of the cached revisions with --revision"),
            "{revision}"
        );
        let offline = error("Org/Other", "main", true);
        assert!(offline.contains("HF_HUB_OFFLINE is set"), "{offline}");
        let escape = error("Org/Model", "../../x", false);
        assert!(
            escape.contains("is not a branch, tag or commit name"),
            "{escape}"
        );
        let absent = HubCache {
            root: root.path().join("nowhere"),
            chosen_by: "HF_HOME".into(),
        };
        let error = absent
            .snapshot_with("Org/Model", "main", false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("(chosen by HF_HOME) does not exist"),
            "{error}"
        );
    }
}
