//! How close a replay must stay to its recording: defaults by the pair of backends and engine
//! precisions (docs/SNAPSHOTS.md gives the measurements behind them), or `--tolerance`.

use std::fmt;

use super::compare::Comparison;
use crate::error::{Result, RuntimeError};

/// Where a snapshot was recorded or replayed: the backend and the engine's weight precision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `cpu` or `cuda`.
    pub backend: String,
    /// The engine manifest's `precision`: `fp32`, `fp16` or `bf16`.
    pub precision: String,
}

/// Limits a replay must stay within; a case passes when all three hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest absolute difference of the final latents allowed.
    pub latents_max_abs: f64,
    /// Relative L2 error of the final latents allowed.
    pub latents_relative: f64,
    /// Lowest PSNR of the decoded frames allowed, in dB (`inf` = identical bytes).
    pub frames_min_psnr: f64,
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_abs={},relative={},psnr={}",
            self.latents_max_abs, self.latents_relative, self.frames_min_psnr
        )
    }
}

impl Tolerance {
    /// Bit-identical latents and frames.
    pub const EXACT: Tolerance = Tolerance {
        latents_max_abs: 0.0,
        latents_relative: 0.0,
        frames_min_psnr: f64::INFINITY,
    };

    /// fp32 engines on different backends (CPU and CUDA, whose matmuls use TF32), or CUDA twice
    /// (cuDNN may pick other algorithms on another GPU). Measured on an H200 (docs/SNAPSHOTS.md):
    /// 1.3e-2 max-abs, 1.1e-3 relative, 56.9 dB; these limits leave about 8× of room.
    pub const FLOAT32_ACROSS_BACKENDS: Tolerance = Tolerance {
        latents_max_abs: 0.1,
        latents_relative: 0.01,
        frames_min_psnr: 40.0,
    };

    /// A reduced-precision (fp16 or bf16) engine on either side. Measured against a CPU fp32
    /// recording: fp16 1.5e-2 / 1.6e-3 / 56.6 dB, bf16 0.136 / 1.2e-2 / 49.0 dB.
    pub const REDUCED_PRECISION: Tolerance = Tolerance {
        latents_max_abs: 0.5,
        latents_relative: 0.05,
        frames_min_psnr: 35.0,
    };

    /// The default for a recording on `recorded` replayed on `replay`: exact on the CPU with the
    /// same precision, looser across backends, loosest when either engine is fp16 or bf16.
    pub fn default_for(recorded: &Platform, replay: &Platform) -> Tolerance {
        let reduced = |p: &Platform| p.precision != "fp32";
        if reduced(recorded) || reduced(replay) {
            Tolerance::REDUCED_PRECISION
        } else if recorded.backend == "cpu" && replay.backend == "cpu" {
            Tolerance::EXACT
        } else {
            Tolerance::FLOAT32_ACROSS_BACKENDS
        }
    }

    /// Parses `--tolerance`: `exact`, or comma-separated `max_abs=X`, `relative=X`, `psnr=DB`; a
    /// key left out keeps its value from `base`.
    pub fn parse(text: &str, base: Tolerance) -> Result<Tolerance> {
        let usage =
            "  fix: e.g. --tolerance exact, or --tolerance max_abs=0.01,relative=0.001,psnr=40";
        if text.trim() == "exact" {
            return Ok(Tolerance::EXACT);
        }
        let mut tolerance = base;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                RuntimeError::Invalid(format!("--tolerance: `{part}` is not KEY=VALUE\n{usage}"))
            })?;
            let number = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0 && !v.is_nan())
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!(
                        "--tolerance: `{key}` needs a number ≥ 0, got `{value}`\n{usage}"
                    ))
                })?;
            match key.trim() {
                "max_abs" => tolerance.latents_max_abs = number,
                "relative" => tolerance.latents_relative = number,
                "psnr" => tolerance.frames_min_psnr = number,
                other => {
                    return Err(RuntimeError::Invalid(format!(
                        "--tolerance: unknown key `{other}` (known: max_abs, relative, psnr)\n{usage}"
                    )));
                }
            }
        }
        Ok(tolerance)
    }

    /// Whether `comparison` is within these limits (NaN never is).
    pub fn admits(&self, comparison: &Comparison) -> bool {
        comparison.latents_max_abs <= self.latents_max_abs
            && comparison.latents_relative <= self.latents_relative
            && comparison.frames_psnr >= self.frames_min_psnr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(backend: &str, precision: &str) -> Platform {
        Platform {
            backend: backend.into(),
            precision: precision.into(),
        }
    }

    #[test]
    fn defaults_by_backend_and_precision() {
        let cpu = platform("cpu", "fp32");
        let cuda = platform("cuda", "fp32");
        let cuda_bf16 = platform("cuda", "bf16");
        assert_eq!(Tolerance::default_for(&cpu, &cpu), Tolerance::EXACT);
        assert_eq!(
            Tolerance::default_for(&cpu, &cuda),
            Tolerance::FLOAT32_ACROSS_BACKENDS
        );
        assert_eq!(
            Tolerance::default_for(&cuda, &cuda),
            Tolerance::FLOAT32_ACROSS_BACKENDS
        );
        assert_eq!(
            Tolerance::default_for(&cuda_bf16, &cuda_bf16),
            Tolerance::REDUCED_PRECISION
        );
    }

    #[test]
    fn parse_overrides_only_the_keys_given() {
        let parsed = Tolerance::parse("psnr=40, relative=0.001", Tolerance::EXACT).unwrap();
        assert_eq!(
            parsed,
            Tolerance {
                latents_max_abs: 0.0,
                latents_relative: 0.001,
                frames_min_psnr: 40.0,
            }
        );
        assert_eq!(
            Tolerance::parse("exact", Tolerance::REDUCED_PRECISION).unwrap(),
            Tolerance::EXACT
        );
        for bad in ["psnr", "speed=3", "relative=-1", "max_abs=x"] {
            let message = Tolerance::parse(bad, Tolerance::EXACT)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("fix: e.g. --tolerance"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn admits_within_limits_and_never_nan() {
        let within = Comparison {
            latents_max_abs: 0.0,
            latents_relative: 0.0,
            frames_psnr: f64::INFINITY,
        };
        assert!(Tolerance::EXACT.admits(&within));
        let off = Comparison {
            latents_max_abs: 1e-6,
            ..within
        };
        assert!(!Tolerance::EXACT.admits(&off));
        assert!(Tolerance::FLOAT32_ACROSS_BACKENDS.admits(&off));
        let nan = Comparison {
            latents_max_abs: f64::NAN,
            ..within
        };
        assert!(!Tolerance::REDUCED_PRECISION.admits(&nan));
    }
}
