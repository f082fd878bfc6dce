//! DiT export: one checkpoint → `dit_embed.onnx`, the block graphs `dit_block_qkv.onnx`,
//! `dit_attention.onnx`, `dit_block_out.onnx` (one graph for every layer; each layer's weights are
//! recorded in the manifest and bound at run time), `dit_head.onnx`, and TeaCache's two graphs.
//! For Ulysses sequence parallel, `dit_attention_heads_{h}.onnx` is the attention graph over `h`
//! of the heads, for every `h = num_heads / degree` (degree > 1 dividing the heads).

mod blocks;
pub mod config;
mod embed;
mod head;
pub mod io;
/// The layer helpers, here for the paths that name them under `dit`.
pub use crate::layers;
mod teacache;

use std::collections::BTreeMap;
use std::path::Path;

use skyreels_contract::manifest::{DitComponent, ExternalTensor, GraphEntry};
use skyreels_contract::{Attention, DitConfig, TensorSpec};
use skyreels_graph::{DType, Model};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::layers::Layers;
use crate::layout::Layout;
use crate::prefix::Prefix;
use crate::weights::{WeightSink, WeightStore};

/// How to export the DiT.
#[derive(Debug, Clone)]
pub struct DitExportOptions {
    /// Dtype of matmul weights and attention.
    pub compute: DType,
    /// Attention form.
    pub attention: Attention,
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

/// A manifest entry: the ports, then the weight inputs (block graphs).
pub(crate) fn entry(
    name: &str,
    file: &str,
    inputs: Vec<io::Port>,
    outputs: Vec<io::Port>,
    weights: Vec<TensorSpec>,
) -> GraphEntry {
    GraphEntry {
        name: name.to_string(),
        file: file.to_string(),
        inputs: inputs.iter().map(io::Port::spec).chain(weights).collect(),
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

/// Saves `graph` as `out_dir/file` and reports it.
pub(crate) fn save(
    graph: skyreels_graph::Graph,
    metadata: &BTreeMap<String, String>,
    out_dir: &Path,
    file: &str,
) -> Result<GraphReport> {
    let model = Model::from_graph(graph, metadata);
    model.save(&out_dir.join(file))?;
    Ok(GraphReport {
        file: file.to_string(),
        nodes: model.proto.graph.as_ref().map_or(0, |g| g.node.len()),
        ops: model.op_histogram(),
    })
}

/// A block graph built once per layer (see [`crate::layers::export_layer_graph`]).
fn export_block_graph(
    name: &str,
    build: BlockBuilder,
    store: &mut WeightStore<'_>,
    config: &DitConfig,
    options: &DitExportOptions,
    layers: &mut [BTreeMap<String, ExternalTensor>],
) -> Result<(skyreels_graph::Graph, Vec<TensorSpec>)> {
    crate::layers::export_layer_graph(
        &format!("dit_{name}"),
        store,
        options.compute,
        options.attention,
        layers,
        |builder, block| build(builder, config, block),
    )
}

/// Head counts of the attention graphs for Ulysses sequence parallel: `num_heads / degree` for
/// every degree above 1 that divides the heads (each rank attends over the full sequence with
/// its share of the heads).
fn sharded_head_counts(num_heads: usize) -> Vec<usize> {
    (2..=num_heads)
        .filter(|degree| num_heads.is_multiple_of(*degree))
        .map(|degree| num_heads / degree)
        .collect()
}

/// Names the layer in an error raised while building its graphs.
type BlockBuilder = fn(&mut Layers<'_, '_>, &DitConfig, &Prefix) -> Result<()>;

/// Exports the DiT at `source` into `out_dir`.
pub fn export(source: &Path, out_dir: &Path, options: &DitExportOptions) -> Result<DitExport> {
    let (checkpoint, layout, config) = inspect(source)?;
    let sink = WeightSink::new(out_dir, "dit.weights", options.link_weights);
    let mut store = WeightStore::new(&checkpoint, layout, sink);
    let mut metadata = BTreeMap::new();
    metadata.insert("skyreels.component".to_string(), "dit".to_string());
    let mut reports = Vec::new();
    let mut graphs = Vec::new();
    let compute = options.compute;

    let mut layers = Layers::new("dit_embed", &mut store, compute, options.attention);
    embed::build(&mut layers, &config)?;
    reports.push(save(layers.graph, &metadata, out_dir, "dit_embed.onnx")?);
    graphs.push(entry(
        "embed",
        "dit_embed.onnx",
        io::embed_inputs(&config),
        io::embed_outputs(&config),
        Vec::new(),
    ));

    let mut layer_weights = vec![BTreeMap::new(); config.num_layers];
    let (graph, weights) = export_block_graph(
        "block_qkv",
        blocks::build_qkv,
        &mut store,
        &config,
        options,
        &mut layer_weights,
    )?;
    reports.push(save(graph, &metadata, out_dir, "dit_block_qkv.onnx")?);
    graphs.push(entry(
        "block_qkv",
        "dit_block_qkv.onnx",
        io::block_qkv_inputs(&config),
        io::block_qkv_outputs(&config, compute),
        weights,
    ));

    let mut layers = Layers::new("dit_attention", &mut store, compute, options.attention);
    blocks::build_attention(&mut layers, &config)?;
    reports.push(save(
        layers.graph,
        &metadata,
        out_dir,
        "dit_attention.onnx",
    )?);
    graphs.push(entry(
        "attention",
        "dit_attention.onnx",
        io::attention_inputs(&config, compute),
        io::attention_outputs(&config, compute),
        Vec::new(),
    ));

    for heads in sharded_head_counts(config.num_heads) {
        let sharded = DitConfig {
            num_heads: heads,
            dim: heads * config.head_dim(),
            ..config.clone()
        };
        let name = skyreels_contract::io::sharded_attention_graph(heads);
        let file = format!("dit_{name}.onnx");
        let mut layers = Layers::new(
            &format!("dit_{name}"),
            &mut store,
            compute,
            options.attention,
        );
        blocks::build_attention(&mut layers, &sharded)?;
        reports.push(save(layers.graph, &metadata, out_dir, &file)?);
        graphs.push(entry(
            &name,
            &file,
            io::attention_inputs(&sharded, compute),
            io::attention_outputs(&sharded, compute),
            Vec::new(),
        ));
    }

    let (graph, weights) = export_block_graph(
        "block_out",
        blocks::build_out,
        &mut store,
        &config,
        options,
        &mut layer_weights,
    )?;
    reports.push(save(graph, &metadata, out_dir, "dit_block_out.onnx")?);
    graphs.push(entry(
        "block_out",
        "dit_block_out.onnx",
        io::block_out_inputs(&config, compute),
        io::block_out_outputs(&config),
        weights,
    ));

    let mut layers = Layers::new("dit_head", &mut store, compute, options.attention);
    head::build(&mut layers, &config)?;
    reports.push(save(layers.graph, &metadata, out_dir, "dit_head.onnx")?);
    graphs.push(entry(
        "head",
        "dit_head.onnx",
        io::head_inputs(&config),
        io::head_outputs(&config),
        Vec::new(),
    ));

    let mut teacache_graphs = Vec::new();
    for (name, kind) in [
        ("teacache_residual", teacache::TeaCacheGraph::Residual),
        ("teacache_reuse", teacache::TeaCacheGraph::Reuse),
    ] {
        let file = format!("dit_{name}.onnx");
        let mut graph = skyreels_graph::Graph::new(&format!("dit_{name}"));
        kind.build(&mut graph, &config)?;
        reports.push(save(graph, &metadata, out_dir, &file)?);
        let (inputs, outputs) = kind.ports(&config);
        teacache_graphs.push(entry(name, &file, inputs, outputs, Vec::new()));
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
            layers: layer_weights,
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
