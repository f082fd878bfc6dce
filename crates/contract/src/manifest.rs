//! The engine manifest (`ENGINE_DIR/manifest.yaml`): what the exporter wrote, in run order.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::DitConfig;
use crate::yaml::{YamlError, parse_yaml, save_yaml};

/// File name of the manifest inside an engine directory.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// Schema version written by this code (2: the DiT runs as per-layer block graphs).
pub const FORMAT_VERSION: u32 = 2;

/// One tensor in a graph's signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Value name (see [`crate::io`]).
    pub name: String,
    /// Element type: `float32`, `float16`, `bfloat16`, `int64`.
    pub dtype: String,
    /// Dims: numbers are fixed, strings are symbolic axes.
    pub shape: Vec<String>,
}

/// One ONNX graph of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphEntry {
    /// Role of the graph inside its component (`embed`, `blocks`, `head`, ...).
    pub name: String,
    /// ONNX file, relative to the engine directory.
    pub file: String,
    /// Inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in order.
    pub outputs: Vec<TensorSpec>,
}

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
    pub backend: String,
    /// `fp32`, `fp16` or `bf16`.
    pub precision: String,
    /// ONNX Runtime version the engine was built with.
    pub onnxruntime_version: String,
    /// GPU name, for GPU backends.
    pub gpu: Option<String>,
    /// Optimized graph files by original file name.
    pub files: BTreeMap<String, String>,
}

/// The engine directory's table of contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Tool and version that wrote it.
    pub producer: String,
    /// Export target: `cpu` or `cuda`.
    pub target: String,
    /// Weight and matmul precision: `fp32`, `fp16` or `bf16`.
    pub precision: String,
    /// Self-attention implementation: `matmul` or `contrib-mha`.
    pub attention: String,
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

/// The one field read before the rest, so that another schema version gets a clear refusal.
#[derive(Deserialize)]
struct Version {
    format_version: u32,
}

impl Manifest {
    /// Reads `ENGINE_DIR/manifest.yaml`.
    pub fn load(engine_dir: &Path) -> Result<Manifest, YamlError> {
        let path = engine_dir.join(MANIFEST_FILE);
        let text = fs_err::read_to_string(&path)?;
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
}
