//! DiT export: one checkpoint → `dit_embed.onnx`, `dit_blocks.onnx`, `dit_head.onnx`
//! (+ `dit_blocks_causal.onnx`), sharing one set of external weights.

mod blocks;
pub mod config;
mod embed;
mod head;
pub mod io;
pub mod layers;
mod teacache;

use std::collections::BTreeMap;
use std::path::Path;

use skyreels_contract::DitConfig;
use skyreels_contract::manifest::{DitComponent, GraphEntry};
use skyreels_graph::{DType, Model};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::layout::Layout;
use crate::weights::{WeightSink, WeightStore};
use layers::Layers;
use skyreels_contract::Attention;

/// How to export the DiT.
#[derive(Debug, Clone)]
pub struct DitExportOptions {
    /// Dtype of matmul weights and attention.
    pub compute: DType,
    /// Attention form.
    pub attention: Attention,
    /// Also write the block-causal `blocks` variant.
    pub causal_variant: bool,
    /// Reference matching-dtype weights in place (hard links) instead of copying them.
    pub link_weights: bool,
}

/// Summary of one exported graph, for reports.
#[derive(Debug, Clone)]
pub struct GraphReport {
    /// File name.
    pub file: String,
    /// Node count.
    pub nodes: usize,
    /// Op type histogram.
    pub ops: BTreeMap<String, usize>,
}

/// What an export produced.
pub struct DitExport {
    /// Manifest entry.
    pub component: DitComponent,
    /// Per-graph summaries.
    pub reports: Vec<GraphReport>,
    /// Bytes written by conversion / referenced in place.
    pub weight_bytes: (u64, u64),
}

fn entry(name: &str, file: &str, inputs: Vec<io::Port>, outputs: Vec<io::Port>) -> GraphEntry {
    GraphEntry {
        name: name.to_string(),
        file: file.to_string(),
        inputs: inputs.iter().map(io::Port::spec).collect(),
        outputs: outputs.iter().map(io::Port::spec).collect(),
    }
}

/// Where the DiT's weights are: `transformer/` of a diffusers snapshot (a folder with
/// `model_index.json`), otherwise `source` itself (an original-layout model folder or a file).
pub fn locate(source: &Path) -> std::path::PathBuf {
    let transformer = source.join("transformer");
    if source.join("model_index.json").is_file() && transformer.is_dir() {
        transformer
    } else {
        source.to_path_buf()
    }
}

/// Opens the DiT checkpoint at `source` and reads its architecture.
pub fn inspect(source: &Path) -> Result<(Checkpoint, Layout, DitConfig)> {
    let checkpoint = Checkpoint::open(source)?;
    let layout = Layout::detect(checkpoint.names());
    let dir = if source.is_file() {
        source.parent().unwrap_or(Path::new("."))
    } else {
        source
    };
    let json = config::read_config_json(dir)?;
    let store = WeightStore::new(&checkpoint, layout, WeightSink::new(dir, "unused", false));
    let config = config::dit_config(&store, &json, &dir.join("config.json"))?;
    Ok((checkpoint, layout, config))
}

/// Exports the DiT at `source` into `out_dir`.
pub fn export(source: &Path, out_dir: &Path, options: &DitExportOptions) -> Result<DitExport> {
    let (checkpoint, layout, config) = inspect(source)?;
    let sink = WeightSink::new(out_dir, "dit.weights", options.link_weights);
    let mut store = WeightStore::new(&checkpoint, layout, sink);
    let mut metadata = BTreeMap::new();
    metadata.insert("skyreels.component".to_string(), "dit".to_string());
    let mut reports = Vec::new();
    let mut graphs = Vec::new();
    let mut blocks_causal = None;

    type Builder = fn(&mut Layers<'_, '_>, &DitConfig, bool) -> Result<()>;
    let mut plan: Vec<(&str, &str, Builder, bool)> = vec![
        (
            "embed",
            "dit_embed.onnx",
            |l, c, _| embed::build(l, c),
            false,
        ),
        ("blocks", "dit_blocks.onnx", blocks::build, false),
        ("head", "dit_head.onnx", |l, c, _| head::build(l, c), false),
    ];
    if options.causal_variant {
        plan.push((
            "blocks_causal",
            "dit_blocks_causal.onnx",
            blocks::build,
            true,
        ));
    }
    for (name, file, build, causal) in plan {
        let mut layers = Layers::new(
            &format!("dit_{name}"),
            &mut store,
            options.compute,
            options.attention,
        );
        build(&mut layers, &config, causal)?;
        let model = Model::from_graph(layers.graph, &metadata);
        model.save(&out_dir.join(file))?;
        reports.push(GraphReport {
            file: file.to_string(),
            nodes: model.proto.graph.as_ref().map_or(0, |g| g.node.len()),
            ops: model.op_histogram(),
        });
        let graph_entry = match name {
            "embed" => entry(
                name,
                file,
                io::embed_inputs(&config),
                io::embed_outputs(&config),
            ),
            "head" => entry(
                name,
                file,
                io::head_inputs(&config),
                io::head_outputs(&config),
            ),
            _ => entry(
                name,
                file,
                io::blocks_inputs(&config, causal),
                io::blocks_outputs(&config),
            ),
        };
        if causal {
            blocks_causal = Some(graph_entry)
        } else {
            graphs.push(graph_entry)
        }
    }
    let mut teacache_graphs = Vec::new();
    for (name, kind) in [
        ("teacache_residual", teacache::TeaCacheGraph::Residual),
        ("teacache_reuse", teacache::TeaCacheGraph::Reuse),
    ] {
        let file = format!("dit_{name}.onnx");
        let mut graph = skyreels_graph::Graph::new(&format!("dit_{name}"));
        kind.build(&mut graph, &config)?;
        let model = Model::from_graph(graph, &metadata);
        model.save(&out_dir.join(&file))?;
        reports.push(GraphReport {
            file: file.clone(),
            nodes: model.proto.graph.as_ref().map_or(0, |g| g.node.len()),
            ops: model.op_histogram(),
        });
        let (inputs, outputs) = kind.ports(&config);
        teacache_graphs.push(entry(name, &file, inputs, outputs));
    }
    let architecture = format!(
        "{:?} dim {} layers {}",
        config.model_type, config.dim, config.num_layers
    );
    let sink = store.finish(&architecture)?;
    Ok(DitExport {
        component: DitComponent {
            config,
            graphs,
            blocks_causal,
            teacache: teacache_graphs,
        },
        reports,
        weight_bytes: (sink.written_bytes, sink.linked_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diffusers_snapshot_keeps_the_dit_in_transformer() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(locate(root.path()), root.path());
        fs_err::create_dir(root.path().join("transformer")).unwrap();
        assert_eq!(
            locate(root.path()),
            root.path(),
            "no model_index.json: not a snapshot"
        );
        fs_err::write(root.path().join("model_index.json"), "{}").unwrap();
        assert_eq!(locate(root.path()), root.path().join("transformer"));
    }
}
