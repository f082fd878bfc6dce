//! TensorRT optimisation profiles: min/opt/max shapes for every dynamic graph input, from the
//! manifest's symbolic axes (`docs/GRAPHS.md`) and a [`ProfileConfig`] (`--profile CONFIG`, or
//! defaults derived from the model).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use skyreels_contract::io::axis;
use skyreels_contract::manifest::Manifest;
use skyreels_contract::{GraphEntry, ModelVariant, Pipeline, Resolution, recognise};

use crate::error::{BuildError, Result};

/// Spatial down-sampling of the Wan VAE (pixels per latent).
const VAE_SPATIAL_STRIDE: usize = 8;
/// DiT patch size over (height, width) in latents.
const PATCH: usize = 2;

/// The smallest, the tuned-for and the largest value of one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisRange {
    /// Smallest value the engine accepts.
    pub min: usize,
    /// Value TensorRT tunes kernels for.
    pub opt: usize,
    /// Largest value the engine accepts.
    pub max: usize,
}

impl AxisRange {
    /// A single value.
    pub fn fixed(value: usize) -> AxisRange {
        AxisRange {
            min: value,
            opt: value,
            max: value,
        }
    }

    fn at(&self, point: Point) -> usize {
        match point {
            Point::Min => self.min,
            Point::Opt => self.opt,
            Point::Max => self.max,
        }
    }
}

/// `--profile CONFIG`: the shapes a TensorRT engine is built for.
///
/// ```yaml
/// batch: {min: 1, opt: 2, max: 2}          # 2 = classifier-free guidance
/// latent_frames: {min: 1, opt: 25, max: 31} # DiT window: 97 frames = 25 latents, 121 = 31
/// resolutions: [[544, 960], [720, 1280]]    # video pixels (height, width)
/// opt_resolution: [544, 960]
/// axes: {}                                  # optional: any other symbolic axis by name
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Batch (1, or 2 with classifier-free guidance).
    pub batch: AxisRange,
    /// Latent frames per DiT call.
    pub latent_frames: AxisRange,
    /// Video sizes `[height, width]` in pixels (multiples of 16); the profile spans their latent sizes.
    pub resolutions: Vec<[usize; 2]>,
    /// The size TensorRT tunes for, one of `resolutions`.
    pub opt_resolution: [usize; 2],
    /// Ranges for other symbolic axes, by name; they override the derived ones.
    #[serde(default)]
    pub axes: BTreeMap<String, AxisRange>,
}

/// A corner of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Min,
    Opt,
    Max,
}

const POINTS: [Point; 3] = [Point::Min, Point::Opt, Point::Max];

impl ProfileConfig {
    /// Reads and checks a profile YAML.
    pub fn load(path: &Path) -> Result<ProfileConfig> {
        let config: ProfileConfig = skyreels_contract::load_yaml(path, "TensorRT profile")?;
        config
            .validate()
            .map_err(|e| BuildError::Profile(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Parses and checks profile YAML text.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<ProfileConfig> {
        let config: ProfileConfig =
            skyreels_contract::parse_yaml(text, origin, "TensorRT profile")?;
        config
            .validate()
            .map_err(|e| BuildError::Profile(format!("{}: {e}", origin.display())))?;
        Ok(config)
    }

    /// The default profile for `manifest`'s model: batch 1..2 and, from the released variants with
    /// its DiT architecture (`configs/models`), their resolutions (540P and/or 720P) and windows
    /// (`base_num_frames`, else `num_frames`) in latent frames; an unknown architecture gets 540P
    /// and 720P with windows up to 31 latent frames.
    pub fn for_model(manifest: &Manifest, variants: &[ModelVariant]) -> ProfileConfig {
        let chosen: Vec<&ModelVariant> = match &manifest.dit {
            // One variant per resolution class; DF-14B and T2V-14B share an architecture, and the
            // diffusion-forcing window is the longer of the two.
            Some(dit) => [Resolution::P540, Resolution::P720]
                .into_iter()
                .filter_map(|resolution| {
                    recognise(
                        variants,
                        &dit.config,
                        resolution,
                        Some(Pipeline::DiffusionForcing),
                    )
                    .ok()
                })
                .collect(),
            None => Vec::new(),
        };
        let window = |v: &ModelVariant| {
            v.diffusion_forcing
                .as_ref()
                .map_or(v.generation.num_frames, |d| d.base_num_frames)
        };
        let latent_frames = |frames: usize| (frames - 1) / 4 + 1;
        let (resolutions, opt_frames, max_frames) = match chosen.first() {
            Some(first) => (
                chosen
                    .iter()
                    .map(|v| [v.generation.height, v.generation.width])
                    .collect(),
                latent_frames(window(first)),
                chosen
                    .iter()
                    .map(|v| latent_frames(window(v)))
                    .max()
                    .unwrap_or(1),
            ),
            None => (vec![[544, 960], [720, 1280]], 25, 31),
        };
        ProfileConfig {
            batch: AxisRange {
                min: 1,
                opt: 2,
                max: 2,
            },
            latent_frames: AxisRange {
                min: 1,
                opt: opt_frames,
                max: max_frames,
            },
            opt_resolution: resolutions[0],
            resolutions,
            axes: BTreeMap::new(),
        }
    }

    /// Cross-field checks; the message names the bad field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ordered = |name: &str, r: &AxisRange| {
            if r.min == 0 || r.min > r.opt || r.opt > r.max {
                Err(format!(
                    "{name} needs 1 <= min <= opt <= max, got {}/{}/{}",
                    r.min, r.opt, r.max
                ))
            } else {
                Ok(())
            }
        };
        ordered("batch", &self.batch)?;
        ordered("latent_frames", &self.latent_frames)?;
        for (name, range) in &self.axes {
            ordered(&format!("axes.{name}"), range)?;
        }
        if self.resolutions.is_empty() {
            return Err("resolutions is empty".into());
        }
        let step = VAE_SPATIAL_STRIDE * PATCH;
        for [height, width] in self
            .resolutions
            .iter()
            .chain(std::iter::once(&self.opt_resolution))
        {
            if height % step != 0 || width % step != 0 || *height == 0 || *width == 0 {
                return Err(format!(
                    "resolution {height}x{width} is not a multiple of {step} pixels (VAE stride × DiT patch)"
                ));
            }
        }
        if !self.resolutions.contains(&self.opt_resolution) {
            return Err(format!(
                "opt_resolution {:?} is not one of resolutions {:?}",
                self.opt_resolution, self.resolutions
            ));
        }
        Ok(())
    }

    /// Ranges of every axis the graphs use: the base axes plus the derived ones.
    fn axis_ranges(&self, manifest: &Manifest) -> BTreeMap<String, AxisRange> {
        let latent = |pixels: usize| pixels / VAE_SPATIAL_STRIDE;
        let heights = self.resolutions.iter().map(|r| latent(r[0]));
        let widths = self.resolutions.iter().map(|r| latent(r[1]));
        let height = AxisRange {
            min: heights.clone().min().unwrap_or(0),
            opt: latent(self.opt_resolution[0]),
            max: heights.max().unwrap_or(0),
        };
        let width = AxisRange {
            min: widths.clone().min().unwrap_or(0),
            opt: latent(self.opt_resolution[1]),
            max: widths.max().unwrap_or(0),
        };
        let frames = self.latent_frames;
        let tokens = |p: Point| frames.at(p) * (height.at(p) / PATCH) * (width.at(p) / PATCH);
        let mut axes = BTreeMap::from([
            (axis::BATCH.to_string(), self.batch),
            (axis::FRAMES.to_string(), frames),
            (axis::HEIGHT.to_string(), height),
            (axis::WIDTH.to_string(), width),
            (
                axis::TOKENS.to_string(),
                AxisRange {
                    min: tokens(Point::Min),
                    opt: tokens(Point::Opt),
                    max: tokens(Point::Max),
                },
            ),
        ]);
        // The attention graph's output so far: empty at the first (or only) query block.
        axes.insert(
            axis::PREFIX_TOKENS.to_string(),
            AxisRange {
                min: 0,
                opt: 0,
                max: tokens(Point::Max),
            },
        );
        if let Some(dit) = &manifest.dit {
            axes.insert(
                axis::CONTEXT_LEN.into(),
                AxisRange::fixed(dit.config.text_len),
            );
            let image_tokens = dit.config.image_len.unwrap_or(0);
            axes.insert(
                "context_tokens".into(),
                AxisRange::fixed(dit.config.text_len + image_tokens),
            );
        }
        if let Some(text) = &manifest.text_encoder {
            axes.insert(
                skyreels_contract::text::AXIS_TOKENS.into(),
                AxisRange::fixed(text.max_length),
            );
        }
        axes.extend(self.axes.iter().map(|(k, v)| (k.clone(), *v)));
        axes
    }

    /// The min/opt/max shapes of `graph`'s dynamic inputs.
    pub fn shapes(&self, manifest: &Manifest, graph: &GraphEntry) -> Result<ProfileShapes> {
        let axes = self.axis_ranges(manifest);
        let mut corners: [Vec<(String, Vec<usize>)>; 3] = Default::default();
        for input in graph
            .inputs
            .iter()
            .filter(|i| i.shape.iter().any(|d| d.parse::<usize>().is_err()))
        {
            for (corner, point) in corners.iter_mut().zip(POINTS) {
                let dims = input
                    .shape
                    .iter()
                    .map(|dim| evaluate(dim, &axes, point))
                    .collect::<std::result::Result<Vec<usize>, String>>()
                    .map_err(|e| {
                        BuildError::Profile(format!(
                            "graph `{}` ({}), input `{}`: {e}",
                            graph.name, graph.file, input.name
                        ))
                    })?;
                corner.push((input.name.clone(), dims));
            }
        }
        let [min, opt, max] = corners;
        Ok(ProfileShapes { min, opt, max })
    }
}

/// Value of a manifest dim (`16`, `height`, `height*8`) at one corner of the profile.
fn evaluate(
    dim: &str,
    axes: &BTreeMap<String, AxisRange>,
    point: Point,
) -> std::result::Result<usize, String> {
    dim.split('*')
        .map(|factor| {
            let factor = factor.trim();
            factor.parse::<usize>().or_else(|_| {
                axes.get(factor).map(|r| r.at(point)).ok_or_else(|| {
                    format!("axis `{factor}` has no profile range\n  fix: add it under `axes:` in the --profile YAML, e.g. `{factor}: {{min: 1, opt: 1, max: 1}}`")
                })
            })
        })
        .product()
}

/// Shapes of the dynamic inputs of one graph at the profile's three corners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileShapes {
    /// Smallest shapes.
    pub min: Vec<(String, Vec<usize>)>,
    /// Tuned-for shapes.
    pub opt: Vec<(String, Vec<usize>)>,
    /// Largest shapes.
    pub max: Vec<(String, Vec<usize>)>,
}

impl ProfileShapes {
    /// ONNX Runtime's `trt_profile_*_shapes` syntax: `name:1x16x1x68x120,other:2x3`.
    pub fn render(shapes: &[(String, Vec<usize>)]) -> String {
        shapes
            .iter()
            .map(|(name, dims)| {
                format!(
                    "{name}:{}",
                    dims.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the graph has no dynamic input.
    pub fn is_empty(&self) -> bool {
        self.min.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyreels_contract::manifest::{DitComponent, FORMAT_VERSION};
    use skyreels_contract::{DitConfig, ModelType, TensorSpec};

    fn dit_config(
        dim: usize,
        num_layers: usize,
        num_heads: usize,
        ffn_dim: usize,
        inject_sample_info: bool,
    ) -> DitConfig {
        DitConfig {
            model_type: ModelType::T2v,
            in_dim: 16,
            out_dim: 16,
            dim,
            ffn_dim,
            num_heads,
            num_layers,
            freq_dim: 256,
            text_dim: 4096,
            text_len: 512,
            image_dim: None,
            image_len: None,
            eps: 1e-6,
            inject_sample_info,
        }
    }

    fn spec(name: &str, shape: &[&str]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: "float32".into(),
            shape: shape.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn manifest(config: DitConfig) -> Manifest {
        let blocks = GraphEntry {
            name: "block_out".into(),
            file: "dit_block_out.onnx".into(),
            inputs: vec![
                spec("layer_tokens", &["batch", "num_tokens", "1536"]),
                spec("context_tokens", &["batch", "context_tokens", "1536"]),
                spec("rope_cos", &["num_tokens", "64"]),
                spec("ffn.0.weight", &["8960", "1536"]),
            ],
            outputs: vec![spec("layer_output", &["batch", "num_tokens", "1536"])],
        };
        Manifest {
            format_version: FORMAT_VERSION,
            producer: "test".into(),
            target: skyreels_contract::Target::Cuda,
            precision: skyreels_contract::Precision::Bf16,
            attention: skyreels_contract::Attention::MatMul,
            dit: Some(DitComponent {
                config,
                graphs: vec![blocks],
                layers: Vec::new(),
                teacache: Vec::new(),
            }),
            vae: None,
            text_encoder: None,
            image_encoder: None,
            build: None,
            source: None,
        }
    }

    #[test]
    fn df_1_3b_defaults_to_its_540p_window() {
        let manifest = manifest(dit_config(1536, 30, 12, 8960, true));
        let profile = ProfileConfig::for_model(&manifest, &ModelVariant::builtin());
        assert_eq!(profile.resolutions, vec![[544, 960]]);
        assert_eq!(profile.opt_resolution, [544, 960]);
        assert_eq!(
            profile.batch,
            AxisRange {
                min: 1,
                opt: 2,
                max: 2
            }
        );
        assert_eq!(
            profile.latent_frames,
            AxisRange {
                min: 1,
                opt: 25,
                max: 25
            }
        );
        profile.validate().expect("valid");
    }

    #[test]
    fn fourteen_b_defaults_span_540p_and_720p_up_to_31_latent_frames() {
        let manifest = manifest(dit_config(5120, 40, 40, 13824, false));
        let profile = ProfileConfig::for_model(&manifest, &ModelVariant::builtin());
        assert_eq!(profile.resolutions, vec![[544, 960], [720, 1280]]);
        assert_eq!(
            profile.latent_frames,
            AxisRange {
                min: 1,
                opt: 25,
                max: 31
            }
        );
        let shapes = profile
            .shapes(&manifest, &manifest.dit.as_ref().expect("dit").graphs[0])
            .expect("shapes");
        // 540P latents 68×120 → 34×60 patches; 720P 90×160 → 45×80.
        assert_eq!(
            ProfileShapes::render(&shapes.min),
            "layer_tokens:1x2040x1536,context_tokens:1x512x1536,rope_cos:2040x64"
        );
        assert_eq!(
            ProfileShapes::render(&shapes.opt),
            "layer_tokens:2x51000x1536,context_tokens:2x512x1536,rope_cos:51000x64"
        );
        assert_eq!(
            ProfileShapes::render(&shapes.max),
            "layer_tokens:2x111600x1536,context_tokens:2x512x1536,rope_cos:111600x64"
        );
    }

    /// The attention graph's prefix is empty at the first query block and at most every token.
    #[test]
    fn the_attention_prefix_spans_zero_to_all_tokens() {
        let manifest = manifest(dit_config(1536, 30, 12, 8960, true));
        let profile = ProfileConfig::for_model(&manifest, &ModelVariant::builtin());
        let attention = GraphEntry {
            name: "attention".into(),
            file: "dit_attention.onnx".into(),
            inputs: vec![
                spec("query", &["batch", "num_tokens", "1536"]),
                spec("attention_prefix", &["batch", "prefix_tokens", "1536"]),
                spec("query_end", &["1"]),
            ],
            outputs: vec![],
        };
        let shapes = profile.shapes(&manifest, &attention).expect("shapes");
        assert_eq!(
            ProfileShapes::render(&shapes.min),
            "query:1x2040x1536,attention_prefix:1x0x1536"
        );
        assert_eq!(
            ProfileShapes::render(&shapes.max),
            "query:2x51000x1536,attention_prefix:2x51000x1536"
        );
    }

    #[test]
    fn unknown_architecture_gets_540p_and_720p() {
        let manifest = manifest(dit_config(32, 2, 2, 64, true));
        let profile = ProfileConfig::for_model(&manifest, &ModelVariant::builtin());
        assert_eq!(profile.resolutions, vec![[544, 960], [720, 1280]]);
        assert_eq!(
            profile.latent_frames,
            AxisRange {
                min: 1,
                opt: 25,
                max: 31
            }
        );
    }

    #[test]
    fn yaml_profile_parses_and_evaluates_vae_expressions() {
        let text = "batch: {min: 1, opt: 1, max: 2}\nlatent_frames: {min: 1, opt: 21, max: 31}\nresolutions: [[544, 960], [960, 544]]\nopt_resolution: [544, 960]\naxes:\n  extra: {min: 3, opt: 4, max: 5}\n";
        let profile = ProfileConfig::from_yaml(text, Path::new("profile.yaml")).expect("parse");
        assert_eq!(
            profile.axes["extra"],
            AxisRange {
                min: 3,
                opt: 4,
                max: 5
            }
        );
        let vae = GraphEntry {
            name: "decode_chunk".into(),
            file: "vae_decode_chunk.onnx".into(),
            inputs: vec![
                spec("latents", &["batch", "16", "1", "height", "width"]),
                spec(
                    "cache_in.decoder.conv_in",
                    &["batch", "16", "2", "height*2", "width*2"],
                ),
                spec("other", &["extra"]),
            ],
            outputs: vec![],
        };
        let shapes = profile
            .shapes(&manifest(dit_config(32, 2, 2, 64, true)), &vae)
            .expect("shapes");
        // Portrait and landscape 540P: both latent axes span 68..120.
        assert_eq!(
            ProfileShapes::render(&shapes.min),
            "latents:1x16x1x68x68,cache_in.decoder.conv_in:1x16x2x136x136,other:3"
        );
        assert_eq!(
            ProfileShapes::render(&shapes.max),
            "latents:2x16x1x120x120,cache_in.decoder.conv_in:2x16x2x240x240,other:5"
        );
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let error = |text: &str| {
            ProfileConfig::from_yaml(text, Path::new("p.yaml"))
                .unwrap_err()
                .to_string()
        };
        let base = "latent_frames: {min: 1, opt: 21, max: 31}\nresolutions: [[544, 960]]\nopt_resolution: [544, 960]\n";
        assert!(
            error(&format!("batch: {{min: 2, opt: 1, max: 2}}\n{base}"))
                .contains("batch needs 1 <= min <= opt <= max")
        );
        assert!(
            error(&format!(
                "batch: {{min: 1, opt: 1, max: 2}}\n{base}bogus: 1\n"
            ))
            .contains("bogus")
        );
        let odd = "batch: {min: 1, opt: 1, max: 1}\nlatent_frames: {min: 1, opt: 1, max: 1}\nresolutions: [[540, 960]]\nopt_resolution: [540, 960]\n";
        assert!(error(odd).contains("540x960 is not a multiple of 16"));
    }

    #[test]
    fn an_axis_without_a_range_is_an_error_naming_it() {
        let profile = ProfileConfig::for_model(&manifest(dit_config(32, 2, 2, 64, true)), &[]);
        let graph = GraphEntry {
            name: "g".into(),
            file: "g.onnx".into(),
            inputs: vec![spec("x", &["batch", "mystery"])],
            outputs: vec![],
        };
        let error = profile
            .shapes(&manifest(dit_config(32, 2, 2, 64, true)), &graph)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("axis `mystery` has no profile range"),
            "{error}"
        );
    }
}
