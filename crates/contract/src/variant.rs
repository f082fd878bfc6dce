//! The released SkyReels-V2 models as data (`configs/models/*.yaml`): architecture, upstream's
//! sampling defaults and TeaCache fits (SPEC.md §1.1, §3.6, §4, §6;
//! <https://github.com/SkyworkAI/SkyReels-V2/blob/main/README.md>).
//!
//! A checkpoint's variant is recognised from its architecture plus an explicit resolution choice,
//! never from its path: the 540P and 720P releases of a model share one architecture, and so do
//! DF-14B and T2V-14B (there the sampling loop breaks the tie).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{DitConfig, ModelType};
use crate::yaml::{YamlError, load_yaml, parse_yaml};

/// What a variant file is, in error messages.
const WHAT: &str = "model variant config";

/// The sampling loop upstream runs a model with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    /// Diffusion forcing (`generate_video_df.py`): per-frame timesteps, asynchronous mode, long videos.
    #[serde(alias = "diffusion-forcing")]
    DiffusionForcing,
    /// Synchronous text- or image-to-video (`generate_video.py`): one window, one timestep.
    Synchronous,
}

/// Resolution class of a checkpoint (upstream `--resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// 544×960.
    #[serde(rename = "540P", alias = "540p")]
    P540,
    /// 720×1280.
    #[serde(rename = "720P", alias = "720p")]
    P720,
}

impl Resolution {
    /// Upstream's pixel size `(height, width)` for this class (landscape).
    pub fn size(self) -> (usize, usize) {
        match self {
            Resolution::P540 => (544, 960),
            Resolution::P720 => (720, 1280),
        }
    }

    /// The class of a requested frame size: 720P from 720×1280 pixels up (either orientation), else 540P.
    pub fn of_size(height: usize, width: usize) -> Resolution {
        if height.saturating_mul(width) >= 720 * 1280 {
            Resolution::P720
        } else {
            Resolution::P540
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resolution::P540 => "540P",
            Resolution::P720 => "720P",
        })
    }
}

/// Upstream's defaults for one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationDefaults {
    /// Pixel height (multiple of 16).
    pub height: usize,
    /// Pixel width (multiple of 16).
    pub width: usize,
    /// Pixel frames (4k+1): 97 for 540P, 121 for 720P.
    pub num_frames: usize,
    /// Inference steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f32,
    /// Flow shift of the sigma schedule.
    pub shift: f64,
    /// Output frames per second (24 → fps bucket 1 on models with the fps embedding).
    pub fps: u32,
    /// The negative prompt upstream's CLI passes.
    pub negative_prompt: String,
}

/// Upstream's diffusion-forcing recipe (DF models only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionForcingDefaults {
    /// Window length in pixel frames for long videos (4k+1).
    pub base_num_frames: usize,
    /// Overlap between long-video windows in pixel frames (4k+1).
    pub overlap_history: usize,
    /// Re-noise level of conditioning prefixes (README: 20, at most 50).
    pub addnoise_condition: f32,
    /// Asynchronous offset between frame blocks (0 = synchronous; the async recipe uses 5).
    pub ar_step: usize,
    /// Latent frames per block (1; the async recipe uses 5).
    pub causal_block_size: usize,
}

/// TeaCache's rescaling fits and thresholds for one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeaCacheDefaults {
    /// Accumulated rescaled distance below which blocks are skipped (upstream CLI default 0.2).
    pub threshold: f64,
    /// Threshold upstream's README recipes use together with retention steps (0.3).
    pub threshold_with_retention: f64,
    /// Polynomial (highest degree first) for the modulation probe `e0` with retention steps
    /// (upstream `--use_ret_steps`).
    pub coefficients_with_retention: [f64; 5],
    /// Polynomial (highest degree first) for the time-embedding probe `e` without retention steps.
    pub coefficients_without_retention: [f64; 5],
}

impl TeaCacheDefaults {
    /// The polynomial for the chosen probe.
    pub fn coefficients(&self, use_retention: bool) -> [f64; 5] {
        if use_retention {
            self.coefficients_with_retention
        } else {
            self.coefficients_without_retention
        }
    }
}

/// One released SkyReels-V2 model (one file of `configs/models/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelVariant {
    /// Short name, equal to the file stem (`df-1.3b-540p`).
    pub name: String,
    /// Hugging Face repository of the original-format checkpoint.
    pub huggingface_id: String,
    /// Sampling loop upstream runs the model with.
    pub pipeline: Pipeline,
    /// Resolution class the checkpoint was trained for.
    pub resolution: Resolution,
    /// Architecture, in the form the exporter derives and the engine manifest records.
    pub architecture: DitConfig,
    /// Upstream's generation defaults.
    pub generation: GenerationDefaults,
    /// Upstream's diffusion-forcing recipe; present exactly for DF models.
    #[serde(default)]
    pub diffusion_forcing: Option<DiffusionForcingDefaults>,
    /// TeaCache fits and thresholds.
    pub teacache: TeaCacheDefaults,
}

/// `configs/models/*.yaml`, embedded so the binaries work without a configs directory.
const BUILTIN: [(&str, &str); 8] = [
    (
        "df-1.3b-540p",
        include_str!("../../../configs/models/df-1.3b-540p.yaml"),
    ),
    (
        "df-14b-540p",
        include_str!("../../../configs/models/df-14b-540p.yaml"),
    ),
    (
        "df-14b-720p",
        include_str!("../../../configs/models/df-14b-720p.yaml"),
    ),
    (
        "t2v-14b-540p",
        include_str!("../../../configs/models/t2v-14b-540p.yaml"),
    ),
    (
        "t2v-14b-720p",
        include_str!("../../../configs/models/t2v-14b-720p.yaml"),
    ),
    (
        "i2v-1.3b-540p",
        include_str!("../../../configs/models/i2v-1.3b-540p.yaml"),
    ),
    (
        "i2v-14b-540p",
        include_str!("../../../configs/models/i2v-14b-540p.yaml"),
    ),
    (
        "i2v-14b-720p",
        include_str!("../../../configs/models/i2v-14b-720p.yaml"),
    ),
];

fn is_4k_plus_1(n: usize) -> bool {
    n > 0 && (n - 1).is_multiple_of(4)
}

impl ModelVariant {
    /// Reads and checks one variant file.
    pub fn load(path: &Path) -> Result<ModelVariant, YamlError> {
        let variant: ModelVariant = load_yaml(path, WHAT)?;
        variant.check(path)?;
        Ok(variant)
    }

    /// Parses and checks variant YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<ModelVariant, YamlError> {
        let variant: ModelVariant = parse_yaml(text, origin, WHAT)?;
        variant.check(origin)?;
        Ok(variant)
    }

    /// The eight released variants, from the YAML compiled into the binary.
    pub fn builtin() -> Vec<ModelVariant> {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                let origin = Path::new("configs/models").join(format!("{name}.yaml"));
                ModelVariant::from_yaml(text, &origin).unwrap_or_else(|e| {
                    panic!("built-in variant config is broken (a build bug): {e}")
                })
            })
            .collect()
    }

    /// File stems of the built-in variants.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    /// Cross-field checks: the name matches the file, sizes are valid, DF settings only on DF models.
    pub fn validate(&self) -> Result<(), String> {
        self.architecture.validate()?;
        let g = &self.generation;
        if !is_4k_plus_1(g.num_frames) {
            return Err(format!(
                "generation.num_frames {} is not of the form 4k+1",
                g.num_frames
            ));
        }
        if g.height == 0
            || !g.height.is_multiple_of(16)
            || g.width == 0
            || !g.width.is_multiple_of(16)
        {
            return Err(format!(
                "generation size {}x{} is not a multiple of 16",
                g.height, g.width
            ));
        }
        if (g.height, g.width) != self.resolution.size() {
            return Err(format!(
                "generation size {}x{} is not the {} size {:?}",
                g.height,
                g.width,
                self.resolution,
                self.resolution.size()
            ));
        }
        if g.steps == 0 {
            return Err("generation.steps must be at least 1".into());
        }
        match (&self.diffusion_forcing, self.pipeline) {
            (Some(df), Pipeline::DiffusionForcing) => {
                if !is_4k_plus_1(df.base_num_frames)
                    || !is_4k_plus_1(df.overlap_history)
                    || df.overlap_history >= df.base_num_frames
                {
                    return Err(format!(
                        "diffusion_forcing: base_num_frames {} and overlap_history {} must be 4k+1 with overlap < base",
                        df.base_num_frames, df.overlap_history
                    ));
                }
                if df.causal_block_size == 0 {
                    return Err("diffusion_forcing.causal_block_size must be at least 1".into());
                }
            }
            (None, Pipeline::Synchronous) => {}
            (None, Pipeline::DiffusionForcing) => {
                return Err("a diffusion_forcing model needs a diffusion_forcing section".into());
            }
            (Some(_), Pipeline::Synchronous) => {
                return Err("a synchronous model has no diffusion_forcing section".into());
            }
        }
        let t = &self.teacache;
        for threshold in [t.threshold, t.threshold_with_retention] {
            if !(threshold.is_finite() && threshold > 0.0) {
                return Err(format!(
                    "teacache threshold {threshold} must be a positive number"
                ));
            }
        }
        if t.coefficients_with_retention
            .iter()
            .chain(&t.coefficients_without_retention)
            .any(|c| !c.is_finite())
        {
            return Err("teacache coefficients must be finite numbers".into());
        }
        Ok(())
    }

    fn check(&self, origin: &Path) -> Result<(), YamlError> {
        let stem = origin
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut result = self.validate();
        if result.is_ok() && stem != self.name {
            result = Err(format!(
                "name `{}` differs from the file name `{stem}`",
                self.name
            ));
        }
        result.map_err(|message| YamlError::Parse {
            path: origin.to_path_buf(),
            what: WHAT,
            message,
        })
    }

    /// Whether `architecture` is this variant's (sizes, conditioning and the fps embedding;
    /// eps and text length are settings, not identity).
    pub fn matches(&self, architecture: &DitConfig) -> bool {
        let a = &self.architecture;
        a.model_type == architecture.model_type
            && a.dim == architecture.dim
            && a.ffn_dim == architecture.ffn_dim
            && a.num_heads == architecture.num_heads
            && a.num_layers == architecture.num_layers
            && a.in_dim == architecture.in_dim
            && a.out_dim == architecture.out_dim
            && a.freq_dim == architecture.freq_dim
            && a.text_dim == architecture.text_dim
            && a.image_dim == architecture.image_dim
            && a.inject_sample_info == architecture.inject_sample_info
    }
}

/// Why no single variant fits a checkpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecognitionError {
    /// No released model has this architecture.
    #[error(
        "no released SkyReels-V2 model has this architecture ({architecture}); released: {released}\n  fix: use a released checkpoint, or give the settings that depend on the model explicitly (e.g. --teacache-coefficients)"
    )]
    UnknownArchitecture {
        /// The architecture, summarised.
        architecture: String,
        /// The released variants' names.
        released: String,
    },
    /// The architecture is released, but not at the chosen resolution.
    #[error(
        "{model} was not released at {resolution} (released: {released})\n  fix: choose --resolution {released}"
    )]
    NoSuchResolution {
        /// The model, e.g. `I2V-1.3B`.
        model: String,
        /// The resolution asked for.
        resolution: Resolution,
        /// Resolutions it was released at.
        released: String,
    },
    /// Several released checkpoints share the architecture and the choices do not tell them apart.
    #[error(
        "{candidates} share this architecture at {resolution}\n  fix: choose the sampling loop (--pipeline diffusion-forcing or synchronous)"
    )]
    Ambiguous {
        /// The candidates' names.
        candidates: String,
        /// The resolution asked for.
        resolution: Resolution,
    },
}

/// A DiT architecture in one line, for messages.
pub fn describe_architecture(architecture: &DitConfig) -> String {
    format!(
        "{}, dim {}, {} layers, {} heads, ffn {}, in_dim {}, {} fps embedding",
        match architecture.model_type {
            ModelType::T2v => "t2v",
            ModelType::I2v => "i2v",
        },
        architecture.dim,
        architecture.num_layers,
        architecture.num_heads,
        architecture.ffn_dim,
        architecture.in_dim,
        if architecture.inject_sample_info {
            "with"
        } else {
            "no"
        }
    )
}

fn names<'a>(variants: impl Iterator<Item = &'a ModelVariant>) -> String {
    variants
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the variant of a checkpoint: the variants whose architecture matches, at `resolution`;
/// when several remain (DF-14B and T2V-14B), `pipeline` chooses. Paths are never consulted.
pub fn recognise<'a>(
    variants: &'a [ModelVariant],
    architecture: &DitConfig,
    resolution: Resolution,
    pipeline: Option<Pipeline>,
) -> Result<&'a ModelVariant, RecognitionError> {
    let same_architecture: Vec<&ModelVariant> = variants
        .iter()
        .filter(|v| v.matches(architecture))
        .collect();
    if same_architecture.is_empty() {
        return Err(RecognitionError::UnknownArchitecture {
            architecture: describe_architecture(architecture),
            released: names(variants.iter()),
        });
    }
    let at_resolution: Vec<&ModelVariant> = same_architecture
        .iter()
        .copied()
        .filter(|v| v.resolution == resolution)
        .collect();
    if at_resolution.is_empty() {
        let mut released: Vec<String> = same_architecture
            .iter()
            .map(|v| v.resolution.to_string())
            .collect();
        released.dedup();
        let model = same_architecture[0]
            .name
            .rsplit_once('-')
            .map_or(same_architecture[0].name.as_str(), |(model, _)| model);
        return Err(RecognitionError::NoSuchResolution {
            model: model.to_uppercase(),
            resolution,
            released: released.join(" or "),
        });
    }
    if let [only] = at_resolution[..] {
        return Ok(only);
    }
    let chosen: Vec<&ModelVariant> = at_resolution
        .iter()
        .copied()
        .filter(|v| Some(v.pipeline) == pipeline)
        .collect();
    match chosen[..] {
        [only] => Ok(only),
        _ => Err(RecognitionError::Ambiguous {
            candidates: names(at_resolution.into_iter()),
            resolution,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/models")
    }

    #[test]
    fn every_variant_file_parses_and_is_built_in() {
        let mut stems = Vec::new();
        for entry in fs_err::read_dir(configs_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let variant = ModelVariant::load(&path).unwrap_or_else(|e| panic!("{e}"));
                let builtin = ModelVariant::builtin()
                    .into_iter()
                    .find(|v| v.name == variant.name);
                assert_eq!(
                    builtin.as_ref(),
                    Some(&variant),
                    "{} is not embedded (add it to BUILTIN)",
                    path.display()
                );
                stems.push(variant.name);
            }
        }
        stems.sort();
        let mut builtin: Vec<&str> = ModelVariant::builtin_names().collect();
        builtin.sort();
        assert_eq!(stems, builtin);
    }

    #[test]
    fn released_values_are_upstreams() {
        let variants = ModelVariant::builtin();
        let by_name = |name: &str| variants.iter().find(|v| v.name == name).unwrap();
        let df = by_name("df-1.3b-540p");
        assert_eq!(
            (
                df.architecture.dim,
                df.architecture.num_layers,
                df.architecture.num_heads
            ),
            (1536, 30, 12)
        );
        assert!(df.architecture.inject_sample_info);
        assert_eq!(df.diffusion_forcing.as_ref().unwrap().base_num_frames, 97);
        assert_eq!(df.teacache.coefficients(true)[0], -5.21862437e4);
        let i2v = by_name("i2v-14b-720p");
        assert_eq!(
            (i2v.architecture.in_dim, i2v.architecture.image_dim),
            (36, Some(1280))
        );
        assert_eq!(
            (
                i2v.generation.height,
                i2v.generation.width,
                i2v.generation.num_frames
            ),
            (720, 1280, 121)
        );
        assert_eq!(
            i2v.teacache.coefficients(false),
            [
                -114.36346466,
                65.26524496,
                -18.82220707,
                4.91518089,
                -0.23412683
            ]
        );
        assert_eq!(
            by_name("t2v-14b-540p").teacache,
            by_name("df-14b-720p").teacache
        );
        for variant in &variants {
            let chinese = variant.generation.negative_prompt.starts_with("色调艳丽");
            assert_eq!(
                chinese,
                variant.pipeline == Pipeline::DiffusionForcing,
                "{}",
                variant.name
            );
        }
    }

    fn architecture(model_type: ModelType, large: bool, fps: bool) -> DitConfig {
        let (dim, ffn_dim, num_heads, num_layers) = if large {
            (5120, 13824, 40, 40)
        } else {
            (1536, 8960, 12, 30)
        };
        let i2v = model_type == ModelType::I2v;
        DitConfig {
            model_type,
            in_dim: if i2v { 36 } else { 16 },
            out_dim: 16,
            dim,
            ffn_dim,
            num_heads,
            num_layers,
            freq_dim: 256,
            text_dim: 4096,
            text_len: 512,
            image_dim: i2v.then_some(1280),
            image_len: i2v.then_some(257),
            eps: 1e-6,
            inject_sample_info: fps,
        }
    }

    #[test]
    fn recognition_maps_architectures_to_their_files() {
        use ModelType::{I2v, T2v};
        use Pipeline::{DiffusionForcing as Df, Synchronous as Sync};
        use Resolution::{P540, P720};
        let variants = ModelVariant::builtin();
        let cases = [
            (architecture(T2v, false, true), P540, None, "df-1.3b-540p"),
            (
                architecture(T2v, false, true),
                P540,
                Some(Sync),
                "df-1.3b-540p",
            ),
            (
                architecture(T2v, true, false),
                P540,
                Some(Df),
                "df-14b-540p",
            ),
            (
                architecture(T2v, true, false),
                P720,
                Some(Df),
                "df-14b-720p",
            ),
            (
                architecture(T2v, true, false),
                P540,
                Some(Sync),
                "t2v-14b-540p",
            ),
            (
                architecture(T2v, true, false),
                P720,
                Some(Sync),
                "t2v-14b-720p",
            ),
            (architecture(I2v, false, false), P540, None, "i2v-1.3b-540p"),
            (
                architecture(I2v, true, false),
                P540,
                Some(Df),
                "i2v-14b-540p",
            ),
            (architecture(I2v, true, false), P720, None, "i2v-14b-720p"),
        ];
        for (config, resolution, pipeline, expected) in cases {
            let found = recognise(&variants, &config, resolution, pipeline)
                .unwrap_or_else(|e| panic!("{expected}: {e}"));
            assert_eq!(found.name, expected);
        }
    }

    #[test]
    fn recognition_refuses_what_it_cannot_tell() {
        let variants = ModelVariant::builtin();
        let ambiguous = recognise(
            &variants,
            &architecture(ModelType::T2v, true, false),
            Resolution::P540,
            None,
        )
        .unwrap_err();
        assert!(
            ambiguous.to_string().contains("df-14b-540p, t2v-14b-540p")
                && ambiguous.to_string().contains("--pipeline"),
            "{ambiguous}"
        );
        let missing = recognise(
            &variants,
            &architecture(ModelType::I2v, false, false),
            Resolution::P720,
            None,
        )
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("I2V-1.3B was not released at 720P")
                && missing.to_string().contains("--resolution 540P"),
            "{missing}"
        );
        let mut tiny = architecture(ModelType::T2v, false, true);
        tiny.dim = 24;
        tiny.num_layers = 2;
        let unknown = recognise(&variants, &tiny, Resolution::P540, None).unwrap_err();
        assert!(
            unknown.to_string().contains("dim 24, 2 layers")
                && unknown.to_string().contains("fix:"),
            "{unknown}"
        );
        let t2v_1_3b = recognise(
            &variants,
            &architecture(ModelType::T2v, false, false),
            Resolution::P540,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(t2v_1_3b, RecognitionError::UnknownArchitecture { .. }),
            "T2V-1.3B was never released"
        );
    }

    #[test]
    fn resolution_classes_follow_pixel_count() {
        assert_eq!(Resolution::of_size(544, 960), Resolution::P540);
        assert_eq!(Resolution::of_size(960, 544), Resolution::P540);
        assert_eq!(Resolution::of_size(720, 1280), Resolution::P720);
        assert_eq!(Resolution::of_size(1280, 720), Resolution::P720);
        assert_eq!(Resolution::of_size(64, 96), Resolution::P540);
    }

    #[test]
    fn bad_variant_files_are_refused_naming_the_problem() {
        let text = BUILTIN[0].1;
        let origin = Path::new("configs/models/df-1.3b-540p.yaml");
        let unknown = ModelVariant::from_yaml(&format!("{text}colour: red\n"), origin)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("colour") && unknown.contains("df-1.3b-540p.yaml"),
            "{unknown}"
        );
        let renamed = ModelVariant::from_yaml(text, Path::new("other.yaml"))
            .unwrap_err()
            .to_string();
        assert!(renamed.contains("differs from the file name"), "{renamed}");
        let frames =
            ModelVariant::from_yaml(&text.replace("num_frames: 97", "num_frames: 96"), origin)
                .unwrap_err()
                .to_string();
        assert!(frames.contains("4k+1"), "{frames}");
        let truncated: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
        let truncated = ModelVariant::from_yaml(&truncated, origin)
            .unwrap_err()
            .to_string();
        assert!(
            truncated.contains("not a valid model variant config"),
            "{truncated}"
        );
    }
}
