//! What a user asks for: one video's settings as the CLI's flags, a server's JSON body or a line
//! of a batch file give them, with the same names everywhere (`num_frames` is `--num-frames`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use skyreels_contract::{Pipeline, Resolution};

use crate::pipeline::plan::Compat;

/// One video to generate. Every field but the prompt is optional: the plan fills the rest from the
/// engine's model variant (`configs/models/`), so a request names only what it changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// What the video shows.
    pub prompt: String,
    /// What it should not show (default: the variant's).
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Frame size `WIDTHxHEIGHT` (e.g. `960x544`); the alternative to `width` and `height`.
    #[serde(default)]
    pub size: Option<String>,
    /// Pixel width, multiple of 16.
    #[serde(default)]
    pub width: Option<usize>,
    /// Pixel height, multiple of 16.
    #[serde(default)]
    pub height: Option<usize>,
    /// Resolution class of the checkpoint (`540p` or `720p`): picks the variant's defaults,
    /// the frame size included.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// Pixel frames, 4k+1.
    #[serde(default)]
    pub num_frames: Option<usize>,
    /// Seed of the noise generator (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Inference steps.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1 disables the negative prompt).
    #[serde(default)]
    pub guidance: Option<f32>,
    /// Flow shift of the sigma schedule.
    #[serde(default)]
    pub shift: Option<f64>,
    /// Output frames per second (24 or 16 select the model's fps bucket).
    #[serde(default)]
    pub fps: Option<u32>,
    /// Asynchronous offset between frame blocks (0 = synchronous).
    #[serde(default)]
    pub ar_step: Option<usize>,
    /// Latent frames per block.
    #[serde(default)]
    pub causal_block_size: Option<usize>,
    /// Block-causal attention (upstream's `--causal_attention`).
    #[serde(default)]
    pub causal_attention: Option<bool>,
    /// Window length for long videos, pixel frames.
    #[serde(default)]
    pub base_num_frames: Option<usize>,
    /// Overlap between long-video windows, pixel frames (upstream uses 17).
    #[serde(default)]
    pub overlap_history: Option<usize>,
    /// Re-noise level of conditioning prefixes (upstream recommends 20).
    #[serde(default)]
    pub addnoise_condition: Option<f32>,
    /// TeaCache threshold (e.g. 0.2); off when absent.
    #[serde(default)]
    pub teacache: Option<f64>,
    /// TeaCache with retention steps (upstream `--use_ret_steps`).
    #[serde(default)]
    pub teacache_retention: Option<bool>,
    /// TeaCache polynomial, 5 numbers highest degree first (default: the variant's fit).
    #[serde(default)]
    pub teacache_coefficients: Option<Vec<f64>>,
    /// Which reference's choices to follow (default `upstream`).
    #[serde(default)]
    pub compat: Option<Compat>,
    /// Sampling loop (default: diffusion forcing for T2V-type models, synchronous for I2V).
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// First frame (PNG or JPEG): the image of image-to-video models, or the clean first latent of
    /// diffusion forcing.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Last frame for diffusion forcing (PNG or JPEG).
    #[serde(default)]
    pub last_image: Option<PathBuf>,
    /// Video to extend (diffusion forcing): `.mp4` or a safetensors tensor `video`.
    #[serde(default)]
    pub video: Option<PathBuf>,
    /// Pre-drawn noise: a safetensors file with tensors "0", "1", … in draw order.
    #[serde(default)]
    pub noise: Option<PathBuf>,
    /// Stream the DiT's layer weights from host memory, two layers on the GPU at a time.
    #[serde(default)]
    pub offload: Option<bool>,
    /// Device memory the DiT's weights may take (`24GiB`, `8G`); streamed when they do not fit.
    #[serde(default)]
    pub max_gpu_memory: Option<String>,
    /// Decode the video in overlapping spatial tiles (diffusers' `enable_tiling`: 256-pixel tiles
    /// every 192): the decoder's memory is a tile's; seams are blended as diffusers does.
    #[serde(default)]
    pub vae_tiling: Option<bool>,
}

/// Where a job's results go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    /// `.mp4` file, or a directory (a name without extension) for PNG frames.
    pub out: PathBuf,
    /// Also save the final latents (safetensors tensor `latents`).
    #[serde(default)]
    pub save_latents: Option<PathBuf>,
    /// Where a long job keeps finished windows so a killed run resumes (default `<out>.work` for
    /// multi-window videos).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// H.264 quantizer of MP4 output, 12..=51, lower is better and larger (default 16).
    #[serde(default)]
    pub h264_quantizer: Option<u8>,
}

/// `WIDTHxHEIGHT` as `(width, height)`, or an error naming the field and the fix.
pub fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let parsed = text
        .trim()
        .split_once(['x', 'X', '×'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    parsed.ok_or_else(|| {
        format!(
            "--size {text:?} is not WIDTHxHEIGHT\n  fix: e.g. --size 960x544 (540P landscape) or --size 1280x720 (720P)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_width_by_height() {
        assert_eq!(parse_size("960x544"), Ok((960, 544)));
        assert_eq!(parse_size(" 1280X720 "), Ok((1280, 720)));
        assert_eq!(parse_size("544×960"), Ok((544, 960)));
        for bad in ["960", "960x", "x544", "960*544", "-960x544"] {
            let error = parse_size(bad).unwrap_err();
            assert!(
                error.contains("WIDTHxHEIGHT") && error.contains("fix:"),
                "{error}"
            );
        }
    }

    #[test]
    fn requests_read_the_server_field_names_and_refuse_unknown_ones() {
        let request: GenerateRequest = serde_json::from_str(
            r#"{"prompt": "a fox", "size": "1280x720", "num_frames": 121, "seed": 3,
                "resolution": "720p", "pipeline": "diffusion_forcing", "compat": "diffusers",
                "teacache": 0.2, "teacache_retention": true}"#,
        )
        .expect("request");
        assert_eq!(
            request,
            GenerateRequest {
                prompt: "a fox".into(),
                size: Some("1280x720".into()),
                num_frames: Some(121),
                seed: Some(3),
                resolution: Some(Resolution::P720),
                pipeline: Some(Pipeline::DiffusionForcing),
                compat: Some(Compat::Diffusers),
                teacache: Some(0.2),
                teacache_retention: Some(true),
                ..GenerateRequest::default()
            }
        );
        let error = serde_json::from_str::<GenerateRequest>(r#"{"prompt": "a", "frames": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `frames`"), "{error}");
        let error = serde_json::from_str::<GenerateRequest>(r#"{"steps": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `prompt`"), "{error}");
    }
}
