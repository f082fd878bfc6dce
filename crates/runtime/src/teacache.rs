//! TeaCache: skip the transformer blocks when the timestep modulation barely changed since the last
//! computed call, reusing that call's residual (`blocks(x) − x`). The rule is upstream's
//! (<https://github.com/ali-vilab/TeaCache/tree/main/TeaCache4Wan2.1>): accumulate the rescaled
//! relative L1 change `poly(mean|p − p_prev| / mean|p_prev|)` of the probe `p` and compute once the
//! sum reaches the threshold. State is a value owned by the sampling loop, keyed by branch.
//!
//! Counting follows TeaCache's intent, not SkyReels' counter: each branch (conditional,
//! unconditional) keeps its own state and the forced-compute window is in sampling rows, so with
//! classifier-free guidance the first `retention_rows` rows of both branches are always computed.
//! SkyReels-V2 instead counts forward calls modulo the *un-doubled* step count, which replays the
//! retention window halfway through and never forces the final steps (SPEC.md §6).

use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;

/// A cached residual `blocks(x) − x`: where the tokens live (an ONNX Runtime value, on the GPU
/// for CUDA engines), or a host tensor for engines without the TeaCache graphs.
pub enum Residual {
    /// On the host.
    Host(Tensor),
    /// In an ONNX Runtime value (device memory on GPUs).
    Value(ort::value::DynValue),
}

/// Which classifier-free-guidance pass a forward belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// With the prompt.
    Conditional,
    /// With the negative prompt.
    Unconditional,
}

/// What to do with the transformer blocks for one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the blocks (and store the new residual).
    Compute,
    /// Add the cached residual instead.
    Reuse,
}

/// TeaCache settings for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeaCacheConfig {
    /// Accumulated rescaled distance below which blocks are skipped (upstream default 0.2).
    pub threshold: f64,
    /// Rescaling polynomial, highest degree first (`np.poly1d` order).
    pub coefficients: [f64; 5],
    /// Probe the full modulation `e0` with a 5-row retention window (upstream `--use_ret_steps`);
    /// otherwise probe the time embedding `e` with a 1-row window and force the last row.
    pub use_retention: bool,
}

#[derive(Default)]
struct BranchState {
    accumulated: f64,
    previous_probe: Option<Vec<f32>>,
    residual: Option<Residual>,
}

/// Per-branch TeaCache state for one sampling window.
pub struct TeaCache {
    config: TeaCacheConfig,
    retention_rows: usize,
    cutoff_row: usize,
    states: [BranchState; 2],
    /// Forward passes whose blocks ran.
    pub computed: usize,
    /// Forward passes whose blocks were skipped.
    pub skipped: usize,
}

fn slot(branch: Branch) -> usize {
    match branch {
        Branch::Conditional => 0,
        Branch::Unconditional => 1,
    }
}

impl TeaCache {
    /// State for a window of `num_rows` sampling rows.
    pub fn new(config: TeaCacheConfig, num_rows: usize) -> TeaCache {
        let (retention_rows, cutoff_row) = if config.use_retention {
            (5, num_rows)
        } else {
            (1, num_rows.saturating_sub(1))
        };
        TeaCache {
            config,
            retention_rows,
            cutoff_row,
            states: Default::default(),
            computed: 0,
            skipped: 0,
        }
    }

    /// Which probe this configuration reads: `true` = modulation `e0`, `false` = embedding `e`.
    pub fn probes_modulation(&self) -> bool {
        self.config.use_retention
    }

    fn rescale(&self, x: f64) -> f64 {
        self.config
            .coefficients
            .iter()
            .fold(0.0, |acc, c| acc * x + c)
    }

    /// Decides whether `branch` at sampling row `row` must run the blocks, given this call's probe.
    pub fn decide(&mut self, branch: Branch, row: usize, probe: &[f32]) -> Decision {
        let forced = row < self.retention_rows || row >= self.cutoff_row;
        let distance = self.states[slot(branch)]
            .previous_probe
            .as_deref()
            .map(|previous| relative_l1(probe, previous));
        let has_residual = self.states[slot(branch)].residual.is_some();
        let rescaled = distance.map(|d| self.rescale(d));
        let state = &mut self.states[slot(branch)];
        state.previous_probe = Some(probe.to_vec());
        let decision = match (forced, rescaled, has_residual) {
            (false, Some(r), true) if state.accumulated + r < self.config.threshold => {
                state.accumulated += r;
                Decision::Reuse
            }
            _ => {
                state.accumulated = 0.0;
                Decision::Compute
            }
        };
        match decision {
            Decision::Compute => self.computed += 1,
            Decision::Reuse => self.skipped += 1,
        }
        decision
    }

    /// Takes the residual stored by `branch`'s last computed pass (put it back with
    /// [`TeaCache::store_residual`] once used).
    pub fn take_residual(&mut self, branch: Branch) -> Option<Residual> {
        self.states[slot(branch)].residual.take()
    }

    /// Stores `branch`'s residual after a computed pass.
    pub fn store_residual(&mut self, branch: Branch, residual: Residual) {
        self.states[slot(branch)].residual = Some(residual);
    }
}

/// `mean|a − b| / mean|b|`.
pub fn relative_l1(current: &[f32], previous: &[f32]) -> f64 {
    let difference: f64 = current
        .iter()
        .zip(previous)
        .map(|(a, b)| (a - b).abs() as f64)
        .sum();
    let magnitude: f64 = previous.iter().map(|b| b.abs() as f64).sum();
    if magnitude == 0.0 {
        f64::INFINITY
    } else {
        difference / magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(threshold: f64, use_retention: bool) -> TeaCacheConfig {
        TeaCacheConfig {
            threshold,
            coefficients: [0.0, 0.0, 0.0, 1.0, 0.0],
            use_retention,
        }
    }

    #[test]
    fn skips_until_the_accumulated_distance_reaches_the_threshold() {
        let mut cache = TeaCache::new(config(0.25, false), 10);
        let branch = Branch::Conditional;
        assert_eq!(cache.decide(branch, 0, &[1.0, 1.0]), Decision::Compute);
        cache.store_residual(branch, Residual::Host(Tensor::zeros(vec![1])));
        // Each row moves the probe by 10 %: 0.1 and 0.2 accumulate below 0.25, the third reaches it.
        assert_eq!(cache.decide(branch, 1, &[1.1, 1.1]), Decision::Reuse);
        assert_eq!(cache.decide(branch, 2, &[1.21, 1.21]), Decision::Reuse);
        assert_eq!(cache.decide(branch, 3, &[1.331, 1.331]), Decision::Compute);
        // The last row is always computed when retention is off.
        assert_eq!(
            cache.decide(branch, 9, &[1.3311, 1.3311]),
            Decision::Compute
        );
        assert_eq!((cache.computed, cache.skipped), (3, 2));
    }

    #[test]
    fn branches_keep_separate_state_and_retention_forces_early_rows() {
        let mut cache = TeaCache::new(config(10.0, true), 30);
        for row in 0..5 {
            for branch in [Branch::Conditional, Branch::Unconditional] {
                assert_eq!(
                    cache.decide(branch, row, &[1.0]),
                    Decision::Compute,
                    "row {row}"
                );
                cache.store_residual(branch, Residual::Host(Tensor::zeros(vec![1])));
            }
        }
        assert_eq!(
            cache.decide(Branch::Conditional, 5, &[1.0]),
            Decision::Reuse
        );
        assert_eq!(
            cache.decide(Branch::Unconditional, 5, &[1.0]),
            Decision::Reuse
        );
    }

    #[test]
    fn polynomial_is_evaluated_highest_degree_first() {
        let cache = TeaCache::new(
            TeaCacheConfig {
                threshold: 0.2,
                coefficients: [1.0, 2.0, 3.0, 4.0, 5.0],
                use_retention: false,
            },
            3,
        );
        assert_eq!(cache.rescale(2.0), 16.0 + 16.0 + 12.0 + 8.0 + 5.0);
    }
}
