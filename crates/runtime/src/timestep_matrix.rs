//! The diffusion-forcing timestep matrix (SPEC.md §3.1): which timestep every latent frame is fed
//! at every sampling row, which frames the scheduler steps, and which frames the model sees.
//! Port of `generate_timestep_matrix` in SkyReels-V2
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/pipelines/diffusion_forcing_pipeline.py>)
//! and diffusers
//! (<https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/skyreels_v2/pipeline_skyreels_v2_diffusion_forcing.py>),
//! which compute the same thing.

use std::fmt;
use std::ops::Range;

use ndarray::Array2;

/// Timestep fed to frames that have not started (the counter 0 entry of the padded template).
const NOT_STARTED_TIMESTEP: i64 = 999;
/// Timestep fed to finished and prefix frames (the counter N+1 entry of the padded template).
const FINISHED_TIMESTEP: i64 = 0;

/// Why a timestep matrix could not be built; each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestepMatrixError {
    /// The step template is empty.
    #[error("the step template is empty: pass the scheduler's N ≥ 1 timesteps")]
    EmptyStepTemplate,
    /// `causal_block_size` is 0.
    #[error("causal_block_size must be at least 1 (1 = every frame is its own block)")]
    ZeroCausalBlockSize,
    /// The window has no frames.
    #[error("num_frames must be at least 1")]
    NoFrames,
    /// `causal_block_size` does not divide the frame count.
    #[error(
        "causal_block_size {causal_block_size} does not divide num_frames {num_frames}: use a window whose latent \
         frame count is a multiple of {causal_block_size} (e.g. {}), or causal_block_size 1",
        num_frames - num_frames % causal_block_size
    )]
    FramesNotDivisible {
        /// Latent frames in the window.
        num_frames: usize,
        /// Frames per causal block.
        causal_block_size: usize,
    },
    /// `base_num_frames` is 0 or not a multiple of `causal_block_size`.
    #[error(
        "base_num_frames {base_num_frames} must be a positive multiple of causal_block_size {causal_block_size}: \
         pass the model window in latent frames"
    )]
    BaseFramesNotDivisible {
        /// Frames the model sees at once.
        base_num_frames: usize,
        /// Frames per causal block.
        causal_block_size: usize,
    },
    /// The window slides over more blocks than it holds, and `ar_step` is too small for that.
    #[error(
        "ar_step {ar_step} is too small: a window of {base_num_blocks} blocks sliding over {num_blocks} blocks with \
         {num_steps} steps needs ar_step ≥ {minimum} (= ⌈{num_steps} / {base_num_blocks}⌉); raise ar_step or \
         base_num_frames"
    )]
    ArStepTooSmall {
        /// The requested ar_step.
        ar_step: usize,
        /// Smallest accepted ar_step.
        minimum: usize,
        /// Steps N.
        num_steps: usize,
        /// Blocks in the frames.
        num_blocks: usize,
        /// Blocks in the model window.
        base_num_blocks: usize,
    },
    /// Every block is a ready prefix, so there is nothing to denoise.
    #[error(
        "num_pre_ready {num_pre_ready} marks all {num_frames} frames ready ({causal_block_size} per block): the \
         window must contain at least one frame to generate"
    )]
    NothingToDenoise {
        /// Clean prefix frames.
        num_pre_ready: usize,
        /// Latent frames in the window.
        num_frames: usize,
        /// Frames per causal block.
        causal_block_size: usize,
    },
}

/// The row-by-row plan of one diffusion-forcing window of F latent frames over R rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestepMatrix {
    /// Model timestep per row and frame, `[R, F]`: 999 before a frame starts, `template[k−1]` while it runs, 0 when done.
    pub step_matrix: Array2<i64>,
    /// Step counter per row and frame, `[R, F]`: 0 = not started, k ∈ 1..=N applies scheduler step k−1, N+1 = finished.
    pub step_index: Array2<usize>,
    /// Whether the frame's scheduler steps on that row, `[R, F]`.
    pub update_mask: Array2<bool>,
    /// Frames fed to the model on each row, at most `base_num_frames` long; `0..F` whenever `base_num_frames ≥ F`.
    pub valid_interval: Vec<Range<usize>>,
}

impl TimestepMatrix {
    /// Number of rows R (model evaluations per guidance branch).
    pub fn num_rows(&self) -> usize {
        self.step_matrix.nrows()
    }

    /// Number of latent frames F.
    pub fn num_frames(&self) -> usize {
        self.step_matrix.ncols()
    }
}

impl fmt::Display for TimestepMatrix {
    /// One line per row: the row, its frame interval, then every frame's timestep, `*` before it where it is stepped.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "{} rows x {} frames (* = stepped)",
            self.num_rows(),
            self.num_frames()
        )?;
        for (row, interval) in self.valid_interval.iter().enumerate() {
            write!(
                formatter,
                "{row:>4} {:>3}..{:<3}",
                interval.start, interval.end
            )?;
            for frame in 0..self.num_frames() {
                let mark = if self.update_mask[[row, frame]] {
                    '*'
                } else {
                    ' '
                };
                write!(formatter, " {mark}{:>3}", self.step_matrix[[row, frame]])?;
            }
            writeln!(formatter)?;
        }
        Ok(())
    }
}

/// Plans the rows of a diffusion-forcing window.
///
/// Frames are grouped into blocks of `causal_block_size`; each block carries a counter that starts
/// at 0 (noise) and advances by one per row up to N+1 (clean), where N = `step_template.len()`
/// (the scheduler's timesteps, descending). In synchronous mode (`ar_step` = 0) every block advances
/// together: N rows. In asynchronous mode block b trails block b−1 by `ar_step` rows until b−1 is
/// done: N + (blocks to generate − 1)·`ar_step` rows. The first `num_pre_ready` frames are a clean
/// prefix, fed at timestep 0 and never stepped; as in both references, a prefix that is not a whole
/// number of blocks only marks its whole blocks ready (SPEC.md §3.4). `valid_interval` is the
/// window of at most `base_num_frames` frames fed to the model; it slides forward when there are
/// more frames than that, which needs `ar_step ≥ ⌈N / base blocks⌉`.
///
/// `shrink_interval_with_mask` starts the window after the last block that row 0 updates instead
/// of at `base_num_frames`. Both references raise an exception for this option (they replace the
/// list of row masks by its first row); this port implements what the code sets out to do.
pub fn timestep_matrix(
    num_frames: usize,
    step_template: &[i64],
    base_num_frames: usize,
    ar_step: usize,
    num_pre_ready: usize,
    causal_block_size: usize,
    shrink_interval_with_mask: bool,
) -> Result<TimestepMatrix, TimestepMatrixError> {
    if step_template.is_empty() {
        return Err(TimestepMatrixError::EmptyStepTemplate);
    }
    if causal_block_size == 0 {
        return Err(TimestepMatrixError::ZeroCausalBlockSize);
    }
    if num_frames == 0 {
        return Err(TimestepMatrixError::NoFrames);
    }
    if !num_frames.is_multiple_of(causal_block_size) {
        return Err(TimestepMatrixError::FramesNotDivisible {
            num_frames,
            causal_block_size,
        });
    }
    if base_num_frames == 0 || !base_num_frames.is_multiple_of(causal_block_size) {
        return Err(TimestepMatrixError::BaseFramesNotDivisible {
            base_num_frames,
            causal_block_size,
        });
    }
    let num_steps = step_template.len();
    let num_blocks = num_frames / causal_block_size;
    let base_num_blocks = base_num_frames / causal_block_size;
    if base_num_blocks < num_blocks && ar_step * base_num_blocks < num_steps {
        return Err(TimestepMatrixError::ArStepTooSmall {
            ar_step,
            minimum: num_steps.div_ceil(base_num_blocks),
            num_steps,
            num_blocks,
            base_num_blocks,
        });
    }
    let ready_blocks = num_pre_ready / causal_block_size;
    if ready_blocks >= num_blocks {
        return Err(TimestepMatrixError::NothingToDenoise {
            num_pre_ready,
            num_frames,
            causal_block_size,
        });
    }

    let finished = num_steps + 1;
    let padded_template: Vec<i64> = [NOT_STARTED_TIMESTEP]
        .into_iter()
        .chain(step_template.iter().copied())
        .chain([FINISHED_TIMESTEP])
        .collect();
    let mut previous: Vec<usize> = (0..num_blocks)
        .map(|block| if block < ready_blocks { finished } else { 0 })
        .collect();
    let mut block_counters: Vec<Vec<usize>> = Vec::new();
    let mut block_masks: Vec<Vec<bool>> = Vec::new();
    while previous.iter().any(|&counter| counter + 1 < finished) {
        let mut unclamped = vec![0i64; num_blocks];
        for block in 0..num_blocks {
            unclamped[block] = if block == 0 || previous[block - 1] + 1 >= finished {
                previous[block] as i64 + 1
            } else {
                unclamped[block - 1] - ar_step as i64
            };
        }
        let counters: Vec<usize> = unclamped
            .iter()
            .map(|&counter| counter.clamp(0, finished as i64) as usize)
            .collect();
        block_masks.push(
            counters
                .iter()
                .zip(&previous)
                .map(|(&now, &before)| now != before && now != finished)
                .collect(),
        );
        previous.clone_from(&counters);
        block_counters.push(counters);
    }

    let mut terminal_block = if shrink_interval_with_mask {
        block_masks[0]
            .iter()
            .rposition(|&updated| updated)
            .map_or(0, |last| last + 1)
    } else {
        base_num_blocks
    };
    let valid_interval = block_masks
        .iter()
        .map(|mask| {
            if terminal_block < num_blocks && mask[terminal_block] {
                terminal_block += 1;
            }
            let start = terminal_block.saturating_sub(base_num_blocks) * causal_block_size;
            start..(terminal_block * causal_block_size).min(num_frames)
        })
        .collect();

    let num_rows = block_counters.len();
    let step_index = Array2::from_shape_fn((num_rows, num_frames), |(row, frame)| {
        block_counters[row][frame / causal_block_size]
    });
    Ok(TimestepMatrix {
        step_matrix: step_index.mapv(|counter| padded_template[counter]),
        update_mask: Array2::from_shape_fn((num_rows, num_frames), |(row, frame)| {
            block_masks[row][frame / causal_block_size]
        }),
        step_index,
        valid_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Schedule, SigmaSchedule};

    /// SPEC.md §3.1's 30-step, shift-8 template (upstream schedule), copied from the spec.
    const SPEC_TEMPLATE: [i64; 30] = [
        999, 995, 991, 986, 980, 975, 969, 963, 956, 948, 941, 932, 922, 912, 901, 888, 874, 859,
        841, 822, 799, 773, 743, 708, 666, 615, 551, 470, 363, 216,
    ];

    fn spec_matrix(
        num_frames: usize,
        ar_step: usize,
        num_pre_ready: usize,
        causal_block_size: usize,
    ) -> TimestepMatrix {
        timestep_matrix(
            num_frames,
            &SPEC_TEMPLATE,
            num_frames,
            ar_step,
            num_pre_ready,
            causal_block_size,
            false,
        )
        .unwrap()
    }

    /// SPEC.md §3.1's table of matrix shapes.
    #[test]
    fn shapes_match_the_spec_table() {
        let cases = [
            ("sync, 25 frames", 25, 0, 0, 1, 30),
            ("sync, 25 frames, 5 prefix", 25, 0, 5, 1, 30),
            ("async ar5 cbs5, 25 frames", 25, 5, 0, 5, 50),
            ("async ar5 cbs5, 25 frames, prefix 5", 25, 5, 5, 5, 45),
            ("async ar5 cbs5, 20 frames, prefix 5", 20, 5, 5, 5, 40),
            ("async ar5 cbs1, 25 frames", 25, 5, 0, 1, 150),
            ("async ar5 cbs1, 25 frames, prefix 5", 25, 5, 5, 1, 125),
        ];
        for (name, num_frames, ar_step, num_pre_ready, causal_block_size, num_rows) in cases {
            let matrix = spec_matrix(num_frames, ar_step, num_pre_ready, causal_block_size);
            assert_eq!(matrix.step_matrix.dim(), (num_rows, num_frames), "{name}");
            assert_eq!(matrix.step_index.dim(), (num_rows, num_frames), "{name}");
            assert_eq!(matrix.update_mask.dim(), (num_rows, num_frames), "{name}");
            assert!(
                matrix
                    .valid_interval
                    .iter()
                    .all(|interval| *interval == (0..num_frames)),
                "{name}"
            );
        }
    }

    #[test]
    fn sync_rows_are_constant_and_prefix_rows_match_the_spec() {
        let matrix = spec_matrix(25, 0, 0, 1);
        for (row, timesteps) in matrix.step_matrix.rows().into_iter().enumerate() {
            assert!(
                timesteps.iter().all(|&t| t == SPEC_TEMPLATE[row]),
                "row {row}"
            );
        }
        let matrix = spec_matrix(25, 0, 5, 1);
        let expected_row: Vec<i64> = [0; 5].into_iter().chain([999; 20]).collect();
        assert_eq!(matrix.step_matrix.row(0).to_vec(), expected_row);
        let expected_mask: Vec<bool> = [false; 5].into_iter().chain([true; 20]).collect();
        assert_eq!(matrix.update_mask.row(0).to_vec(), expected_mask);
    }

    /// SPEC.md §3.1's selected rows (1-based) of the async ar5 / cbs5 / 25-frame case, per block.
    #[test]
    fn async_rows_match_the_spec() {
        let matrix = spec_matrix(25, 5, 0, 5);
        type BlockRow = (usize, [i64; 5], [usize; 5], [bool; 5]);
        let rows: [BlockRow; 5] = [
            (
                1,
                [999, 999, 999, 999, 999],
                [1, 0, 0, 0, 0],
                [true, false, false, false, false],
            ),
            (
                6,
                [975, 999, 999, 999, 999],
                [6, 1, 0, 0, 0],
                [true, true, false, false, false],
            ),
            (21, [799, 888, 941, 975, 999], [21, 16, 11, 6, 1], [true; 5]),
            (
                35,
                [0, 216, 666, 822, 901],
                [31, 30, 25, 20, 15],
                [false, true, true, true, true],
            ),
            (
                50,
                [0, 0, 0, 0, 216],
                [31, 31, 31, 31, 30],
                [false, false, false, false, true],
            ),
        ];
        for (row, timesteps, counters, mask) in rows {
            for block in 0..5 {
                for frame in block * 5..block * 5 + 5 {
                    assert_eq!(
                        matrix.step_matrix[[row - 1, frame]],
                        timesteps[block],
                        "row {row} frame {frame}"
                    );
                    assert_eq!(
                        matrix.step_index[[row - 1, frame]],
                        counters[block],
                        "row {row} frame {frame}"
                    );
                    assert_eq!(
                        matrix.update_mask[[row - 1, frame]],
                        mask[block],
                        "row {row} frame {frame}"
                    );
                }
            }
        }
    }

    /// Every non-prefix frame is stepped exactly N times, at the template's timesteps in order.
    #[test]
    fn every_frame_walks_the_whole_template_once() {
        for (num_frames, ar_step, num_pre_ready, causal_block_size) in
            [(25, 5, 5, 5), (13, 3, 2, 1), (20, 0, 5, 5)]
        {
            let matrix = spec_matrix(num_frames, ar_step, num_pre_ready, causal_block_size);
            for frame in 0..num_frames {
                let stepped: Vec<i64> = (0..matrix.num_rows())
                    .filter(|&row| matrix.update_mask[[row, frame]])
                    .map(|row| matrix.step_matrix[[row, frame]])
                    .collect();
                let expected: &[i64] = if frame < num_pre_ready {
                    &[]
                } else {
                    &SPEC_TEMPLATE
                };
                assert_eq!(
                    stepped, expected,
                    "frame {frame} of {num_frames}, ar_step {ar_step}"
                );
            }
        }
    }

    #[test]
    fn shrink_interval_starts_at_the_first_updated_blocks() {
        let template = &SPEC_TEMPLATE[..4];
        let matrix = timestep_matrix(3, template, 3, 2, 0, 1, true).unwrap();
        let intervals: Vec<Range<usize>> = matrix.valid_interval.clone();
        assert_eq!(intervals, [0..1, 0..1, 0..2, 0..2, 0..3, 0..3, 0..3, 0..3]);
        let unshrunk = timestep_matrix(3, template, 3, 2, 0, 1, false).unwrap();
        assert_eq!(unshrunk.step_matrix, matrix.step_matrix);
        assert!(
            unshrunk
                .valid_interval
                .iter()
                .all(|interval| *interval == (0..3))
        );
    }

    #[test]
    fn a_base_window_longer_than_the_frames_feeds_every_frame() {
        let matrix = timestep_matrix(5, &SPEC_TEMPLATE, 25, 0, 0, 1, false).unwrap();
        assert!(
            matrix
                .valid_interval
                .iter()
                .all(|interval| *interval == (0..5))
        );
    }

    #[test]
    fn invalid_inputs_name_the_problem() {
        let error = |num_frames, base_num_frames, ar_step, num_pre_ready, causal_block_size| {
            timestep_matrix(
                num_frames,
                &SPEC_TEMPLATE,
                base_num_frames,
                ar_step,
                num_pre_ready,
                causal_block_size,
                false,
            )
            .unwrap_err()
        };
        assert_eq!(
            error(31, 31, 5, 0, 5),
            TimestepMatrixError::FramesNotDivisible {
                num_frames: 31,
                causal_block_size: 5
            }
        );
        assert!(error(31, 31, 5, 0, 5).to_string().contains("e.g. 30"));
        assert_eq!(
            error(25, 25, 5, 0, 0),
            TimestepMatrixError::ZeroCausalBlockSize
        );
        assert_eq!(error(0, 25, 5, 0, 1), TimestepMatrixError::NoFrames);
        assert_eq!(
            error(25, 12, 5, 0, 5),
            TimestepMatrixError::BaseFramesNotDivisible {
                base_num_frames: 12,
                causal_block_size: 5
            }
        );
        assert_eq!(
            error(25, 20, 5, 0, 5),
            TimestepMatrixError::ArStepTooSmall {
                ar_step: 5,
                minimum: 8,
                num_steps: 30,
                num_blocks: 5,
                base_num_blocks: 4
            }
        );
        assert_eq!(
            error(25, 25, 0, 25, 5),
            TimestepMatrixError::NothingToDenoise {
                num_pre_ready: 25,
                num_frames: 25,
                causal_block_size: 5
            }
        );
        assert_eq!(
            timestep_matrix(25, &[], 25, 0, 0, 1, false).unwrap_err(),
            TimestepMatrixError::EmptyStepTemplate
        );
    }

    /// A compact rendering of a table of cases, reviewed by eye (10 steps, shift 8, upstream schedule).
    #[test]
    fn rendered_matrices() {
        let schedule = Schedule::new(SigmaSchedule::Upstream, 10, 8.0).unwrap();
        let template = schedule.timesteps();
        let cases: [(&str, usize, usize, usize, usize, usize, bool); 8] = [
            ("sync_5_frames", 5, 5, 0, 0, 1, false),
            ("sync_5_frames_prefix_2", 5, 5, 0, 2, 1, false),
            ("async_ar3_5_frames", 5, 5, 3, 0, 1, false),
            ("async_ar5_cbs5_25_frames", 25, 25, 5, 0, 5, false),
            ("async_ar5_cbs5_25_frames_prefix_5", 25, 25, 5, 5, 5, false),
            ("async_ar4_8_frames_base_4_sliding", 8, 4, 4, 0, 1, false),
            ("async_ar2_cbs2_10_frames_prefix_3", 10, 10, 2, 3, 2, false),
            ("async_ar3_5_frames_shrink_interval", 5, 5, 3, 0, 1, true),
        ];
        for (
            name,
            num_frames,
            base_num_frames,
            ar_step,
            num_pre_ready,
            causal_block_size,
            shrink,
        ) in cases
        {
            let matrix = timestep_matrix(
                num_frames,
                template,
                base_num_frames,
                ar_step,
                num_pre_ready,
                causal_block_size,
                shrink,
            )
            .unwrap();
            insta::assert_snapshot!(name, matrix.to_string());
        }
    }
}
