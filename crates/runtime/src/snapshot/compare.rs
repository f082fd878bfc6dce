//! How far a replayed case is from its recording: latents by largest absolute difference and by
//! relative L2 error, decoded frames by PSNR over their 8-bit pixels.

use crate::output::Video;
use crate::tensor::Tensor;

/// The differences between a replay and its recording.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    /// Largest absolute difference of the final latents.
    pub latents_max_abs: f64,
    /// `‖replay − recorded‖₂ / ‖recorded‖₂` of the final latents (0 when both are zero).
    pub latents_relative: f64,
    /// PSNR of the decoded 8-bit frames in dB (`f64::INFINITY` when identical).
    pub frames_psnr: f64,
}

/// Compares final latents; `None` when the shapes differ.
pub fn compare_latents(replay: &Tensor, recorded: &Tensor) -> Option<(f64, f64)> {
    if replay.shape != recorded.shape {
        return None;
    }
    let (mut max_abs, mut error, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in replay.data.iter().zip(&recorded.data) {
        let difference = (a as f64 - b as f64).abs();
        // `f64::max` drops NaN; a NaN anywhere must show.
        if difference.is_nan() || difference > max_abs {
            max_abs = difference;
        }
        if max_abs.is_nan() {
            break;
        }
        error += difference * difference;
        norm += (b as f64) * (b as f64);
    }
    if max_abs.is_nan() {
        return Some((f64::NAN, f64::NAN));
    }
    let relative = if error == 0.0 {
        0.0
    } else {
        error.sqrt() / norm.sqrt()
    };
    Some((max_abs, relative))
}

/// PSNR in dB of two videos of the same size over all their RGB bytes, with peak 255;
/// `f64::INFINITY` when they are identical, `None` when sizes or frame counts differ.
pub fn frames_psnr(replay: &Video, recorded: &Video) -> Option<f64> {
    if (replay.width(), replay.height(), replay.num_frames())
        != (recorded.width(), recorded.height(), recorded.num_frames())
    {
        return None;
    }
    let mut squared = 0u64;
    let mut count = 0u64;
    for index in 0..replay.num_frames() {
        for (&a, &b) in replay.frame(index).iter().zip(recorded.frame(index)) {
            let difference = a.abs_diff(b) as u64;
            squared += difference * difference;
            count += 1;
        }
    }
    if squared == 0 {
        return Some(f64::INFINITY);
    }
    let mean = squared as f64 / count as f64;
    Some(10.0 * (255.0 * 255.0 / mean).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_differences_are_exact_on_small_tensors() {
        let recorded = Tensor::new(vec![2, 2], vec![3.0, 0.0, 0.0, 4.0]).unwrap();
        let replay = Tensor::new(vec![2, 2], vec![3.0, 0.5, 0.0, 4.0]).unwrap();
        assert_eq!(compare_latents(&recorded, &recorded), Some((0.0, 0.0)));
        // ‖d‖ = 0.5, ‖recorded‖ = 5.
        assert_eq!(compare_latents(&replay, &recorded), Some((0.5, 0.1)));
        let other_shape = Tensor::new(vec![4], vec![0.0; 4]).unwrap();
        assert_eq!(compare_latents(&other_shape, &recorded), None);
        let nan = Tensor::new(vec![2, 2], vec![f32::NAN, 0.0, 0.0, 4.0]).unwrap();
        assert!(compare_latents(&nan, &recorded).unwrap().0.is_nan());
    }

    #[test]
    fn psnr_matches_its_definition() {
        let recorded = Video::new(1, 1, vec![10, 20, 30, 40, 50, 60]).unwrap();
        assert_eq!(frames_psnr(&recorded, &recorded), Some(f64::INFINITY));
        // One byte off by 6 over 6 bytes: MSE 6, PSNR = 10 log10(65025 / 6) = 40.3493 dB.
        let replay = Video::new(1, 1, vec![10, 20, 30, 40, 50, 66]).unwrap();
        let psnr = frames_psnr(&replay, &recorded).unwrap();
        assert!((psnr - 40.349_291).abs() < 1e-5, "{psnr}");
        let shorter = Video::new(1, 1, vec![10, 20, 30]).unwrap();
        assert_eq!(frames_psnr(&shorter, &recorded), None);
    }
}
