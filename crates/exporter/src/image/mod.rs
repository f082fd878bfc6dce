//! CLIP ViT-H/14 image-encoder export (SPEC §9): the vision tower of a Wan `visual.*` checkpoint
//! or an HF `CLIPVisionModel(WithProjection)` (diffusers snapshots' `image_encoder/`) →
//! `image_encoder.onnx`, penultimate-block hidden states.

pub mod config;
pub mod graph;

use std::collections::BTreeMap;
use std::path::Path;

use skyreels_contract::image::{
    ImageEncoderComponent, ImageEncoderConfig, ImagePreprocess, ImageResizeMode,
};
use skyreels_contract::manifest::GraphEntry;
use skyreels_graph::{DType, Model};

use crate::checkpoint::Checkpoint;
use crate::dit::GraphReport;
use crate::dit::layers::Layers;
use crate::error::{ExportError, Result};
use crate::weights::{WeightSink, WeightStore};
use config::{ImageLayout, UNUSED};
use skyreels_contract::Attention;

/// Graph file written into the engine directory.
pub const GRAPH_FILE: &str = "image_encoder.onnx";
/// OpenAI CLIP normalisation mean (also LAION ViT-H/14's and upstream `clip.py`'s).
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP normalisation standard deviation.
#[expect(
    clippy::excessive_precision,
    reason = "the digits as the reference configs spell them"
)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How to export the image encoder.
#[derive(Debug, Clone)]
pub struct ImageExportOptions {
    /// Dtype of the patch kernel and matmul weights (norms and embeddings stay float32).
    pub compute: DType,
    /// Attention form.
    pub attention: Attention,
    /// Reference matching-dtype weights in place (hard links) instead of copying them.
    pub link_weights: bool,
    /// Preprocessing recorded in the manifest for the runtime.
    pub preprocess: ImagePreprocess,
}

/// What an export produced.
pub struct ImageExport {
    /// Manifest entry.
    pub component: ImageEncoderComponent,
    /// Graph summary.
    pub report: GraphReport,
    /// Bytes written by conversion / referenced in place.
    pub weight_bytes: (u64, u64),
}

/// diffusers' preprocessing (`CLIPImageProcessor`), read from a snapshot's
/// `image_processor/preprocessor_config.json` when given; CLIP defaults otherwise.
pub fn preprocess_from(config: Option<&Path>) -> Result<ImagePreprocess> {
    let mut preprocess = ImagePreprocess {
        resize: ImageResizeMode::ShortestSideCenterCrop,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    };
    let Some(path) = config else {
        return Ok(preprocess);
    };
    let bad = |reason: String| ExportError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = skyreels_contract::files::read_bounded_to_string(
        path,
        "image preprocessor config",
        skyreels_contract::files::limit::JSON_CONFIG,
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let triple = |key: &str| -> Result<Option<[f32; 3]>> {
        match json.get(key).and_then(|v| v.as_array()) {
            None => Ok(None),
            Some(values) if values.len() == 3 => {
                let mut out = [0.0; 3];
                for (o, v) in out.iter_mut().zip(values) {
                    *o = v
                        .as_f64()
                        .ok_or_else(|| bad(format!("`{key}` must hold numbers")))?
                        as f32;
                }
                Ok(Some(out))
            }
            Some(_) => Err(bad(format!("`{key}` must hold 3 numbers"))),
        }
    };
    if let Some(mean) = triple("image_mean")? {
        preprocess.mean = mean;
    }
    if let Some(std) = triple("image_std")? {
        preprocess.std = std;
    }
    if json
        .get("resample")
        .and_then(|v| v.as_u64())
        .is_some_and(|r| r != 3)
    {
        return Err(bad(
            "only bicubic resampling (`resample: 3`) is supported".into()
        ));
    }
    if json.get("do_center_crop").and_then(|v| v.as_bool()) == Some(false) {
        return Err(bad("`do_center_crop: false` is not supported".into()));
    }
    Ok(preprocess)
}

/// Opens the checkpoint at `source` and reads its layout and architecture.
pub fn inspect(source: &Path) -> Result<(Checkpoint, ImageLayout, ImageEncoderConfig)> {
    let checkpoint = Checkpoint::open(source)?;
    let layout = ImageLayout::detect(checkpoint.names());
    let dir = if source.is_file() {
        source.parent().unwrap_or(Path::new("."))
    } else {
        source
    };
    // Beside an original-layout `.pth` the folder's config.json is the DiT's, not the encoder's.
    let json = crate::dit::config::read_config_json(dir)?;
    let json = if source.is_file() && crate::text::is_dit_config(&json) {
        serde_json::json!({})
    } else {
        json
    };
    let json = json.get("vision_config").cloned().unwrap_or(json);
    let store = WeightStore::with_names(
        &checkpoint,
        |n| layout.canonical(n),
        WeightSink::new(dir, "unused", false),
    );
    let config = config::image_config(&store, &json, &dir.join("config.json"))?;
    Ok((checkpoint, layout, config))
}

/// Exports the vision tower at `source` into `out_dir`.
pub fn export(source: &Path, out_dir: &Path, options: &ImageExportOptions) -> Result<ImageExport> {
    let (checkpoint, layout, config) = inspect(source)?;
    let sink = WeightSink::new(out_dir, "image_encoder.weights", options.link_weights);
    let mut store = WeightStore::with_names(&checkpoint, |n| layout.canonical(n), sink);
    let last = format!("encoder.layers.{}.", config.num_layers - 1);
    let skipped: Vec<String> = store
        .names()
        .filter(|n| n.starts_with(UNUSED) || n.starts_with(&last))
        .map(str::to_string)
        .collect();
    for name in &skipped {
        store.skip(name)?;
    }
    let mut layers = Layers::new(
        "image_encoder",
        &mut store,
        options.compute,
        options.attention,
    );
    graph::build(&mut layers, &config)?;
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "skyreels.component".to_string(),
        "image_encoder".to_string(),
    );
    let model = Model::from_graph(layers.graph, &metadata);
    model.save(&out_dir.join(GRAPH_FILE))?;
    let report = GraphReport {
        file: GRAPH_FILE.to_string(),
        nodes: model.proto.graph.as_ref().map_or(0, |g| g.node.len()),
        ops: model.op_histogram(),
    };
    let architecture = format!(
        "CLIP vision tower dim {} layers {}",
        config.dim, config.num_layers
    );
    let sink = store.finish(&architecture)?;
    let entry = GraphEntry {
        name: "encoder".to_string(),
        file: GRAPH_FILE.to_string(),
        inputs: graph::inputs(&config).iter().map(|p| p.spec()).collect(),
        outputs: graph::outputs(&config).iter().map(|p| p.spec()).collect(),
    };
    Ok(ImageExport {
        component: ImageEncoderComponent {
            config,
            preprocess: options.preprocess.clone(),
            graphs: vec![entry],
        },
        report,
        weight_bytes: (sink.written_bytes, sink.linked_bytes),
    })
}

/// Where a model folder keeps its CLIP image encoder, as [`locate`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// The encoder checkpoint (directory or `.safetensors` file).
    pub checkpoint: std::path::PathBuf,
    /// `image_processor/preprocessor_config.json`, when the snapshot has one.
    pub preprocessor_config: Option<std::path::PathBuf>,
}

/// Finds the image encoder belonging to `source`: in `source` or its parent, a diffusers
/// snapshot's `image_encoder/` (with `image_processor/`), or the original layout's
/// `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth` (or a `.safetensors` conversion).
pub fn locate(source: &Path) -> Option<ImageSource> {
    let roots = [Some(source), source.parent()];
    roots
        .into_iter()
        .flatten()
        .filter(|r| r.is_dir())
        .find_map(|root| {
            let diffusers = root.join("image_encoder");
            if diffusers.is_dir() {
                let config = root
                    .join("image_processor")
                    .join("preprocessor_config.json");
                return Some(ImageSource {
                    checkpoint: diffusers,
                    preprocessor_config: config.is_file().then_some(config),
                });
            }
            ["safetensors", "pth"]
                .iter()
                .map(|extension| {
                    root.join(format!(
                        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.{extension}"
                    ))
                })
                .find(|original| original.is_file())
                .map(|original| ImageSource {
                    checkpoint: original,
                    preprocessor_config: None,
                })
        })
}
