//! The Wan causal 3D VAE: architecture, latent normalisation, and the chunk-graph contract.
//! Upstream: `WanVAE_` in <https://github.com/Wan-Video/Wan2.1/blob/main/wan/modules/vae.py>
//! (= diffusers `AutoencoderKLWan`); see SPEC.md §7.
//!
//! The encoder and decoder are exported as chunk graphs whose causal-convolution caches are
//! explicit inputs and outputs, so any `1 + 4k`-frame video runs with one engine and bounded memory:
//!
//! | graph | input | output |
//! |---|---|---|
//! | [`graph::ENCODE_FIRST`] | [`io::VIDEO`] `[batch, 3, 1, height*8, width*8]` | [`io::LATENTS`] `[batch, z_dim, 1, height, width]` + `cache_out.*` |
//! | [`graph::ENCODE_CHUNK`] | [`io::VIDEO`] `[batch, 3, 4, height*8, width*8]` + `cache_in.*` | [`io::LATENTS`] `[batch, z_dim, 1, height, width]` + `cache_out.*` |
//! | [`graph::DECODE_FIRST`] | [`io::LATENTS`] `[batch, z_dim, 1, height, width]` | [`io::VIDEO`] `[batch, 3, 1, height*8, width*8]` + `cache_out.*` |
//! | [`graph::DECODE_CHUNK`] | [`io::LATENTS`] `[batch, z_dim, 1, height, width]` + `cache_in.*` | [`io::VIDEO`] `[batch, 3, 4, height*8, width*8]` + `cache_out.*` |
//!
//! Encoding runs `encode_first` on frame 0, then `encode_chunk` on frames `1..5`, `5..9`, …;
//! decoding runs `decode_first` on latent frame 0, then `decode_chunk` on each later latent frame.
//! A chunk role may be exported as stages `encode_chunk.0`, `encode_chunk.1`, … run in order
//! ([`VaeComponent::stages`]): stage `k` passes [`io::features`]`(k)` to the next and takes and gives
//! only its own caches, the first takes the role's input and the last gives its output.
//! Every `cache_in.<slot>` input of a chunk graph is fed the `cache_out.<slot>` output of the
//! previous call (the first graph's outputs initialise them). Latents are normalised:
//! encode emits `(μ − mean) / std`, decode takes the same. Video is in `[-1, 1]`; the decode graphs
//! emit values before the final clamp (the runtime clamps).
//!
//! Symbolic dims `height*N` / `width*N` are N times the latent height / width.

use serde::{Deserialize, Serialize};

use crate::graph_entry::GraphEntry;

/// Graph roles inside [`VaeComponent::graphs`].
pub mod graph {
    /// Encoder on the first video frame (no temporal downsampling).
    pub const ENCODE_FIRST: &str = "encode_first";
    /// Encoder on each later group of [`super::VaeConfig::temporal_compression`] frames.
    pub const ENCODE_CHUNK: &str = "encode_chunk";
    /// Decoder on the first latent frame (no temporal upsampling; one video frame out).
    pub const DECODE_FIRST: &str = "decode_first";
    /// Decoder on each later latent frame (four video frames out).
    pub const DECODE_CHUNK: &str = "decode_chunk";
}

/// Port names of the VAE graphs.
pub mod io {
    /// Video `[batch, 3, frames, height*8, width*8]` in `[-1, 1]` (float32).
    pub const VIDEO: &str = "video";
    /// Normalised latents `[batch, z_dim, 1, height, width]` (float32).
    pub const LATENTS: &str = "latents";
    /// The activations stage `k` of a chunk call hands to stage `k + 1`: `features.<k>` (compute
    /// dtype, `[batch, channels, frames, height*N, width*N]`).
    pub fn features(stage: usize) -> String {
        format!("features.{stage}")
    }
    /// Prefix of cache inputs: `cache_in.<slot>`.
    pub const CACHE_IN_PREFIX: &str = "cache_in.";
    /// Prefix of cache outputs: `cache_out.<slot>`.
    pub const CACHE_OUT_PREFIX: &str = "cache_out.";

    /// The cache input fed by the cache output `output_name`, if it is one.
    pub fn cache_input_for(output_name: &str) -> Option<String> {
        output_name
            .strip_prefix(CACHE_OUT_PREFIX)
            .map(|slot| format!("{CACHE_IN_PREFIX}{slot}"))
    }
}

/// Wan 2.1 latent means per channel (`WanVAE` in upstream `vae.py`, diffusers `latents_mean`).
pub const WAN21_LATENTS_MEAN: [f32; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];

/// Wan 2.1 latent standard deviations per channel (diffusers `latents_std`).
pub const WAN21_LATENTS_STD: [f32; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

/// Architecture of a Wan 2.1 causal 3D VAE plus its latent normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Base channel width (96 for Wan 2.1).
    pub base_dim: usize,
    /// Latent channels (16); the encoder emits `2·z_dim` (μ ‖ log σ²), only μ is used.
    pub z_dim: usize,
    /// Channel multipliers per resolution level (`[1, 2, 4, 4]`).
    pub dim_mult: Vec<usize>,
    /// Residual blocks per encoder level (2); decoder levels have one more.
    pub num_res_blocks: usize,
    /// Whether each encoder downsampling also halves time (`[false, true, true]`); the decoder
    /// upsamples in the reverse order.
    pub temporal_downsample: Vec<bool>,
    /// Per-channel latent mean (`z_dim` values).
    pub latents_mean: Vec<f32>,
    /// Per-channel latent standard deviation (`z_dim` values).
    pub latents_std: Vec<f32>,
}

impl VaeConfig {
    /// The Wan 2.1 VAE as released (`Wan2.1_VAE.pth`).
    pub fn wan21() -> VaeConfig {
        VaeConfig {
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            temporal_downsample: vec![false, true, true],
            latents_mean: WAN21_LATENTS_MEAN.to_vec(),
            latents_std: WAN21_LATENTS_STD.to_vec(),
        }
    }

    /// Pixels per latent along height and width (8).
    pub fn spatial_compression(&self) -> usize {
        1 << self.dim_mult.len().saturating_sub(1)
    }

    /// Video frames per latent frame after the first (4); also the frames per `encode_chunk` call.
    pub fn temporal_compression(&self) -> usize {
        1 << self.temporal_downsample.iter().filter(|&&t| t).count()
    }

    /// Video frames for `latent_frames` latents: `1 + 4·(F − 1)`.
    pub fn video_frames(&self, latent_frames: usize) -> usize {
        if latent_frames == 0 {
            0
        } else {
            1 + self.temporal_compression() * (latent_frames - 1)
        }
    }

    /// Checks internal consistency; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.dim_mult.is_empty() {
            return Err("dim_mult is empty".into());
        }
        if self.temporal_downsample.len() + 1 != self.dim_mult.len() {
            return Err(format!(
                "temporal_downsample has {} entries but dim_mult {} (needs one fewer)",
                self.temporal_downsample.len(),
                self.dim_mult.len()
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return Err(format!(
                "latents_mean/latents_std have {}/{} values but z_dim is {}",
                self.latents_mean.len(),
                self.latents_std.len(),
                self.z_dim
            ));
        }
        if let Some(s) = self.latents_std.iter().find(|s| s.is_nan() || **s <= 0.0) {
            return Err(format!(
                "latents_std holds {s}; every value must be positive"
            ));
        }
        Ok(())
    }
}

/// The VAE component: chunk graphs whose causal-conv caches are explicit inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeComponent {
    /// Architecture and latent normalisation.
    pub config: VaeConfig,
    /// `encode_first`, `encode_chunk` (or its stages), `decode_first`, `decode_chunk` (or its
    /// stages); see the module docs.
    pub graphs: Vec<GraphEntry>,
}

impl VaeComponent {
    /// The graph with role `name` (see [`graph`]).
    pub fn graph(&self, name: &str) -> Option<&GraphEntry> {
        self.graphs.iter().find(|g| g.name == name)
    }

    /// The graphs that together run role `name`, in run order: the graph called `name`, or the
    /// stages `name.0`, `name.1`, … (see [`stage_name`]). Empty when there are none, or when the
    /// stage numbers have a gap.
    pub fn stages(&self, name: &str) -> Vec<&GraphEntry> {
        if let Some(whole) = self.graph(name) {
            return vec![whole];
        }
        (0..)
            .map_while(|index| self.graph(&stage_name(name, index)))
            .collect()
    }
}

/// The name of stage `index` of role `name` (`decode_chunk.3`).
pub fn stage_name(name: &str, index: usize) -> String {
    format!("{name}.{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan21_geometry() {
        let config = VaeConfig::wan21();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.spatial_compression(), 8);
        assert_eq!(config.temporal_compression(), 4);
        assert_eq!(config.video_frames(21), 81);
        assert_eq!(
            io::cache_input_for("cache_out.decoder.conv1").as_deref(),
            Some("cache_in.decoder.conv1")
        );
        assert_eq!(io::cache_input_for("video"), None);
    }
}
