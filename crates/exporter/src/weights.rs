//! Weights as ONNX external data. A tensor whose stored dtype already matches the graph's is
//! referenced in place (the checkpoint file, symlinks resolved, is hard-linked into the engine
//! directory, so nothing is copied); anything else is converted and appended to the component's weight file.
//! Every checkpoint tensor must be used exactly by the end of an export ([`WeightStore::finish`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use skyreels_graph::{DType, ExternalData, Graph, Value};

use crate::checkpoint::{Checkpoint, StoredDtype, StoredTensor};
use crate::error::{ExportError, Result};
use crate::layout::Layout;

const ALIGNMENT: u64 = 64;

/// Appends converted tensors to one file and hard-links checkpoint files for in-place references.
pub struct WeightSink {
    dir: PathBuf,
    file_name: String,
    writer: Option<BufWriter<fs_err::File>>,
    offset: u64,
    linked: HashMap<usize, Option<String>>,
    allow_links: bool,
    /// Bytes written by conversion.
    pub written_bytes: u64,
    /// Bytes referenced in place.
    pub linked_bytes: u64,
}

impl WeightSink {
    /// A sink writing `dir/file_name`; `allow_links` enables in-place references.
    pub fn new(dir: &Path, file_name: &str, allow_links: bool) -> WeightSink {
        WeightSink {
            dir: dir.to_path_buf(),
            file_name: file_name.to_string(),
            writer: None,
            offset: 0,
            linked: HashMap::new(),
            allow_links,
            written_bytes: 0,
            linked_bytes: 0,
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<ExternalData> {
        if self.writer.is_none() {
            self.writer = Some(BufWriter::with_capacity(
                8 << 20,
                fs_err::File::create(self.dir.join(&self.file_name))?,
            ));
        }
        let writer = self.writer.as_mut().expect("writer opened above");
        let padding = (ALIGNMENT - self.offset % ALIGNMENT) % ALIGNMENT;
        writer.write_all(&vec![0u8; padding as usize])?;
        self.offset += padding;
        writer.write_all(bytes)?;
        let data = ExternalData {
            location: self.file_name.clone(),
            offset: self.offset,
            length: bytes.len() as u64,
        };
        self.offset += bytes.len() as u64;
        self.written_bytes += bytes.len() as u64;
        Ok(data)
    }

    fn link(
        &mut self,
        checkpoint: &Checkpoint,
        tensor: &StoredTensor,
    ) -> Result<Option<ExternalData>> {
        if !self.allow_links {
            return Ok(None);
        }
        if !self.linked.contains_key(&tensor.file) {
            let source = &checkpoint.files[tensor.file].path;
            let name = format!(
                "{}.src{}.safetensors",
                self.file_name.trim_end_matches(".weights"),
                tensor.file
            );
            // A link to the file itself, never to a symlink: a Hugging Face snapshot's files are
            // relative links into `../../blobs/`, which point nowhere from the engine directory.
            let target = fs_err::canonicalize(source)?;
            let linked = fs_err::hard_link(&target, self.dir.join(&name))
                .ok()
                .map(|_| name);
            self.linked.insert(tensor.file, linked);
        }
        Ok(self.linked[&tensor.file].clone().map(|location| {
            self.linked_bytes += tensor.length;
            ExternalData {
                location,
                offset: tensor.offset,
                length: tensor.length,
            }
        }))
    }

    /// Flushes the weight file to disk.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Ok(())
    }
}

fn convert(bytes: &[u8], from: StoredDtype, to: DType) -> Vec<u8> {
    let element = from.size();
    let mut out = Vec::with_capacity(bytes.len() / element * to.size());
    for chunk in bytes.chunks_exact(element) {
        let value = match from {
            StoredDtype::F32 => f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            StoredDtype::F16 => half::f16::from_le_bytes([chunk[0], chunk[1]]).to_f32(),
            StoredDtype::BF16 => half::bf16::from_le_bytes([chunk[0], chunk[1]]).to_f32(),
            StoredDtype::I64 => unreachable!("integer tensors are rejected before conversion"),
        };
        match to {
            DType::F32 => out.extend_from_slice(&value.to_le_bytes()),
            DType::F16 => out.extend_from_slice(&half::f16::from_f32(value).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&half::bf16::from_f32(value).to_le_bytes()),
            other => unreachable!("weights are never stored as {other}"),
        }
    }
    out
}

fn stored_as(dtype: StoredDtype) -> Option<DType> {
    match dtype {
        StoredDtype::F32 => Some(DType::F32),
        StoredDtype::F16 => Some(DType::F16),
        StoredDtype::BF16 => Some(DType::BF16),
        StoredDtype::I64 => None,
    }
}

/// Checkpoint tensors by canonical name, handed to graphs as external initializers.
pub struct WeightStore<'a> {
    checkpoint: &'a Checkpoint,
    /// canonical name → stored name.
    canonical: BTreeMap<String, String>,
    unknown: Vec<String>,
    used: BTreeSet<String>,
    placed: HashMap<(String, DType), ExternalData>,
    /// Where converted weights go.
    pub sink: WeightSink,
}

impl<'a> WeightStore<'a> {
    /// Indexes `checkpoint` under the DiT `layout`'s canonical names.
    pub fn new(checkpoint: &'a Checkpoint, layout: Layout, sink: WeightSink) -> WeightStore<'a> {
        Self::with_names(checkpoint, |stored| layout.canonical(stored), sink)
    }

    /// Indexes `checkpoint` under the names `canonical_name` gives (`None` = not part of the model).
    pub fn with_names(
        checkpoint: &'a Checkpoint,
        canonical_name: impl Fn(&str) -> Option<String>,
        sink: WeightSink,
    ) -> WeightStore<'a> {
        let mut canonical = BTreeMap::new();
        let mut unknown = Vec::new();
        for stored in checkpoint.names() {
            match canonical_name(stored) {
                Some(name) => {
                    canonical.insert(name, stored.to_string());
                }
                None => unknown.push(stored.to_string()),
            }
        }
        WeightStore {
            checkpoint,
            canonical,
            unknown,
            used: BTreeSet::new(),
            placed: HashMap::new(),
            sink,
        }
    }

    /// True when the checkpoint has `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.canonical.contains_key(name)
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.canonical
            .get(name)
            .and_then(|s| self.checkpoint.get(s))
            .map(|t| t.shape.as_slice())
    }

    fn lookup(&self, name: &str, expected: &[usize]) -> Result<&'a StoredTensor> {
        let stored = self
            .canonical
            .get(name)
            .ok_or_else(|| ExportError::MissingWeight {
                name: name.to_string(),
                path: self.checkpoint.root.clone(),
            })?;
        let tensor = self
            .checkpoint
            .get(stored)
            .expect("canonical names index stored tensors");
        if tensor.shape != expected {
            return Err(ExportError::WrongShape {
                name: name.to_string(),
                actual: tensor.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        if tensor.dtype == StoredDtype::I64 {
            return Err(ExportError::WrongDtype {
                name: name.to_string(),
                dtype: "I64".into(),
            });
        }
        Ok(tensor)
    }

    /// Adds `name` (checked against `expected` stored shape) to `graph` as `dtype` with `dims`
    /// (same element count; lets a `[D, C, 1, 2, 2]` conv weight or a `[1, 6, D]` table be viewed
    /// as the graph needs without copying).
    pub fn initializer(
        &mut self,
        graph: &mut Graph,
        name: &str,
        expected: &[usize],
        dims: &[i64],
        dtype: DType,
    ) -> Result<Value> {
        let data = self.place(name, expected, dims, dtype)?;
        Ok(graph.external_initializer(name, dtype, dims, data)?)
    }

    /// Where the bytes of `name` as `dtype` are (checked as [`WeightStore::initializer`] checks
    /// them): the checkpoint file referenced in place, or the converted copy, written once.
    pub fn place(
        &mut self,
        name: &str,
        expected: &[usize],
        dims: &[i64],
        dtype: DType,
    ) -> Result<ExternalData> {
        let tensor = self.lookup(name, expected)?;
        if dims.iter().product::<i64>() as usize != expected.iter().product::<usize>() {
            return Err(ExportError::BadOptions(format!(
                "internal: view {dims:?} of `{name}` {expected:?} changes the size"
            )));
        }
        self.used.insert(name.to_string());
        let key = (name.to_string(), dtype);
        if let Some(data) = self.placed.get(&key) {
            return Ok(data.clone());
        }
        let linked = if stored_as(tensor.dtype) == Some(dtype) {
            self.sink.link(self.checkpoint, tensor)?
        } else {
            None
        };
        let data = match linked {
            Some(data) => data,
            None => {
                let bytes = self.checkpoint.read(tensor)?;
                if stored_as(tensor.dtype) == Some(dtype) {
                    self.sink.append(&bytes)?
                } else {
                    self.sink.append(&convert(&bytes, tensor.dtype, dtype))?
                }
            }
        };
        self.placed.insert(key, data.clone());
        Ok(data)
    }

    /// [`WeightStore::initializer`] with the stored shape as the graph shape.
    pub fn tensor(
        &mut self,
        graph: &mut Graph,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Value> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.initializer(graph, name, shape, &dims, dtype)
    }

    /// Marks a present tensor as deliberately unused (e.g. CLIP's last block and post-norm, which
    /// the penultimate-layer graph never reads), so [`WeightStore::finish`] accepts it.
    pub fn skip(&mut self, name: &str) -> Result<()> {
        if !self.canonical.contains_key(name) {
            return Err(ExportError::MissingWeight {
                name: name.to_string(),
                path: self.checkpoint.root.clone(),
            });
        }
        self.used.insert(name.to_string());
        Ok(())
    }

    /// Canonical names present in the checkpoint, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.canonical.keys().map(String::as_str)
    }

    /// Fails when the checkpoint holds tensors no graph used (a wrong architecture guess).
    pub fn finish(mut self, architecture: &str) -> Result<WeightSink> {
        let mut unused: Vec<String> = self.unknown.clone();
        unused.extend(
            self.canonical
                .iter()
                .filter(|(c, _)| !self.used.contains(*c))
                .map(|(_, s)| s.clone()),
        );
        if let Some(first) = unused.first() {
            return Err(ExportError::UnusedWeights {
                count: unused.len(),
                first: first.clone(),
                path: self.checkpoint.root.clone(),
                architecture: architecture.to_string(),
            });
        }
        self.sink.finish()?;
        Ok(self.sink)
    }
}
