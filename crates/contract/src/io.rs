//! Graph input/output names: a public contract, declared once here and used by the exporter,
//! the builder's profiles and the runtime's bindings.

/// Noisy latents `[B, C, F, H, W]` (float32).
pub const LATENTS: &str = "latents";
/// Per-frame timesteps `[B, F]` (float32, integer-valued in practice).
pub const TIMESTEPS: &str = "timesteps";
/// Text context `[B, text_len, text_dim]`.
pub const CONTEXT: &str = "context";
/// fps bucket index `[B]` (int64; 0 = 16 fps, 1 = 24 fps), only when the model has the fps embedding.
pub const FPS: &str = "fps";
/// CLIP image context `[B, 257, image_dim]` (I2V).
pub const IMAGE_CONTEXT: &str = "image_context";

/// Patch-embedded video tokens `[B, L, D]` (embed → blocks).
pub const PATCH_TOKENS: &str = "patch_tokens";
/// The residual stream entering one transformer layer `[B, L, D]` (float32; `block_qkv`, `block_out`).
pub const LAYER_TOKENS: &str = "layer_tokens";
/// The residual stream leaving one transformer layer `[B, L, D]` (float32; `block_out`).
pub const LAYER_OUTPUT: &str = "layer_output";
/// Self-attention queries after RMSNorm and RoPE `[B, L, D]` (compute dtype; `block_qkv` → `attention`).
pub const QUERY: &str = "query";
/// Self-attention keys after RMSNorm and RoPE `[B, L, D]` (compute dtype).
pub const KEY: &str = "key";
/// Self-attention values `[B, L, D]` (compute dtype).
pub const VALUE: &str = "value";
/// Attention output of the query tokens before this call `[B, P, D]` (compute dtype; empty at first).
pub const ATTENTION_PREFIX: &str = "attention_prefix";
/// One past the last query token of this attention call `[1]` (int64); keys `0..query_end` are seen.
pub const QUERY_END: &str = "query_end";
/// The `attention` graph over `heads` of the model's heads (Ulysses sequence parallel: a rank
/// attends over the whole sequence with `num_heads / degree` heads), `attention_heads_{heads}`.
pub fn sharded_attention_graph(heads: usize) -> String {
    format!("attention_heads_{heads}")
}
/// Self-attention output of query tokens `0..query_end` `[B, query_end, D]` (compute dtype).
pub const ATTENTION_OUTPUT: &str = "attention_output";
/// Tokens after all transformer blocks `[B, L, D]` (blocks → head).
pub const BLOCK_TOKENS: &str = "block_tokens";
/// What the blocks added, `block_tokens − patch_tokens` `[B, L, D]` (TeaCache's cached residual).
pub const TEACACHE_RESIDUAL: &str = "teacache_residual";
/// Per-frame time embedding `e` `[B, F, D]` (float32; head modulation, TeaCache probe).
pub const TIME_EMBEDDING: &str = "time_embedding";
/// Per-frame block modulation `e0` `[B, F, 6, D]` (float32; fps term included; TeaCache probe with retention).
pub const TIME_MODULATION: &str = "time_modulation";
/// Projected cross-attention context `[B, Lc, D]` (image tokens first for I2V).
pub const CONTEXT_TOKENS: &str = "context_tokens";
/// RoPE cosines `[L, head_dim]` (float32).
pub const ROPE_COS: &str = "rope_cos";
/// RoPE sines `[L, head_dim]` (float32).
pub const ROPE_SIN: &str = "rope_sin";
/// Flow-matching velocity `[B, 16, F, H, W]` (float32): the DiT's output.
pub const VELOCITY: &str = "velocity";

/// Symbolic axis names used in manifests.
pub mod axis {
    /// Batch (1, or 2 for classifier-free guidance).
    pub const BATCH: &str = "batch";
    /// Latent frames.
    pub const FRAMES: &str = "num_frames";
    /// Latent height.
    pub const HEIGHT: &str = "height";
    /// Latent width.
    pub const WIDTH: &str = "width";
    /// Video tokens `F·H/2·W/2`.
    pub const TOKENS: &str = "num_tokens";
    /// Context tokens.
    pub const CONTEXT_LEN: &str = "context_len";
    /// Query tokens already attended before an attention call (`attention_prefix`).
    pub const PREFIX_TOKENS: &str = "prefix_tokens";
    /// Query tokens attended after an attention call (`query_end`).
    pub const ATTENDED_TOKENS: &str = "attended_tokens";
}
