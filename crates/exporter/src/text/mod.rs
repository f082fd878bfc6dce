//! umT5-XXL encoder export (SPEC §8): one checkpoint (Wan names or HF `UMT5EncoderModel`) →
//! `text_encoder.onnx` with external weights, plus the tokenizer's `tokenizer.json` copied next to it.
//! The same encoder is also written in pieces for streaming its weights (`--offload`):
//! `text_encoder_layers_prepare.onnx`, `text_encoder_layer.onnx` (one graph for every block, each
//! block's weights recorded in the manifest) and `text_encoder_layers_final.onnx`. They reference
//! the bytes the whole graph's initializers use, so the engine's weights are not written twice.

pub mod config;
pub mod graph;
pub mod tiny;

use std::collections::BTreeMap;
use std::path::Path;

use skyreels_contract::manifest::ExternalTensor;
use skyreels_contract::text::{
    ENCODER_GRAPH, LAYER_GRAPH, LAYERS_FINAL_GRAPH, LAYERS_PREPARE_GRAPH, TextEncoderComponent,
    TextEncoderConfig, TokenEmbedding,
};
use skyreels_graph::DType;

use crate::checkpoint::Checkpoint;
use crate::dit::layers::Layers;
use crate::dit::{GraphReport, entry, save};
use crate::error::{ExportError, Result};
use crate::weights::{WeightSink, WeightStore};
use config::TextLayout;
use skyreels_contract::Attention;

/// Graph file written into the engine directory.
pub const GRAPH_FILE: &str = "text_encoder.onnx";
/// The layer-by-layer graphs' files.
pub const PREPARE_FILE: &str = "text_encoder_layers_prepare.onnx";
/// One encoder block, weights as inputs.
pub const LAYER_FILE: &str = "text_encoder_layer.onnx";
/// Final norm and padding.
pub const FINAL_FILE: &str = "text_encoder_layers_final.onnx";
/// Tokenizer file written into the engine directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Tokens per prompt in every SkyReels pipeline (`text_len`), `</s>` included.
pub const MAX_LENGTH: usize = 512;

/// How to export the text encoder.
#[derive(Debug, Clone)]
pub struct TextExportOptions {
    /// Dtype of the token embedding and matmul weights (norms, bias tables and attention stay float32).
    pub compute: DType,
    /// Attention form (`MatMul` everywhere, `ContribMha` for ONNX Runtime CUDA).
    pub attention: Attention,
    /// Reference matching-dtype weights in place (hard links) instead of copying them.
    pub link_weights: bool,
}

/// What an export produced.
pub struct TextExport {
    /// Manifest entry.
    pub component: TextEncoderComponent,
    /// Graph summaries: the whole encoder first, then the layer-by-layer graphs.
    pub reports: Vec<GraphReport>,
    /// Bytes written by conversion / referenced in place.
    pub weight_bytes: (u64, u64),
}

/// Opens the checkpoint at `source` (a `.safetensors` file or a directory such as a diffusers
/// snapshot's `text_encoder/`) and reads its layout and architecture.
pub fn inspect(source: &Path) -> Result<(Checkpoint, TextLayout, TextEncoderConfig)> {
    let checkpoint = Checkpoint::open(source)?;
    let layout = TextLayout::detect(checkpoint.names());
    let dir = if source.is_file() {
        source.parent().unwrap_or(Path::new("."))
    } else {
        source
    };
    // Beside an original-layout `.pth` the folder's config.json is the DiT's, not the encoder's.
    let json = crate::dit::config::read_config_json(dir)?;
    let json = if source.is_file() && is_dit_config(&json) {
        serde_json::json!({})
    } else {
        json
    };
    let store = WeightStore::with_names(
        &checkpoint,
        |n| layout.canonical(n),
        WeightSink::new(dir, "unused", false),
    );
    let config = config::text_config(&store, &json, &dir.join("config.json"))?;
    Ok((checkpoint, layout, config))
}

/// True when `json` is an original-layout DiT config (`model_type` t2v/i2v, with `dim` and
/// `in_dim`), as the `config.json` of a SkyReels/Wan model folder is.
pub(crate) fn is_dit_config(json: &serde_json::Value) -> bool {
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    matches!(model_type, "t2v" | "i2v") && json.get("dim").is_some() && json.get("in_dim").is_some()
}

/// Copies `tokenizer` (a `tokenizer.json`, or a directory holding one) into `out_dir`.
pub fn copy_tokenizer(tokenizer: &Path, out_dir: &Path) -> Result<String> {
    let file = if tokenizer.is_dir() {
        tokenizer.join(TOKENIZER_FILE)
    } else {
        tokenizer.to_path_buf()
    };
    if !file.is_file() {
        return Err(ExportError::NoCheckpoint {
            path: file,
            reason: "no tokenizer.json (a sentencepiece `spiece.model` alone cannot be read)\n  fix: add google/umt5-xxl's tokenizer.json".into(),
        });
    }
    let bytes = skyreels_contract::files::read_bounded(
        &file,
        "tokenizer",
        skyreels_contract::files::limit::TOKENIZER,
    )?;
    fs_err::write(out_dir.join(TOKENIZER_FILE), bytes)?;
    Ok(TOKENIZER_FILE.to_string())
}

/// Exports the encoder at `source` and the tokenizer at `tokenizer` into `out_dir`.
pub fn export(
    source: &Path,
    tokenizer: &Path,
    out_dir: &Path,
    options: &TextExportOptions,
) -> Result<TextExport> {
    let (checkpoint, layout, config) = inspect(source)?;
    let sink = WeightSink::new(out_dir, "text_encoder.weights", options.link_weights);
    let mut store = WeightStore::with_names(&checkpoint, |n| layout.canonical(n), sink);
    let mut layers = Layers::new(
        "text_encoder",
        &mut store,
        options.compute,
        options.attention,
    );
    graph::build(&mut layers, &config)?;
    let mut metadata = BTreeMap::new();
    metadata.insert("skyreels.component".to_string(), "text_encoder".to_string());
    let mut reports = vec![save(layers.graph, &metadata, out_dir, GRAPH_FILE)?];
    let mut graphs = vec![entry(
        ENCODER_GRAPH,
        GRAPH_FILE,
        graph::inputs(),
        graph::outputs(&config),
        Vec::new(),
    )];

    let mut layers = Layers::new(
        "text_encoder_layers_prepare",
        &mut store,
        options.compute,
        options.attention,
    );
    graph::build_prepare(&mut layers, &config)?;
    reports.push(save(layers.graph, &metadata, out_dir, PREPARE_FILE)?);
    graphs.push(entry(
        LAYERS_PREPARE_GRAPH,
        PREPARE_FILE,
        graph::inputs(),
        graph::prepare_outputs(),
        Vec::new(),
    ));
    let mut layer_weights = vec![BTreeMap::new(); config.num_layers];
    let (layer_graph, weights) = crate::layers::export_layer_graph(
        "text_encoder_layer",
        &mut store,
        options.compute,
        options.attention,
        &mut layer_weights,
        |builder, block| graph::build_layer(builder, &config, block),
    )?;
    reports.push(save(layer_graph, &metadata, out_dir, LAYER_FILE)?);
    graphs.push(entry(
        LAYER_GRAPH,
        LAYER_FILE,
        graph::layer_inputs(&config),
        graph::layer_outputs(&config),
        weights,
    ));
    let mut layers = Layers::new(
        "text_encoder_layers_final",
        &mut store,
        options.compute,
        options.attention,
    );
    graph::build_final(&mut layers, &config)?;
    reports.push(save(layers.graph, &metadata, out_dir, FINAL_FILE)?);
    graphs.push(entry(
        LAYERS_FINAL_GRAPH,
        FINAL_FILE,
        graph::final_inputs(&config),
        graph::outputs(&config),
        Vec::new(),
    ));
    // The table the whole graph gathers from (placed once: the same bytes).
    let table = [config.vocab_size, config.dim];
    let embedding = store.place(
        "token_embedding.weight",
        &table,
        &table.map(|d| d as i64),
        options.compute,
    )?;

    let architecture = format!(
        "umT5 encoder dim {} layers {}",
        config.dim, config.num_layers
    );
    let sink = store.finish(&architecture)?;
    let tokenizer = copy_tokenizer(tokenizer, out_dir)?;
    Ok(TextExport {
        component: TextEncoderComponent {
            config,
            graphs,
            layers: layer_weights,
            token_embedding: Some(TokenEmbedding {
                dtype: options.compute.name().to_string(),
                location: ExternalTensor {
                    file: embedding.location,
                    offset: embedding.offset,
                    length: embedding.length,
                },
            }),
            tokenizer,
            max_length: MAX_LENGTH,
        },
        reports,
        weight_bytes: (sink.written_bytes, sink.linked_bytes),
    })
}

/// Where a model folder keeps its text encoder, as [`locate`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSource {
    /// The encoder checkpoint (directory or `.safetensors` file).
    pub checkpoint: std::path::PathBuf,
    /// The tokenizer (directory holding `tokenizer.json`, or the file).
    pub tokenizer: std::path::PathBuf,
}

/// Finds the text encoder belonging to `source` (the checkpoint given to `skyreels-export`):
/// in `source` or its parent, a diffusers snapshot's `text_encoder/` + `tokenizer/`, or the
/// original layout's `models_t5_umt5-xxl-enc-bf16.pth` (or a `.safetensors` conversion of it) +
/// `google/umt5-xxl/`.
pub fn locate(source: &Path) -> Option<TextSource> {
    let roots = [Some(source), source.parent()];
    roots
        .into_iter()
        .flatten()
        .filter(|r| r.is_dir())
        .find_map(|root| {
            let diffusers = (root.join("text_encoder"), root.join("tokenizer"));
            let tokenizer = root.join("google").join("umt5-xxl");
            let converted = (
                root.join("models_t5_umt5-xxl-enc-bf16.safetensors"),
                tokenizer.clone(),
            );
            let original = (root.join("models_t5_umt5-xxl-enc-bf16.pth"), tokenizer);
            [diffusers, converted, original]
                .into_iter()
                .find(|(checkpoint, tokenizer)| {
                    checkpoint.exists() && tokenizer.join(TOKENIZER_FILE).is_file()
                })
                .map(|(checkpoint, tokenizer)| TextSource {
                    checkpoint,
                    tokenizer,
                })
        })
}
