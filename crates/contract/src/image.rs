//! Manifest entry and graph signature of the CLIP ViT-H/14 image encoder
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/clip.py>, SPEC §9).

use serde::{Deserialize, Serialize};

use crate::graph_entry::GraphEntry;

/// Normalised pixels `[B, 3, image_size, image_size]` (float32), the preprocessing's output.
pub const PIXEL_VALUES: &str = "pixel_values";
/// Penultimate-block tokens `[B, 1 + (image_size/patch_size)², dim]` (float32): CLS first, no post-norm.
pub const IMAGE_HIDDEN_STATES: &str = "image_hidden_states";

/// Architecture of a CLIP vision tower (the ViT-H/14 values in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderConfig {
    /// Input side in pixels (224).
    pub image_size: usize,
    /// Patch side (14); tokens = 1 + (image_size / patch_size)².
    pub patch_size: usize,
    /// Width (1280).
    pub dim: usize,
    /// Attention heads (16).
    pub num_heads: usize,
    /// MLP inner width (5120).
    pub ffn_dim: usize,
    /// Blocks in the checkpoint (32); the graph runs all but the last (penultimate hidden states).
    pub num_layers: usize,
    /// LayerNorm epsilon (1e-5).
    pub eps: f64,
}

impl ImageEncoderConfig {
    /// Output tokens: the patches plus CLS (257).
    pub fn num_tokens(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }
}

/// How an RGB image becomes `pixel_values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageResizeMode {
    /// diffusers' `CLIPImageProcessor`: shortest side to `image_size` (PIL bicubic with
    /// antialiasing), then a centre crop to `image_size × image_size`.
    ShortestSideCenterCrop,
    /// Upstream SkyReels/Wan `encode_video`: squash to `image_size × image_size` with
    /// `F.interpolate(mode="bicubic", align_corners=False)` (no antialiasing, no crop).
    Squash,
}

/// Preprocessing parameters (from the snapshot's `image_processor/preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    /// Resize (and crop) rule.
    pub resize: ImageResizeMode,
    /// Per-channel mean after scaling to [0, 1] (CLIP: 0.48145466, 0.4578275, 0.40821073).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (CLIP: 0.26862954, 0.26130258, 0.27577711).
    pub std: [f32; 3],
}

/// The image encoder component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderComponent {
    /// Architecture.
    pub config: ImageEncoderConfig,
    /// How images are turned into `pixel_values`.
    pub preprocess: ImagePreprocess,
    /// Graphs in run order (one: `encoder`).
    pub graphs: Vec<GraphEntry>,
}
