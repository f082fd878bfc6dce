//! The diffusion-forcing timestep matrix (SkyReels-V2 `generate_timestep_matrix`, identical in
//! diffusers; SPEC.md §3.1): which timestep every latent frame sees at every sampling row, which
//! frames the scheduler steps, and the frame window fed to the model.

use crate::error::{Result, RuntimeError};

/// The per-row plan of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestepMatrix {
    /// Timestep per row and frame.
    pub step_matrix: Vec<Vec<i64>>,
    /// Step counter per row and frame (0 = not started, N+1 = finished).
    pub step_index: Vec<Vec<usize>>,
    /// Whether the frame is stepped on that row.
    pub update_mask: Vec<Vec<bool>>,
    /// Frames `[start, end)` fed to the model per row.
    pub valid_interval: Vec<(usize, usize)>,
}

/// Builds the matrix for `num_frames` latent frames, `step_template` (the N model timesteps,
/// descending), a window of `base_num_frames`, `ar_step` rows of offset between consecutive
/// blocks (0 = synchronous), `num_pre_ready` clean prefix frames and blocks of `causal_block_size`.
pub fn timestep_matrix(
    num_frames: usize,
    step_template: &[i64],
    base_num_frames: usize,
    ar_step: usize,
    num_pre_ready: usize,
    causal_block_size: usize,
) -> Result<TimestepMatrix> {
    if causal_block_size == 0 || num_frames % causal_block_size != 0 || base_num_frames % causal_block_size != 0 {
        return Err(RuntimeError::Invalid(format!(
            "causal block size {causal_block_size} must divide the window's {num_frames} latent frames (base {base_num_frames})"
        )));
    }
    let steps = step_template.len();
    let iterations = steps + 1;
    let blocks = num_frames / causal_block_size;
    let base_blocks = base_num_frames / causal_block_size;
    if base_blocks < blocks && (ar_step as f64) < steps as f64 / base_blocks as f64 {
        return Err(RuntimeError::Invalid(format!(
            "ar_step {ar_step} is too small for {blocks} blocks in a {base_blocks}-block window: it must be at least {}",
            (steps as f64 / base_blocks as f64).ceil()
        )));
    }
    let mut template = Vec::with_capacity(steps + 2);
    template.push(999);
    template.extend_from_slice(step_template);
    template.push(0);

    let mut previous = vec![0usize; blocks];
    for counter in previous.iter_mut().take(num_pre_ready / causal_block_size) {
        *counter = iterations;
    }
    let (mut step_matrix, mut step_index, mut update_mask) = (Vec::new(), Vec::new(), Vec::new());
    while previous.iter().any(|&c| c < iterations - 1) {
        let mut next = vec![0i64; blocks];
        for i in 0..blocks {
            next[i] = if i == 0 || previous[i - 1] >= iterations - 1 { previous[i] as i64 + 1 } else { next[i - 1] - ar_step as i64 };
        }
        let next: Vec<usize> = next.iter().map(|&c| c.clamp(0, iterations as i64) as usize).collect();
        update_mask.push(next.iter().zip(&previous).map(|(&n, &p)| n != p && n != iterations).collect::<Vec<bool>>());
        step_matrix.push(next.iter().map(|&c| template[c]).collect::<Vec<i64>>());
        step_index.push(next.clone());
        previous = next;
    }
    let mut valid_interval = Vec::with_capacity(update_mask.len());
    let mut terminal = base_blocks;
    for mask in &update_mask {
        if terminal < blocks && mask[terminal] {
            terminal += 1;
        }
        valid_interval.push((terminal.saturating_sub(base_blocks) * causal_block_size, terminal * causal_block_size));
    }
    let expand = |row: &Vec<i64>| row.iter().flat_map(|&v| std::iter::repeat_n(v, causal_block_size)).collect::<Vec<i64>>();
    Ok(TimestepMatrix {
        step_matrix: step_matrix.iter().map(expand).collect(),
        step_index: step_index.iter().map(|r| r.iter().flat_map(|&v| std::iter::repeat_n(v, causal_block_size)).collect()).collect(),
        update_mask: update_mask.iter().map(|r| r.iter().flat_map(|&v| std::iter::repeat_n(v, causal_block_size)).collect()).collect(),
        valid_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC.md §3.1's 30-step, shift-8 upstream template.
    const TEMPLATE: [i64; 30] = [
        999, 995, 991, 986, 980, 975, 969, 963, 956, 948, 941, 932, 922, 912, 901, 888, 874, 859, 841, 822, 799, 773, 743, 708, 666, 615, 551, 470, 363, 216,
    ];

    #[test]
    fn row_counts_match_the_spec_table() {
        let cases = [
            (25, 0, 1, 0, 30),
            (25, 0, 1, 5, 30),
            (25, 5, 5, 0, 50),
            (25, 5, 5, 5, 45),
            (20, 5, 5, 5, 40),
            (25, 5, 1, 0, 150),
            (25, 5, 1, 5, 125),
        ];
        for (frames, ar_step, block, prefix, rows) in cases {
            let m = timestep_matrix(frames, &TEMPLATE, frames, ar_step, prefix, block).unwrap();
            assert_eq!(m.step_matrix.len(), rows, "{frames} frames, ar {ar_step}, cbs {block}, prefix {prefix}");
            assert!(m.valid_interval.iter().all(|&i| i == (0, frames)));
        }
    }

    #[test]
    fn selected_async_rows_match_the_spec() {
        let m = timestep_matrix(25, &TEMPLATE, 25, 5, 0, 5).unwrap();
        let block_values = |row: usize| -> Vec<i64> { (0..5).map(|b| m.step_matrix[row - 1][b * 5]).collect() };
        let counters = |row: usize| -> Vec<usize> { (0..5).map(|b| m.step_index[row - 1][b * 5]).collect() };
        let mask = |row: usize| -> Vec<bool> { (0..5).map(|b| m.update_mask[row - 1][b * 5]).collect() };
        assert_eq!(block_values(1), [999, 999, 999, 999, 999]);
        assert_eq!(counters(1), [1, 0, 0, 0, 0]);
        assert_eq!(mask(1), [true, false, false, false, false]);
        assert_eq!(block_values(6), [975, 999, 999, 999, 999]);
        assert_eq!(counters(6), [6, 1, 0, 0, 0]);
        assert_eq!(block_values(21), [799, 888, 941, 975, 999]);
        assert_eq!(counters(21), [21, 16, 11, 6, 1]);
        assert_eq!(block_values(35), [0, 216, 666, 822, 901]);
        assert_eq!(counters(35), [31, 30, 25, 20, 15]);
        assert_eq!(mask(35), [false, true, true, true, true]);
        assert_eq!(block_values(50), [0, 0, 0, 0, 216]);
        assert_eq!(mask(50), [false, false, false, false, true]);
    }

    #[test]
    fn prefix_frames_are_fed_clean_and_never_stepped() {
        let m = timestep_matrix(25, &TEMPLATE, 25, 0, 5, 1).unwrap();
        assert_eq!(&m.step_matrix[0][..6], [0, 0, 0, 0, 0, 999]);
        assert_eq!(&m.update_mask[0][..6], [false, false, false, false, false, true]);
    }
}
