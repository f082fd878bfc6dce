//! Manifest entry and graph signature of the umT5-XXL text encoder
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/t5.py>, SPEC §8).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph_entry::GraphEntry;
use crate::manifest::ExternalTensor;

/// Token ids `[B, L]` (int64): the tokenizer's output, `</s>` (1) after the prompt, then pad (0).
pub const INPUT_IDS: &str = "input_ids";
/// Attention mask `[B, L]` (int64): 1 for prompt tokens and `</s>`, 0 for padding.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Encoder output `[B, L, dim]` (float32) after the final norm, with padded rows zeroed.
pub const TEXT_HIDDEN_STATES: &str = "text_hidden_states";

/// The one-graph encoder (`input_ids`, `attention_mask` → `text_hidden_states`).
pub const ENCODER_GRAPH: &str = "encoder";
/// Layer by layer, first: `input_ids`, `attention_mask` → [`TEXT_POSITION_BUCKETS`], [`TEXT_MASK_BIAS`].
pub const LAYERS_PREPARE_GRAPH: &str = "layers_prepare";
/// One encoder block, its weights bound as inputs: [`TEXT_LAYER_HIDDEN`] in, [`TEXT_LAYER_OUTPUT`] out.
pub const LAYER_GRAPH: &str = "layer";
/// Layer by layer, last: the final RMS norm, padded rows zeroed → `text_hidden_states`.
pub const LAYERS_FINAL_GRAPH: &str = "layers_final";
/// Hidden states entering an encoder block `[B, L, dim]` (float32); the layers' final graph reads
/// the last block's output under this name.
pub const TEXT_LAYER_HIDDEN: &str = "text_layer_hidden";
/// Hidden states leaving an encoder block (the next block's [`TEXT_LAYER_HIDDEN`]).
pub const TEXT_LAYER_OUTPUT: &str = "text_layer_output";
/// Relative-position bucket of every (query, key) pair `[L, L]` (int64).
pub const TEXT_POSITION_BUCKETS: &str = "text_position_buckets";
/// Additive attention bias of padded keys `[B, 1, 1, L]` (float32: 0 or `f32::MIN`).
pub const TEXT_MASK_BIAS: &str = "text_mask_bias";

/// Symbolic axis of the token sequence (512 in every pipeline, but the graph takes any length).
pub const AXIS_TOKENS: &str = "text_tokens";

/// Architecture of a umT5 encoder (the XXL values in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// Vocabulary rows of the token embedding (256384).
    pub vocab_size: usize,
    /// Model width `d_model` (4096).
    pub dim: usize,
    /// Attention heads (64).
    pub num_heads: usize,
    /// Per-head width `d_kv` (64); q/k/v project `dim → num_heads·head_dim`.
    pub head_dim: usize,
    /// Gated-GELU inner width `d_ff` (10240).
    pub ffn_dim: usize,
    /// Encoder blocks (24).
    pub num_layers: usize,
    /// Relative-position buckets, both directions together (32).
    pub num_buckets: usize,
    /// Distance from which all relative positions share the last bucket (128).
    pub max_distance: usize,
    /// RMS-norm epsilon (1e-6).
    pub eps: f64,
}

/// The text encoder component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderComponent {
    /// Architecture.
    pub config: TextEncoderConfig,
    /// [`ENCODER_GRAPH`], the whole encoder; engines exported since weight streaming also list
    /// [`LAYERS_PREPARE_GRAPH`], [`LAYER_GRAPH`] and [`LAYERS_FINAL_GRAPH`], the same encoder
    /// one block at a time, so that its weights can stay in host memory (`--offload`).
    pub graphs: Vec<GraphEntry>,
    /// Per encoder block, in order: its weights by the name of the [`LAYER_GRAPH`] input they
    /// bind to (the bytes the encoder graph's initializers use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<BTreeMap<String, ExternalTensor>>,
    /// The token embedding `[vocab_size, dim]` that the layer-by-layer encoder reads rows of on
    /// the host (its element type is the encoder's compute dtype, given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_embedding: Option<TokenEmbedding>,
    /// `tokenizer.json`, relative to the engine directory.
    pub tokenizer: String,
    /// Tokens per prompt after padding / truncation, `</s>` included (512).
    pub max_length: usize,
}

/// Where the token embedding's bytes are, and their element type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEmbedding {
    /// `float32`, `float16` or `bfloat16`.
    pub dtype: String,
    /// The bytes, row-major `[vocab_size, dim]`.
    pub location: ExternalTensor,
}

impl TextEncoderComponent {
    /// True when the engine has the layer-by-layer graphs, their weights and the embedding.
    pub fn has_layer_graphs(&self) -> bool {
        let listed = |name: &str| self.graphs.iter().any(|g| g.name == name);
        listed(LAYERS_PREPARE_GRAPH)
            && listed(LAYER_GRAPH)
            && listed(LAYERS_FINAL_GRAPH)
            && !self.layers.is_empty()
            && self.token_embedding.is_some()
    }
}
