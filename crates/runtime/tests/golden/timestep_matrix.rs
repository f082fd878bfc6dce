//! `timestep_matrix` against diffusers' `SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix`
//! (`tools/reference/make_scheduler_fixtures.py`).

use std::ops::Range;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use skyreels_runtime::timestep_matrix::{TimestepMatrixError, timestep_matrix};

use super::fixture_path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixCase {
    num_frames: usize,
    step_template: Vec<i64>,
    base_num_frames: usize,
    ar_step: usize,
    num_pre_ready: usize,
    causal_block_size: usize,
    error: Option<String>,
    step_matrix: Option<Vec<Vec<i64>>>,
    step_index: Option<Vec<Vec<usize>>>,
    /// One string of `0`/`1` per row.
    update_mask: Option<Vec<String>>,
    valid_interval: Option<Vec<[usize; 2]>>,
}

#[test]
fn timestep_matrices_match_diffusers() -> Result<()> {
    let path = fixture_path("scheduler/timestep_matrices.json");
    let cases: Vec<MatrixCase> = serde_json::from_slice(&fs_err::read(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    ensure!(cases.len() > 60, "only {} cases", cases.len());
    let (mut compared, mut rejected) = (0, 0);
    for case in cases {
        let name = format!(
            "{} frames, {} steps, base {}, ar_step {}, prefix {}, block {}",
            case.num_frames,
            case.step_template.len(),
            case.base_num_frames,
            case.ar_step,
            case.num_pre_ready,
            case.causal_block_size
        );
        let result = timestep_matrix(
            case.num_frames,
            &case.step_template,
            case.base_num_frames,
            case.ar_step,
            case.num_pre_ready,
            case.causal_block_size,
            false,
        );
        if let Some(message) = &case.error {
            let minimum: usize = message
                .split_whitespace()
                .find_map(|word| word.parse().ok())
                .with_context(|| format!("no number in `{message}`"))?;
            match result {
                Err(TimestepMatrixError::ArStepTooSmall { minimum: ours, .. }) => {
                    assert_eq!(ours, minimum, "{name}: {message}")
                }
                other => panic!("{name}: diffusers raised `{message}`, we returned {other:?}"),
            }
            rejected += 1;
            continue;
        }
        let matrix = result.with_context(|| name.clone())?;
        let rows = |matrix: &ndarray::Array2<i64>| {
            matrix
                .rows()
                .into_iter()
                .map(|row| row.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(&matrix.step_matrix),
            case.step_matrix.unwrap(),
            "step_matrix of {name}"
        );
        let step_index: Vec<Vec<usize>> = matrix
            .step_index
            .rows()
            .into_iter()
            .map(|row| row.to_vec())
            .collect();
        assert_eq!(step_index, case.step_index.unwrap(), "step_index of {name}");
        let update_mask: Vec<String> = matrix
            .update_mask
            .rows()
            .into_iter()
            .map(|row| {
                row.iter()
                    .map(|&updated| if updated { '1' } else { '0' })
                    .collect()
            })
            .collect();
        assert_eq!(
            update_mask,
            case.update_mask.unwrap(),
            "update_mask of {name}"
        );
        // diffusers returns an interval end up to base_num_frames; Python slicing clamps it to the frames.
        let expected: Vec<Range<usize>> = case
            .valid_interval
            .unwrap()
            .iter()
            .map(|&[start, end]| start..end.min(case.num_frames))
            .collect();
        assert_eq!(matrix.valid_interval, expected, "valid_interval of {name}");
        compared += 1;
    }
    eprintln!("{compared} matrices equal to diffusers', {rejected} rejections agree");
    Ok(())
}
