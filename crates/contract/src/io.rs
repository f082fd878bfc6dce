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
/// Frames per attention block `[1]` (int64), input of the block-causal blocks graph.
pub const CAUSAL_BLOCK_SIZE: &str = "causal_block_size";

/// Patch-embedded video tokens `[B, L, D]` (embed → blocks).
pub const PATCH_TOKENS: &str = "patch_tokens";
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
}
