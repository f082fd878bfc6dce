//! The user's request turned into a validated plan before any model is loaded: every check that
//! can fail on input happens here, with a message naming the flag and the fix.

use super::segments::{Segment, plan_extension_segments, plan_segments};
use crate::error::{Result, RuntimeError};

/// Which reference's choices to reproduce (SPEC.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// SkyReels-V2 upstream: σ from 0.999, long videos re-encode decoded overlap pixels, block-causal
    /// attention only with `--causal-attention`.
    Upstream,
    /// diffusers 0.42.1: σ from 1 (−1e-6), long videos reuse overlap latents, block-causal attention
    /// whenever `causal_block_size > 1`.
    Diffusers,
}

/// What the first window starts from besides noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Noise only (text-to-video).
    Noise,
    /// A first image: one clean latent frame (diffusion forcing with `--image`).
    Image,
    /// An existing video of this many pixel frames, extended (`--video`).
    Video {
        /// Pixel frames of the input video.
        frames: usize,
    },
}

/// Sampling settings as given by the user.
#[derive(Debug, Clone)]
pub struct Request {
    /// Pixel frames (4k+1).
    pub num_frames: usize,
    /// Pixel height (multiple of 16).
    pub height: usize,
    /// Pixel width (multiple of 16).
    pub width: usize,
    /// Inference steps.
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables the unconditional pass).
    pub guidance: f32,
    /// Flow shift.
    pub shift: f64,
    /// Frames per second of the output (24 → fps bucket 1, 16 → 0).
    pub fps: u32,
    /// Asynchronous offset between frame blocks (0 = synchronous).
    pub ar_step: usize,
    /// Latent frames per block.
    pub causal_block_size: usize,
    /// Force block-causal attention (upstream only enables it on request).
    pub causal_attention: bool,
    /// Window length for long videos, pixel frames.
    pub base_num_frames: Option<usize>,
    /// Overlap between windows, pixel frames.
    pub overlap_history: Option<usize>,
    /// Re-noise level of conditioning prefixes (0 = off; upstream recommends 20).
    pub addnoise_condition: f32,
    /// Reference behaviour to follow.
    pub compat: Compat,
    /// What the first window starts from.
    pub start: Start,
    /// Whether a last image ends the video.
    pub last_image: bool,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The request.
    pub request: Request,
    /// Latent height and width.
    pub latent_size: (usize, usize),
    /// Sampling windows.
    pub segments: Vec<Segment>,
    /// Whether the block-causal attention graph is used.
    pub block_causal: bool,
}

fn invalid(message: String) -> RuntimeError {
    RuntimeError::Invalid(message)
}

impl Request {
    /// A synchronous text-to-video request of `num_frames` at `height`×`width` with `steps`, and
    /// upstream's CLI defaults for the rest (guidance 6, shift 8, 24 fps, one window, no re-noising).
    pub fn upstream(num_frames: usize, height: usize, width: usize, steps: usize) -> Request {
        Request {
            num_frames,
            height,
            width,
            steps,
            guidance: 6.0,
            shift: 8.0,
            fps: 24,
            ar_step: 0,
            causal_block_size: 1,
            causal_attention: false,
            base_num_frames: None,
            overlap_history: None,
            addnoise_condition: 0.0,
            compat: Compat::Upstream,
            start: Start::Noise,
            last_image: false,
        }
    }
}

impl Plan {
    /// Checks `request` and derives the windows.
    pub fn new(request: Request) -> Result<Plan> {
        super::limits::check_request_sizes(&request)?;
        let r = &request;
        if r.num_frames == 0 || !(r.num_frames - 1).is_multiple_of(4) {
            let lower = if r.num_frames > 0 {
                (r.num_frames - 1) / 4 * 4 + 1
            } else {
                1
            };
            return Err(invalid(format!(
                "--num-frames {} is not of the form 4k+1 (the VAE compresses time 4x causally)\n  fix: use {} or {}",
                r.num_frames,
                lower,
                lower + 4
            )));
        }
        for (flag, value) in [("--height", r.height), ("--width", r.width)] {
            if value == 0 || value % 16 != 0 {
                let lower = value / 16 * 16;
                return Err(invalid(format!(
                    "{flag} {value} is not a multiple of 16 (VAE 8x times 2x2 patches)\n  fix: use {} or {}",
                    lower.max(16),
                    lower + 16
                )));
            }
        }
        if r.steps == 0 {
            return Err(invalid(
                "--steps must be at least 1\n  fix: use 30 (upstream's default) or the README's 50"
                    .into(),
            ));
        }
        if !r.guidance.is_finite() || r.guidance < 0.0 {
            return Err(invalid(format!(
                "--guidance {} must be a finite number ≥ 0 (upstream uses 6.0 for T2V, 5.0 for I2V; ≤ 1 disables the negative prompt)",
                r.guidance
            )));
        }
        if r.fps == 0 {
            return Err(invalid(
                "--fps must be at least 1\n  fix: use 24 (or 16, the model's other fps bucket)"
                    .into(),
            ));
        }
        if r.causal_block_size == 0 {
            return Err(invalid(
                "--causal-block-size must be at least 1\n  fix: use 1 (synchronous), or 5 with --ar-step 5 (asynchronous)"
                    .into(),
            ));
        }
        if !(0.0..=1000.0).contains(&r.addnoise_condition) {
            return Err(invalid(format!(
                "--addnoise-condition {} must be within 0..1000 (upstream recommends 20)",
                r.addnoise_condition
            )));
        }
        let base = r.base_num_frames.unwrap_or(r.num_frames);
        if base == 0 || !(base - 1).is_multiple_of(4) {
            return Err(invalid(format!(
                "--base-num-frames {base} is not of the form 4k+1\n  fix: use {} or {}",
                base.saturating_sub(1) / 4 * 4 + 1,
                base.saturating_sub(1) / 4 * 4 + 5
            )));
        }
        if let Some(overlap) = r.overlap_history
            && (overlap == 0 || (overlap - 1) % 4 != 0)
        {
            return Err(invalid(format!(
                "--overlap-history {overlap} is not of the form 4k+1\n  fix: use 17 (upstream's), or another 4k+1 below the window length"
            )));
        }
        let mut segments = match r.start {
            Start::Video { frames } => {
                let overlap = r.overlap_history.ok_or_else(|| {
                    invalid("--video continues from the input's last --overlap-history frames\n  fix: pass --overlap-history (upstream uses 17)".into())
                })?;
                if frames < overlap {
                    return Err(invalid(format!(
                        "the --video has {frames} frames, fewer than --overlap-history {overlap}\n  fix: give a longer video or a smaller --overlap-history (4k+1)"
                    )));
                }
                plan_extension_segments(r.num_frames, base, overlap)?
            }
            Start::Noise | Start::Image => plan_segments(r.num_frames, base, r.overlap_history)?,
        };
        if (r.start == Start::Image || r.last_image) && r.causal_block_size > 1 {
            return Err(invalid(format!(
                "--image/--last-image need --causal-block-size 1: an image is one latent frame, which a block of {} cannot hold (upstream then ignores or re-noises the image)\n  fix: use --causal-block-size 1 (with --ar-step for asynchronous sampling)",
                r.causal_block_size
            )));
        }
        if r.last_image && matches!(r.start, Start::Video { .. }) {
            return Err(invalid("--last-image cannot be combined with --video (extension continues a video; it has no end frame)\n  fix: drop one of them".into()));
        }
        let block = r.causal_block_size;
        for segment in &mut segments {
            segment.prefix_frames = match (segment.index, r.start) {
                (0, Start::Noise) => 0,
                (0, Start::Image) => 1,
                _ => segment.prefix_frames - segment.prefix_frames % block,
            };
        }
        if r.last_image {
            segments
                .last_mut()
                .expect("a plan has at least one window")
                .end_frames = 1;
        }
        for segment in &segments {
            if segment.latent_frames % r.causal_block_size != 0 {
                return Err(invalid(format!(
                    "--causal-block-size {} does not divide the {} latent frames of window {}\n  fix: choose frame counts whose latent windows (frames (n-1)/4+1) are multiples of the block size, or use --causal-block-size 1",
                    r.causal_block_size, segment.latent_frames, segment.index
                )));
            }
        }
        let block_causal =
            r.causal_block_size > 1 && (r.causal_attention || r.compat == Compat::Diffusers);
        let latent_size = (r.height / 8, r.width / 8);
        Ok(Plan {
            request,
            latent_size,
            segments,
            block_causal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request::upstream(97, 544, 960, 30)
    }

    #[test]
    fn accepts_the_upstream_defaults() {
        let plan = Plan::new(request()).unwrap();
        assert_eq!(plan.latent_size, (68, 120));
        assert_eq!(plan.segments.len(), 1);
        assert!(!plan.block_causal);
    }

    #[test]
    fn rejects_bad_sizes_with_a_fix() {
        let error = Plan::new(Request {
            num_frames: 96,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("4k+1") && error.contains("use 93 or 97"),
            "{error}"
        );
        let error = Plan::new(Request {
            height: 540,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--height 540") && error.contains("use 528 or 544"),
            "{error}"
        );
        let error = Plan::new(Request {
            causal_block_size: 5,
            num_frames: 121,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("does not divide the 31 latent frames"),
            "{error}"
        );
        let error = Plan::new(Request {
            guidance: f32::NAN,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--guidance NaN"), "{error}");
        let error = Plan::new(Request {
            fps: 0,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--fps") && error.contains("fix:"), "{error}");
    }

    #[test]
    fn first_image_and_extension_set_the_first_prefix() {
        let image = Plan::new(Request {
            start: Start::Image,
            last_image: true,
            ..request()
        })
        .unwrap();
        assert_eq!(
            (
                image.segments[0].prefix_frames,
                image.segments[0].end_frames
            ),
            (1, 1)
        );
        let long = Request {
            num_frames: 257,
            base_num_frames: Some(97),
            overlap_history: Some(17),
            ..request()
        };
        let plan = Plan::new(Request {
            start: Start::Image,
            last_image: true,
            ..long.clone()
        })
        .unwrap();
        let windows: Vec<_> = plan
            .segments
            .iter()
            .map(|s| (s.latent_frames, s.prefix_frames, s.end_frames))
            .collect();
        assert_eq!(windows, [(25, 1, 0), (25, 5, 0), (25, 5, 1)]);
        let extension = Plan::new(Request {
            start: Start::Video { frames: 33 },
            num_frames: 117,
            ..long.clone()
        })
        .unwrap();
        let windows: Vec<_> = extension
            .segments
            .iter()
            .map(|s| (s.latent_frames, s.prefix_frames))
            .collect();
        assert_eq!(windows, [(25, 5), (10, 5)]);
        let error = Plan::new(Request {
            start: Start::Video { frames: 9 },
            ..long.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("fewer than --overlap-history 17"), "{error}");
        let error = Plan::new(Request {
            start: Start::Video { frames: 33 },
            overlap_history: None,
            ..long.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--overlap-history"), "{error}");
        let error = Plan::new(Request {
            start: Start::Image,
            ar_step: 5,
            causal_block_size: 5,
            ..request()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--causal-block-size 1"), "{error}");
        let error = Plan::new(Request {
            start: Start::Video { frames: 33 },
            last_image: true,
            ..long
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--last-image cannot be combined with --video"),
            "{error}"
        );
    }

    #[test]
    fn block_causal_attention_follows_the_compat_mode() {
        let asynchronous = Request {
            ar_step: 5,
            causal_block_size: 5,
            ..request()
        };
        assert!(!Plan::new(asynchronous.clone()).unwrap().block_causal);
        assert!(
            Plan::new(Request {
                causal_attention: true,
                ..asynchronous.clone()
            })
            .unwrap()
            .block_causal
        );
        assert!(
            Plan::new(Request {
                compat: Compat::Diffusers,
                ..asynchronous
            })
            .unwrap()
            .block_causal
        );
    }
}
