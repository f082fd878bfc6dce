//! Long-video segment arithmetic (SkyReels-V2 `DiffusionForcingPipeline.__call__`, long path;
//! identical in diffusers): how many windows, how many latent frames each, how many new frames.

use crate::error::{Result, RuntimeError};

/// One sampling window of a (possibly long) video, in latent frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    /// Index of the window.
    pub index: usize,
    /// Latent frames sampled in this window (prefix included, end frame excluded).
    pub latent_frames: usize,
    /// Leading clean latent frames: the previous window's overlap (or, in the first window, a
    /// first image or the tail of the video being extended), cut to a multiple of the block size.
    pub prefix_frames: usize,
    /// Clean latent frames appended after the window and never stepped (a last image; last window only).
    pub end_frames: usize,
}

/// Latent frames for `pixel_frames` (4k+1) pixel frames.
pub fn latent_frames(pixel_frames: usize) -> usize {
    (pixel_frames - 1) / 4 + 1
}

/// Windows for a video of `num_frames` pixel frames generated `base_num_frames` at a time with
/// `overlap_history` pixel frames of overlap (`None` = a single window).
pub fn plan_segments(
    num_frames: usize,
    base_num_frames: usize,
    overlap_history: Option<usize>,
) -> Result<Vec<Segment>> {
    let total = latent_frames(num_frames);
    if num_frames <= base_num_frames {
        return Ok(vec![Segment {
            index: 0,
            latent_frames: total,
            prefix_frames: 0,
            end_frames: 0,
        }]);
    }
    let overlap_pixels = overlap_history.ok_or_else(|| {
        RuntimeError::Invalid(format!(
            "--num-frames {num_frames} is longer than --base-num-frames {base_num_frames}, so the video is made in windows\n  fix: pass --overlap-history (upstream recommends 17)"
        ))
    })?;
    let base = latent_frames(base_num_frames);
    let overlap = latent_frames(overlap_pixels);
    if overlap >= base {
        return Err(RuntimeError::Invalid(format!(
            "--overlap-history {overlap_pixels} ({overlap} latent frames) must be shorter than --base-num-frames {base_num_frames} ({base} latent frames)"
        )));
    }
    let count = 1 + (total - base - 1) / (base - overlap) + 1;
    let mut segments = vec![Segment {
        index: 0,
        latent_frames: base,
        prefix_frames: 0,
        end_frames: 0,
    }];
    for index in 1..count {
        let finished = index * (base - overlap) + overlap;
        let latent = (total - finished + overlap).min(base);
        segments.push(Segment {
            index,
            latent_frames: latent,
            prefix_frames: overlap,
            end_frames: 0,
        });
    }
    Ok(segments)
}

/// Windows that extend an existing video (SkyReels-V2 `extend_video`; diffusers' video-to-video
/// pipeline): every window, the first included, continues from `overlap_history` pixel frames, and
/// `num_frames` counts that first overlap (so `num_frames − overlap_history` new frames, roughly).
pub fn plan_extension_segments(
    num_frames: usize,
    base_num_frames: usize,
    overlap_history: usize,
) -> Result<Vec<Segment>> {
    let total = latent_frames(num_frames);
    let base = latent_frames(base_num_frames);
    let overlap = latent_frames(overlap_history);
    if overlap >= base {
        return Err(RuntimeError::Invalid(format!(
            "--overlap-history {overlap_history} ({overlap} latent frames) must be shorter than --base-num-frames {base_num_frames} ({base} latent frames)"
        )));
    }
    if total <= overlap {
        return Err(RuntimeError::Invalid(format!(
            "--num-frames {num_frames} leaves nothing to add: it counts the {overlap_history} overlap frames taken from --video\n  fix: use --num-frames greater than --overlap-history, e.g. {}",
            overlap_history + 80
        )));
    }
    let count = if total <= base {
        1
    } else {
        1 + (total - base - 1) / (base - overlap) + 1
    };
    Ok((0..count)
        .map(|index| {
            let finished = index * (base - overlap) + overlap;
            Segment {
                index,
                latent_frames: (total - finished + overlap).min(base),
                prefix_frames: overlap,
                end_frames: 0,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC.md §3.3's table: windows and new pixel frames per segment.
    #[test]
    fn matches_the_upstream_segment_table() {
        let cases: [(usize, usize, &[usize], usize); 8] = [
            (97, 97, &[25], 97),
            (237, 97, &[25, 25, 20], 237),
            (257, 97, &[25, 25, 25], 257),
            (377, 97, &[25, 25, 25, 25, 15], 377),
            (737, 97, &[25; 9], 737),
            (1457, 97, &[25; 18], 1457),
            (257, 121, &[31, 31, 13], 257),
            (737, 121, &[31, 31, 31, 31, 31, 31, 29], 737),
        ];
        for (num_frames, base, windows, total_pixels) in cases {
            let segments = plan_segments(num_frames, base, Some(17)).unwrap();
            let sizes: Vec<usize> = segments.iter().map(|s| s.latent_frames).collect();
            assert_eq!(sizes, windows, "{num_frames} frames, base {base}");
            let pixels: usize = segments
                .iter()
                .map(|s| 4 * (s.latent_frames - 1) + 1 - if s.index == 0 { 0 } else { 17 })
                .sum();
            assert_eq!(pixels, total_pixels, "{num_frames} frames, base {base}");
        }
    }

    /// SPEC.md §3.5: 120 frames (latent 30), base 97, overlap 17 → windows 25 and 10, 80 + 20 new
    /// frames; the fixture's 21 frames, base 13, overlap 5 → two windows of 4 (diffusers).
    #[test]
    fn extension_windows_match_upstream() {
        let sizes = |n, b, o| {
            plan_extension_segments(n, b, o)
                .unwrap()
                .iter()
                .map(|s| (s.latent_frames, s.prefix_frames))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(117, 97, 17), [(25, 5), (10, 5)]);
        assert_eq!(sizes(21, 13, 5), [(4, 2), (4, 2)]);
        assert_eq!(sizes(97, 97, 17), [(25, 5)]);
        assert_eq!(sizes(33, 97, 17), [(9, 5)]);
        let error = plan_extension_segments(17, 97, 17).unwrap_err().to_string();
        assert!(error.contains("nothing to add"), "{error}");
    }

    #[test]
    fn long_video_needs_an_overlap() {
        let error = plan_segments(257, 97, None).unwrap_err().to_string();
        assert!(error.contains("--overlap-history"), "{error}");
    }
}
