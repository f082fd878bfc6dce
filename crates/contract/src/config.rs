//! Architecture configs. The DiT fields follow upstream `WanModel`'s `config.json`
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/transformer.py>).

use serde::{Deserialize, Serialize};

/// Which conditioning the DiT takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Text-to-video and diffusion forcing: 16 input channels, text context only.
    T2v,
    /// Image-to-video: 36 input channels (noise, mask, image latents) plus CLIP image context.
    I2v,
}

/// Architecture of a SkyReels-V2 / Wan2.1 DiT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// `t2v` or `i2v`.
    pub model_type: ModelType,
    /// Latent channels in (16, or 36 for I2V).
    pub in_dim: usize,
    /// Latent channels out (16).
    pub out_dim: usize,
    /// Hidden width `D` (1536 for 1.3B, 5120 for 14B).
    pub dim: usize,
    /// FFN inner width (8960 / 13824).
    pub ffn_dim: usize,
    /// Attention heads (12 / 40); head dim = dim / num_heads.
    pub num_heads: usize,
    /// Transformer blocks (30 / 40).
    pub num_layers: usize,
    /// Sinusoidal timestep width (256).
    pub freq_dim: usize,
    /// Text encoder width (4096 for umT5-XXL).
    pub text_dim: usize,
    /// Text context length (512).
    pub text_len: usize,
    /// CLIP image feature width (1280), I2V only.
    pub image_dim: Option<usize>,
    /// CLIP image tokens (257), I2V only.
    pub image_len: Option<usize>,
    /// Norm epsilon (1e-6).
    pub eps: f64,
    /// Whether the model has the fps embedding (DF-1.3B only).
    pub inject_sample_info: bool,
}

impl DitConfig {
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// RoPE widths (in real dims) of the frame, height and width axes: `[t, h, w]`.
    pub fn rope_split(&self) -> [usize; 3] {
        let pairs = self.head_dim() / 2;
        let h = pairs / 3;
        [2 * (pairs - 2 * h), 2 * h, 2 * h]
    }

    /// Checks internal consistency; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head dim {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        match self.model_type {
            ModelType::I2v if self.image_dim.is_none() => {
                Err("an i2v model needs image_dim".into())
            }
            ModelType::T2v if self.image_dim.is_some() => {
                Err("a t2v model has no image_dim".into())
            }
            _ => Ok(()),
        }
    }
}
