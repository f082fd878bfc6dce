//! The engine manifest (`ENGINE_DIR/manifest.yaml`): what the exporter wrote, in run order.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::DitConfig;
pub use crate::graph_entry::{GraphEntry, TensorSpec};
use crate::target::{Attention, Precision, Target};
use crate::yaml::{YamlError, parse_yaml, save_yaml};

/// File name of the manifest inside an engine directory.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// Schema version written by this code (2: the DiT runs as per-layer block graphs).
pub const FORMAT_VERSION: u32 = 2;

/// Where one weight's bytes are: a byte range of a file in the engine directory. Its dtype and
/// shape are those of the graph input it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTensor {
    /// File, relative to the engine directory.
    pub file: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// The DiT: `embed`, then per transformer layer `block_qkv` → `attention` → `block_out` (bound to
/// that layer's weights), then `head`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitComponent {
    /// Architecture.
    pub config: DitConfig,
    /// `embed`, `block_qkv`, `attention`, `block_out`, `head`: outputs feed the inputs of the same
    /// name (see docs/GRAPHS.md for the layer loop).
    pub graphs: Vec<GraphEntry>,
    /// Per transformer layer, in order: its weights by the name of the block-graph input they bind to.
    pub layers: Vec<BTreeMap<String, ExternalTensor>>,
    /// TeaCache's two element-wise graphs, `teacache_residual` (`block_tokens − patch_tokens`) and
    /// `teacache_reuse` (`patch_tokens + teacache_residual → block_tokens`), so that the cached
    /// residual stays where the tokens are (on the GPU). Engines without them compute on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teacache: Vec<GraphEntry>,
}

/// What `skyreels-build` compiled, recorded so the runtime can refuse a mismatched engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// `cpu`, `cuda` or `tensorrt`.
    pub backend: Target,
    /// `fp32`, `fp16` or `bf16`.
    pub precision: Precision,
    /// ONNX Runtime version the engine was built with.
    pub onnxruntime_version: String,
    /// GPU name, for GPU backends.
    pub gpu: Option<String>,
    /// Optimized graph files by original file name.
    pub files: BTreeMap<String, String>,
}

/// The components of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The diffusion transformer.
    Dit,
    /// The Wan causal 3D VAE.
    Vae,
    /// The umT5-XXL text encoder and its tokenizer.
    TextEncoder,
    /// The CLIP image encoder of image-to-video models.
    ImageEncoder,
}

impl Component {
    /// Manifest spelling (`text_encoder`).
    pub fn name(self) -> &'static str {
        match self {
            Component::Dit => "dit",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::ImageEncoder => "image_encoder",
        }
    }

    /// Words for messages (`text encoder`).
    pub fn describe(self) -> &'static str {
        match self {
            Component::Dit => "DiT",
            Component::Vae => "VAE",
            Component::TextEncoder => "text encoder",
            Component::ImageEncoder => "image encoder",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// A component the exporter looked for next to the checkpoint and did not find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingComponent {
    /// Which one.
    pub component: Component,
    /// The files it would have been exported from, e.g. `text_encoder/ with tokenizer/tokenizer.json`.
    pub looked_for: String,
    /// The folder they were looked for in.
    pub looked_in: String,
}

/// What `skyreels-export` read: the checkpoint as given, and what it did not find there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSource {
    /// The checkpoint argument: a path, `tiny`, or a Hugging Face model id.
    pub checkpoint: String,
    /// For a model id: the revision asked for (`main` unless `--revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// For a model id: the commit of the cached snapshot that was exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Components of the model that were not found (exported with `--require dit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingComponent>,
}

impl ExportSource {
    /// The `skyreels-export` arguments that read the same checkpoint again.
    pub fn export_arguments(&self) -> String {
        match &self.revision {
            Some(revision) if revision != "main" => {
                format!("{} --revision {revision}", self.checkpoint)
            }
            _ => self.checkpoint.clone(),
        }
    }

    /// What was recorded as missing about `component`, if anything.
    pub fn missing(&self, component: Component) -> Option<&MissingComponent> {
        self.missing.iter().find(|m| m.component == component)
    }
}

/// The engine directory's table of contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Tool and version that wrote it.
    pub producer: String,
    /// Export target: `cpu`, `cuda` or `tensorrt`.
    pub target: Target,
    /// Weight and matmul precision: `fp32`, `fp16` or `bf16`.
    pub precision: Precision,
    /// Attention form: `matmul`, `contrib-mha` or `onnx-attention`.
    pub attention: Attention,
    /// The diffusion transformer.
    pub dit: Option<DitComponent>,
    /// The Wan causal 3D VAE.
    #[serde(default)]
    pub vae: Option<crate::vae::VaeComponent>,
    /// The umT5-XXL text encoder and its tokenizer.
    #[serde(default)]
    pub text_encoder: Option<crate::text::TextEncoderComponent>,
    /// The CLIP ViT-H/14 image encoder (I2V).
    #[serde(default)]
    pub image_encoder: Option<crate::image::ImageEncoderComponent>,
    /// Backend build record, added by `skyreels-build`.
    pub build: Option<BuildRecord>,
    /// What the export read, and which components it did not find (absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ExportSource>,
}

/// The first string (value or key) of `value` with a control character or surrounding spaces, and
/// where it is. Every string of a manifest is a name, a file, a shape axis or a version, none of
/// which has them; refusing them also keeps the file stable when it is written back (found by
/// fuzzing: a `\r` in a shape axis did not survive a YAML round trip).
fn unclean_string(value: &serde_json::Value, at: String) -> Option<(String, String)> {
    let unclean = |s: &str| s.chars().any(char::is_control) || s.trim() != s;
    match value {
        serde_json::Value::String(s) if unclean(s) => Some((at, s.clone())),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| unclean_string(item, format!("{at}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let here = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            if unclean(key) {
                Some((here, key.clone()))
            } else {
                unclean_string(item, here)
            }
        }),
        _ => None,
    }
}

/// The largest number a manifest holds besides weight byte ranges: widths, lengths, layer and
/// vocabulary counts are all far below it; larger ones would only overflow or exhaust memory when
/// the runtime allocates by them.
pub const LARGEST_NUMBER: u64 = 1 << 20;

/// The first number of `value` above [`LARGEST_NUMBER`] (or negative), and where it is.
fn oversized_number(value: &serde_json::Value, at: String) -> Option<(String, String)> {
    match value {
        serde_json::Value::Number(number) => {
            let fits = match (number.as_u64(), number.as_i64(), number.as_f64()) {
                (Some(n), _, _) => n <= LARGEST_NUMBER,
                (None, Some(_), _) => false,
                (None, None, Some(_)) => true,
                _ => false,
            };
            (!fits).then(|| (at, number.to_string()))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| oversized_number(item, format!("{at}[{i}]"))),
        // Byte ranges of weight files are checked against the files when they are bound.
        serde_json::Value::Object(fields) => fields
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "offset" | "length"))
            .find_map(|(key, item)| oversized_number(item, join(&at, key))),
        _ => None,
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Whether `file` names a path inside the engine directory: relative, without `..`.
fn stays_inside(file: &str) -> bool {
    use std::path::Component;
    !file.is_empty()
        && Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The first file the manifest names (a graph's `file`, the `tokenizer`, the build's files) that is
/// absolute or climbs out of the engine directory, and where it is.
fn escaping_file(value: &serde_json::Value, at: String, is_file: bool) -> Option<(String, String)> {
    match value {
        serde_json::Value::String(s) if is_file && !stays_inside(s) => Some((at, s.clone())),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| escaping_file(item, format!("{at}[{i}]"), is_file)),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let here = join(&at, key);
            let build_files = here == "build.files";
            if build_files
                && let Some(bad) = item
                    .as_object()
                    .and_then(|files| files.keys().find(|name| !stays_inside(name)))
            {
                return Some((here, bad.clone()));
            }
            escaping_file(
                item,
                here,
                is_file || build_files || key == "file" || key == "tokenizer",
            )
        }),
        _ => None,
    }
}

/// The one field read before the rest, so that another schema version gets a clear refusal.
#[derive(Deserialize)]
struct Version {
    format_version: u32,
}

impl Manifest {
    /// Reads `ENGINE_DIR/manifest.yaml`.
    pub fn load(engine_dir: &Path) -> Result<Manifest, YamlError> {
        let path = engine_dir.join(MANIFEST_FILE);
        let text = crate::files::read_bounded_to_string(
            &path,
            "engine manifest",
            crate::files::limit::YAML,
        )?;
        // The version first: an older schema would otherwise fail on its first changed field.
        let version: Version = parse_yaml(&text, &path, "engine manifest")?;
        if version.format_version != FORMAT_VERSION {
            return Err(YamlError::Parse {
                path,
                what: "engine manifest",
                message: format!(
                    "format_version {} but this tool reads {FORMAT_VERSION}; re-export the engine with this version",
                    version.format_version
                ),
            });
        }
        let manifest: Manifest = parse_yaml(&text, &path, "engine manifest")?;
        if let Some((at, value)) = unclean_string(
            &serde_json::to_value(&manifest).expect("a manifest is JSON-representable"),
            String::new(),
        ) {
            return Err(YamlError::Parse {
                path: engine_dir.join(MANIFEST_FILE),
                what: "engine manifest",
                message: format!(
                    "{at} is {value:?}: names, files and shapes hold no control characters and no leading or trailing spaces"
                ),
            });
        }
        let value = serde_json::to_value(&manifest).expect("a manifest is JSON-representable");
        if let Some((at, number)) = oversized_number(&value, String::new()) {
            return Err(YamlError::Parse {
                path: engine_dir.join(MANIFEST_FILE),
                what: "engine manifest",
                message: format!(
                    "{at} is {number}, outside 0..={LARGEST_NUMBER} (no SkyReels-V2 engine has a size that large)"
                ),
            });
        }
        if let Some((at, file)) = escaping_file(&value, String::new(), false) {
            return Err(YamlError::Parse {
                path: engine_dir.join(MANIFEST_FILE),
                what: "engine manifest",
                message: format!(
                    "{at} is {file:?}: files are named relative to the engine directory, never absolute or with `..` (as ONNX Runtime refuses such external-data paths)"
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes `ENGINE_DIR/manifest.yaml`.
    pub fn save(&self, engine_dir: &Path) -> Result<(), YamlError> {
        save_yaml(&engine_dir.join(MANIFEST_FILE), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join(MANIFEST_FILE), text).expect("write");
    }

    /// The fuzzer's finding: a shape axis `"32> \r"` parsed, but did not survive being written back.
    #[test]
    fn strings_with_control_characters_or_surrounding_spaces_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "format_version: 2\nproducer: test\ntarget: cpu\nprecision: fp32\nattention: matmul\nbuild: null\n";
        write(dir.path(), base);
        Manifest::load(dir.path()).expect("a clean manifest loads");
        for (bad, at) in [
            ("producer: \"test \\r\"", "producer"),
            ("producer: \" test\"", "producer"),
        ] {
            write(dir.path(), &base.replace("producer: test", bad));
            let error = Manifest::load(dir.path()).unwrap_err().to_string();
            assert!(
                error.contains(&format!("{at} is"))
                    && error.contains("no control characters")
                    && error.contains("fix:"),
                "{error}"
            );
        }
    }

    #[test]
    fn files_outside_the_engine_directory_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let graph = "dit:\n  config: {model_type: t2v, in_dim: 16, out_dim: 16, dim: 32, ffn_dim: 64, num_heads: 2, num_layers: 2, freq_dim: 256, text_dim: 32, text_len: 8, image_dim: null, image_len: null, eps: 1.0e-6, inject_sample_info: false}\n  graphs:\n  - {name: embed, file: FILE, inputs: [], outputs: []}\n  layers:\n  - block.weight: {file: dit.weights, offset: 17179869184, length: 128}\n";
        let base = format!(
            "format_version: {FORMAT_VERSION}\nproducer: test\ntarget: cpu\nprecision: fp32\nattention: matmul\nbuild: null\n{graph}"
        );
        write(dir.path(), &base.replace("FILE", "dit/embed.onnx"));
        Manifest::load(dir.path()).expect("a relative file loads");
        for bad in ["/etc/passwd", "../outside.onnx", "dit/../../outside.onnx"] {
            write(dir.path(), &base.replace("FILE", bad));
            let error = Manifest::load(dir.path()).unwrap_err().to_string();
            assert!(
                error.contains(&format!("dit.graphs[0].file is \"{bad}\""))
                    && error.contains("never absolute or with `..`")
                    && error.contains("fix:"),
                "{error}"
            );
        }
        let built = base.replace("FILE", "embed.onnx").replace("build: null", "build: {backend: cpu, precision: fp32, onnxruntime_version: 1.31.1, gpu: null, files: {embed.onnx: ../../x.onnx}}");
        write(dir.path(), &built);
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("build.files.embed.onnx is \"../../x.onnx\""),
            "{error}"
        );
    }

    #[test]
    fn numbers_no_engine_has_are_refused_naming_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "format_version: 2\nproducer: test\ntarget: cpu\nprecision: fp32\nattention: matmul\nbuild: null\ntext_encoder:\n  config: {vocab_size: 64, dim: 32, num_heads: 2, head_dim: 16, ffn_dim: 64, num_layers: 2, num_buckets: 32, max_distance: 128, eps: 1.0e-6}\n  graphs: []\n  tokenizer: tokenizer.json\n  max_length: 18446744073709551615\n";
        write(dir.path(), text);
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("text_encoder.max_length is 18446744073709551615, outside 0..=1048576")
                && error.contains("fix:"),
            "{error}"
        );
        write(dir.path(), &text.replace("18446744073709551615", "512"));
        Manifest::load(dir.path()).expect("a real length loads");
    }
}
