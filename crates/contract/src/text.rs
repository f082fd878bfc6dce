//! Manifest entry and graph signature of the umT5-XXL text encoder
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/t5.py>, SPEC §8).

use serde::{Deserialize, Serialize};

use crate::graph_entry::GraphEntry;

/// Token ids `[B, L]` (int64): the tokenizer's output, `</s>` (1) after the prompt, then pad (0).
pub const INPUT_IDS: &str = "input_ids";
/// Attention mask `[B, L]` (int64): 1 for prompt tokens and `</s>`, 0 for padding.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Encoder output `[B, L, dim]` (float32) after the final norm, with padded rows zeroed.
pub const TEXT_HIDDEN_STATES: &str = "text_hidden_states";

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
    /// Graphs in run order (one: `encoder`).
    pub graphs: Vec<GraphEntry>,
    /// `tokenizer.json`, relative to the engine directory.
    pub tokenizer: String,
    /// Tokens per prompt after padding / truncation, `</s>` included (512).
    pub max_length: usize,
}
