//! VAE export: a Wan 2.1 causal 3D VAE checkpoint (diffusers `AutoencoderKLWan` or original Wan
//! names, safetensors or the released `Wan2.1_VAE.pth`) → `vae_encode_first.onnx`,
//! `vae_encode_chunk.{0..}.onnx` (stages), `vae_decode_first.onnx`, `vae_decode_chunk.{0..}.onnx`,
//! sharing one set of external weights. The graph contract is documented
//! in [`skyreels_contract::vae`]; upstream is `WanVAE_` in Wan2.1's `wan/modules/vae.py`.

pub mod config;
mod layers;
pub mod names;
pub mod random;
mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skyreels_contract::manifest::GraphEntry;
use skyreels_contract::vae::{VaeComponent, VaeConfig, graph, stage_name};
use skyreels_graph::{DType, Model};

use crate::checkpoint::Checkpoint;
use crate::dit::GraphReport;
use crate::error::{ExportError, Result};
use crate::weights::{WeightSink, WeightStore};
use layers::ChunkGraph;
use names::VaeLayout;

/// How to export the VAE.
#[derive(Debug, Clone)]
pub struct VaeExportOptions {
    /// Reference float32 weights in place (hard links) instead of copying them.
    pub link_weights: bool,
    /// Weights, activations and caches: `DType::F32`, or `DType::F16` for GPUs (the norms' sums of
    /// squares stay float32; video and latents are float32 at the graph boundary either way).
    pub compute: DType,
}

/// What an export produced.
pub struct VaeExport {
    /// Manifest entry.
    pub component: VaeComponent,
    /// Per-graph summaries.
    pub reports: Vec<GraphReport>,
    /// Bytes written by conversion / referenced in place.
    pub weight_bytes: (u64, u64),
}

/// Weight file names tried, in order, next to an original-format model: the released torch pickle
/// and safetensors conversions of it.
const ORIGINAL_FILES: &[&str] = &[
    "Wan2.1_VAE.pth",
    "Wan2.1_VAE.safetensors",
    "wan_2.1_vae.safetensors",
];

/// Finds the VAE belonging to `checkpoint`: the path itself when it is a VAE
/// ([`is_vae_checkpoint`]), else the `vae/` folder of a diffusers snapshot (or of the built-in
/// tiny model), or `Wan2.1_VAE.pth` (or a safetensors conversion of it) beside an original-format
/// DiT (for a file, in its folder). `None` when there is none.
pub fn locate(checkpoint: &Path) -> Option<PathBuf> {
    if is_vae_checkpoint(checkpoint) {
        return Some(checkpoint.to_path_buf());
    }
    let dir = if checkpoint.is_file() {
        checkpoint.parent()?
    } else {
        checkpoint
    };
    let sub = dir.join("vae");
    if sub.is_dir() && has_safetensors(&sub) {
        return Some(sub);
    }
    ORIGINAL_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// True when `path` is a VAE checkpoint on its own: a diffusers VAE folder, or a `.safetensors` or
/// torch `.pth` file holding `encoder.*` and `decoder.*` tensors.
pub fn is_vae_checkpoint(path: &Path) -> bool {
    if path.is_dir() {
        return is_vae_folder(path);
    }
    if path.extension().is_none_or(|e| e != "safetensors") && !crate::pth::is_pth(path) {
        return false;
    }
    Checkpoint::open(path).is_ok_and(|c| {
        c.names().any(|n| n.starts_with("encoder.")) && c.names().any(|n| n.starts_with("decoder."))
    })
}

/// True when `dir` is a diffusers VAE folder (its `config.json` names `AutoencoderKLWan`).
pub fn is_vae_folder(dir: &Path) -> bool {
    let Ok(text) = skyreels_contract::files::read_bounded_to_string(
        &dir.join("config.json"),
        "model config",
        skyreels_contract::files::limit::JSON_CONFIG,
    ) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| {
            json.get("_class_name")
                .and_then(|v| v.as_str())
                .map(|s| s == "AutoencoderKLWan")
        })
        .unwrap_or(false)
}

fn has_safetensors(dir: &Path) -> bool {
    fs_err::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        })
        .unwrap_or(false)
}

fn read_json(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let text = skyreels_contract::files::read_bounded_to_string(
        &path,
        "model config",
        skyreels_contract::files::limit::JSON_CONFIG,
    )?;
    serde_json::from_str(&text).map_err(|e| ExportError::BadConfig {
        path,
        reason: format!("not valid JSON: {e}"),
    })
}

/// Opens the VAE checkpoint at `source` (a folder or a `.safetensors` file) and reads its architecture.
pub fn inspect(source: &Path) -> Result<(Checkpoint, VaeLayout, VaeConfig)> {
    let checkpoint = Checkpoint::open(source)?;
    let layout = VaeLayout::detect(checkpoint.names());
    let dir = if source.is_file() {
        source.parent().unwrap_or(Path::new("."))
    } else {
        source
    };
    let json = if source.is_file() {
        serde_json::Value::Object(Default::default())
    } else {
        read_json(dir)?
    };
    let store = WeightStore::with_names(
        &checkpoint,
        |n| layout.canonical(n),
        WeightSink::new(dir, "unused", false),
    );
    let config = config::vae_config(&store, &json, source)?;
    Ok((checkpoint, layout, config))
}

/// Exports the VAE at `source` into `out_dir`.
pub fn export(source: &Path, out_dir: &Path, options: &VaeExportOptions) -> Result<VaeExport> {
    let (checkpoint, layout, config) = inspect(source)?;
    let sink = WeightSink::new(out_dir, "vae.weights", options.link_weights);
    let mut store = WeightStore::with_names(&checkpoint, |n| layout.canonical(n), sink);
    let mut metadata = BTreeMap::new();
    metadata.insert("skyreels.component".to_string(), "vae".to_string());
    type Builder = fn(&mut ChunkGraph<'_, '_>, &VaeConfig) -> Result<()>;
    let spatial = config.spatial_compression();
    let plan: [(&str, bool, usize, Builder); 4] = [
        (graph::ENCODE_FIRST, true, spatial, topology::build_encoder),
        (graph::ENCODE_CHUNK, false, spatial, topology::build_encoder),
        (graph::DECODE_FIRST, true, 1, topology::build_decoder),
        (graph::DECODE_CHUNK, false, 1, topology::build_decoder),
    ];
    let mut graphs = Vec::new();
    let mut reports = Vec::new();
    for (name, first, scale, build) in plan {
        let mut chunk = ChunkGraph::new(
            &format!("vae_{name}"),
            &mut store,
            first,
            scale,
            options.compute,
        );
        build(&mut chunk, &config)?;
        let parts = chunk.into_parts();
        let staged = parts.len() > 1;
        for (index, part) in parts.into_iter().enumerate() {
            let name = if staged {
                stage_name(name, index)
            } else {
                name.to_string()
            };
            let file = format!("vae_{name}.onnx");
            let model = Model::from_graph(part.graph, &metadata);
            model.save(&out_dir.join(&file))?;
            reports.push(GraphReport {
                file: file.clone(),
                nodes: model.proto.graph.as_ref().map_or(0, |g| g.node.len()),
                ops: model.op_histogram(),
            });
            graphs.push(GraphEntry {
                name,
                file,
                inputs: part.inputs,
                outputs: part.outputs,
            });
        }
    }
    let architecture = format!(
        "Wan VAE base_dim {} dim_mult {:?}",
        config.base_dim, config.dim_mult
    );
    let sink = store.finish(&architecture)?;
    Ok(VaeExport {
        component: VaeComponent { config, graphs },
        reports,
        weight_bytes: (sink.written_bytes, sink.linked_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tiny_vae_exports_every_weight() {
        let source = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        random::write_random_vae(source.path(), &random::tiny_vae_config(), 0).expect("write");
        let file = locate(source.path()).expect("located");
        let export = export(
            &file,
            out.path(),
            &VaeExportOptions {
                compute: skyreels_graph::DType::F32,
                link_weights: false,
            },
        )
        .expect("export");
        assert_eq!(export.component.config, random::tiny_vae_config());
        let component = &export.component;
        let slots = |ports: &[skyreels_contract::TensorSpec], prefix: &str| -> Vec<String> {
            ports
                .iter()
                .filter_map(|p| p.name.strip_prefix(prefix).map(str::to_string))
                .collect()
        };
        let (cache_in, cache_out) = (
            skyreels_contract::vae::io::CACHE_IN_PREFIX,
            skyreels_contract::vae::io::CACHE_OUT_PREFIX,
        );
        // Stages: one per residual block at full resolution, one for the rest (encoder: its 2
        // first residual blocks, then the rest; decoder: everything up to the last upsampling,
        // then its 3 last residual blocks, then the head).
        for (first, chunk, stage_count, slot_count) in [
            (graph::ENCODE_FIRST, graph::ENCODE_CHUNK, 3, 24),
            (graph::DECODE_FIRST, graph::DECODE_CHUNK, 5, 32),
        ] {
            assert!(component.graph(chunk).is_none(), "{chunk} is staged");
            let stages = component.stages(chunk);
            assert_eq!(stages.len(), stage_count, "{chunk}");
            let first = component.graph(first).expect("first graph");
            let initialised = slots(&first.outputs, cache_out);
            assert_eq!(initialised.len(), slot_count, "{}", first.name);
            assert!(slots(&first.inputs, cache_in).is_empty());
            let mut taken = Vec::new();
            for (index, stage) in stages.iter().enumerate() {
                // Each stage takes and gives back exactly its own caches.
                let own = slots(&stage.inputs, cache_in);
                assert_eq!(own, slots(&stage.outputs, cache_out), "{}", stage.name);
                taken.extend(own);
                let features = skyreels_contract::vae::io::features;
                let takes_features =
                    index > 0 && stage.inputs.iter().any(|p| p.name == features(index - 1));
                let gives_features = stage.outputs.iter().any(|p| p.name == features(index));
                assert_eq!(takes_features, index > 0, "{}", stage.name);
                assert_eq!(gives_features, index + 1 < stages.len(), "{}", stage.name);
            }
            assert_eq!(taken, initialised, "{chunk}: every cache, once, in order");
        }
        if let Ok(keep) = std::env::var("SKYREELS_KEEP_TINY_VAE") {
            let _ = std::fs::remove_dir_all(&keep);
            std::fs::rename(out.keep(), &keep).expect("keep");
        }
    }
}
