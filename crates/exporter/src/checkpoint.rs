//! Memory-mapped safetensors checkpoints: one file, a directory of files, or a sharded set with
//! `*.safetensors.index.json`. Nothing is copied into memory; tensors are byte ranges of the maps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ExportError, Result};
pub use crate::stored_dtype::StoredDtype;

/// One tensor's place in the checkpoint.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Element type.
    pub dtype: StoredDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// One mapped safetensors file.
pub struct CheckpointFile {
    /// Path on disk.
    pub path: PathBuf,
    map: Mmap,
}

/// A set of safetensors files viewed as one name → tensor table.
pub struct Checkpoint {
    /// Where it was opened from.
    pub root: PathBuf,
    /// The mapped files.
    pub files: Vec<CheckpointFile>,
    tensors: BTreeMap<String, StoredTensor>,
}

/// Files of the other components that sit next to the DiT in an original-layout model folder
/// (VAE, umT5, CLIP); a directory scan for the DiT's weights skips them.
const COMPANION_PREFIXES: &[&str] = &["Wan2.1_VAE", "models_t5_", "models_clip_"];

#[expect(
    unsafe_code,
    reason = "memory-mapping is the only way to read 28 GB checkpoints without copying them"
)]
fn map_file(path: &Path) -> Result<Mmap> {
    let (file, _) = skyreels_contract::files::open_regular(path, "checkpoint file", u64::MAX)?;
    // SAFETY: the map is read-only and we do not modify the file while it is mapped; a concurrent
    // truncation by another process is outside what any reader can defend against.
    let map = unsafe { Mmap::map(file.file()) };
    Ok(map.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot map {}: {error}", path.display()),
        )
    })?)
}

/// Refuses a weight with an empty dimension: none of the models has one, and ONNX Runtime would
/// only report it later as a node error.
fn check_not_empty(name: &str, shape: &[usize], path: &Path) -> Result<()> {
    if shape.contains(&0) {
        return Err(ExportError::CorruptSafetensors {
            path: path.to_path_buf(),
            reason: format!(
                "tensor `{name}` has shape {shape:?}, with an empty dimension; no weight of these models is empty"
            ),
        });
    }
    Ok(())
}

/// The parser's message, plus the expected and actual sizes when the file is cut short or too long.
fn describe_safetensors_error(error: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    if !matches!(
        error,
        safetensors::SafeTensorError::MetadataIncompleteBuffer
    ) {
        return error.to_string();
    }
    let header_len = bytes.get(..8).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize
    });
    let header: Option<serde_json::Value> = bytes
        .get(8..8usize.saturating_add(header_len))
        .and_then(|h| serde_json::from_slice(h).ok());
    let data_end = header.as_ref().and_then(|h| h.as_object()).map(|tensors| {
        tensors
            .values()
            .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
            .max()
            .unwrap_or(0)
    });
    match data_end {
        Some(end) => format!(
            "the header describes {} bytes but the file has {} (truncated download?)",
            8 + header_len as u64 + end,
            bytes.len()
        ),
        None => error.to_string(),
    }
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, or a directory holding one or more of them
    /// (an `*.index.json`, when present, decides which files belong to the model).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let files = if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            Self::list_files(path)?
        };
        let mut checkpoint = Checkpoint {
            root: path.to_path_buf(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for file in files {
            checkpoint.add_file(&file)?;
        }
        Ok(checkpoint)
    }

    fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
        if !dir.is_dir() {
            return Err(ExportError::NoCheckpoint {
                path: dir.to_path_buf(),
                reason: "no such file or directory".into(),
            });
        }
        let mut indexes = Vec::new();
        let mut files = Vec::new();
        let mut companions = Vec::new();
        for entry in fs_err::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(".safetensors.index.json") {
                indexes.push(path);
            } else if name.ends_with(".safetensors") {
                if COMPANION_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    companions.push(path)
                } else {
                    files.push(path)
                }
            }
        }
        if files.is_empty() {
            // A folder holding only a component's file (e.g. `vae/Wan2.1_VAE.safetensors`) is that component.
            files = companions;
        }
        if let Some(index) = indexes.first() {
            if indexes.len() > 1 {
                return Err(ExportError::NoCheckpoint {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "{} index files; keep one model per directory",
                        indexes.len()
                    ),
                });
            }
            return Self::files_from_index(dir, index);
        }
        if files.is_empty() {
            return Err(ExportError::NoCheckpoint {
                path: dir.to_path_buf(),
                reason: "no *.safetensors files".into(),
            });
        }
        files.sort();
        Ok(files)
    }

    fn files_from_index(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
        let text = skyreels_contract::files::read_bounded_to_string(
            index,
            "shard index",
            skyreels_contract::files::limit::SHARD_INDEX,
        )?;
        let bad = |reason: String| ExportError::BadConfig {
            path: index.to_path_buf(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut names: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        let mut files = Vec::new();
        for name in names {
            if name.contains('/') || name.contains("..") {
                return Err(bad(format!(
                    "shard name `{name}` must be a plain file name"
                )));
            }
            let path = dir.join(&name);
            if !path.is_file() {
                return Err(ExportError::NoCheckpoint {
                    path: path.clone(),
                    reason: format!(
                        "shard listed in {} is missing; download it",
                        index.display()
                    ),
                });
            }
            files.push(path);
        }
        Ok(files)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let map = map_file(path)?;
        if crate::pth::is_pth(path) {
            return self.add_pth(path, map);
        }
        let corrupt = |reason: String| ExportError::CorruptSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| corrupt(describe_safetensors_error(&e, &map)))?;
        let data_start = 8 + header_len as u64;
        let index = self.files.len();
        for (name, info) in metadata.tensors() {
            let dtype = match info.dtype {
                Dtype::F32 => StoredDtype::F32,
                Dtype::F16 => StoredDtype::F16,
                Dtype::BF16 => StoredDtype::BF16,
                Dtype::I64 => StoredDtype::I64,
                other => {
                    return Err(ExportError::WrongDtype {
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            let (start, end) = info.data_offsets;
            check_not_empty(&name, &info.shape, path)?;
            let tensor = StoredTensor {
                file: index,
                dtype,
                shape: info.shape.clone(),
                offset: data_start + start as u64,
                length: (end - start) as u64,
            };
            if self.tensors.insert(name.clone(), tensor).is_some() {
                return Err(corrupt(format!(
                    "tensor `{name}` appears in more than one file"
                )));
            }
        }
        self.files.push(CheckpointFile {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    fn add_pth(&mut self, path: &Path, map: Mmap) -> Result<()> {
        let index = self.files.len();
        for t in crate::pth::read_index(&map, path)? {
            check_not_empty(&t.name, &t.shape, path)?;
            let tensor = StoredTensor {
                file: index,
                dtype: t.dtype,
                shape: t.shape,
                offset: t.offset,
                length: t.length,
            };
            if self.tensors.insert(t.name.clone(), tensor).is_some() {
                return Err(ExportError::CorruptSafetensors {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{}` appears twice", t.name),
                });
            }
        }
        self.files.push(CheckpointFile {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    /// Looks a tensor up by its stored name.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }

    /// All stored names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The raw little-endian bytes of a tensor.
    pub fn bytes(&self, tensor: &StoredTensor) -> &[u8] {
        let start = tensor.offset as usize;
        &self.files[tensor.file].map[start..start + tensor.length as usize]
    }

    /// Copies a tensor's bytes with a positioned read, so converted tensors do not keep the
    /// checkpoint's pages resident (mapped pages count towards the exporter's RSS).
    pub fn read(&self, tensor: &StoredTensor) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let path = &self.files[tensor.file].path;
        let file = fs_err::File::open(path)?;
        let mut buffer = vec![0u8; tensor.length as usize];
        file.file()
            .read_exact_at(&mut buffer, tensor.offset)
            .map_err(|e| ExportError::CorruptSafetensors {
                path: path.clone(),
                reason: format!("reading {} bytes at {}: {e}", tensor.length, tensor.offset),
            })?;
        Ok(buffer)
    }

    /// A tensor converted to f32 (for small tensors the exporter folds on the host).
    pub fn to_f32(&self, tensor: &StoredTensor) -> Vec<f32> {
        let bytes = self.bytes(tensor);
        match tensor.dtype {
            StoredDtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoredDtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StoredDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StoredDtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
                .collect(),
        }
    }
}
