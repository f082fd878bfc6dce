//! `skyreels-build`'s options turned into a validated plan before any heavy work: which graphs,
//! which output files, which precision, and (TensorRT) which optimisation profiles.

use std::path::{Path, PathBuf};

use skyreels_contract::{GraphEntry, Manifest, ModelVariant};
pub use skyreels_contract::{Precision, Target};

use crate::error::{BuildError, Result};
use crate::operators::{TensorRtOperators, coverage_of_file};
use crate::profile::{ProfileConfig, ProfileShapes};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// Backend.
    pub target: Target,
    /// `--dtype`: reduced precision to allow (TensorRT) or to confirm (cpu/cuda build the graphs as exported).
    pub precision: Option<Precision>,
    /// `--profile`: TensorRT optimisation profile YAML.
    pub profile: Option<PathBuf>,
    /// GPU index for GPU targets.
    pub device: i32,
}

/// One graph to build.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphJob {
    /// Component it belongs to (`dit`, `vae`, `text_encoder`, `image_encoder`).
    pub component: &'static str,
    /// The manifest entry (its `file` is the exported graph).
    pub entry: GraphEntry,
    /// Output graph file, next to the original: `<stem>.<target>.onnx`.
    pub output: String,
    /// External weights of the output (cpu/cuda): `<stem>.<target>.weights`.
    pub weights: String,
    /// TensorRT optimisation profile of its dynamic inputs.
    pub profile: Option<ProfileShapes>,
}

/// A validated build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    /// Engine directory.
    pub engine_dir: PathBuf,
    /// Backend.
    pub target: Target,
    /// Precision recorded (and, for TensorRT, enabled in the builder).
    pub precision: Precision,
    /// GPU index.
    pub device: i32,
    /// Graphs, in manifest order, each file once.
    pub jobs: Vec<GraphJob>,
    /// Warnings to show (e.g. float64 values TensorRT computes in float32).
    pub warnings: Vec<String>,
}

/// Every graph entry of every component, in manifest order, with its component's name.
pub fn graph_entries(manifest: &Manifest) -> Vec<(&'static str, &GraphEntry)> {
    let mut entries = Vec::new();
    if let Some(dit) = &manifest.dit {
        entries.extend(dit.graphs.iter().chain(&dit.teacache).map(|g| ("dit", g)));
    }
    if let Some(vae) = &manifest.vae {
        entries.extend(vae.graphs.iter().map(|g| ("vae", g)));
    }
    if let Some(text) = &manifest.text_encoder {
        entries.extend(text.graphs.iter().map(|g| ("text_encoder", g)));
    }
    if let Some(image) = &manifest.image_encoder {
        entries.extend(image.graphs.iter().map(|g| ("image_encoder", g)));
    }
    entries
}

fn invalid(message: impl Into<String>, fix: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        message: message.into(),
        fix: fix.into(),
    }
}

/// The precision to build at, or why `requested` does not fit graphs exported as `exported`.
fn precision_for(
    target: Target,
    exported: Precision,
    requested: Option<Precision>,
) -> Result<Precision> {
    match (target, requested) {
        (Target::Cpu, _) if exported != Precision::Fp32 => Err(invalid(
            format!(
                "the graphs are {}; ONNX Runtime's CPU provider has no fp16/bf16 kernels for MatMul, Conv or attention",
                exported.name()
            ),
            "re-export with skyreels-export --target cpu (fp32), or build for --target cuda",
        )),
        (Target::Cpu, Some(p)) => Err(invalid(
            format!(
                "--dtype {} does not apply to --target cpu: CPU engines are fp32",
                p.name()
            ),
            "drop --dtype",
        )),
        (Target::Cuda, Some(p)) if p != exported => Err(invalid(
            format!(
                "--dtype {} but the graphs were exported as {}; the cuda target optimises the graphs as exported",
                p.name(),
                exported.name()
            ),
            format!(
                "re-export with skyreels-export --target cuda --dtype {}, or drop --dtype",
                p.name()
            ),
        )),
        (Target::TensorRt, Some(p)) if exported != Precision::Fp32 && p != exported => {
            Err(invalid(
                format!(
                    "--dtype {} but the graphs were exported as {}",
                    p.name(),
                    exported.name()
                ),
                format!(
                    "drop --dtype, or re-export with skyreels-export --dtype fp32 (TensorRT then picks {} kernels)",
                    p.name()
                ),
            ))
        }
        (_, requested) => Ok(requested.unwrap_or(exported)),
    }
}

/// `<stem>.<target>.<extension>` for the exported graph file `file`.
fn output_name(file: &str, target: Target, extension: &str) -> String {
    let stem = file.strip_suffix(".onnx").unwrap_or(file);
    format!("{stem}.{}.{extension}", target.name())
}

impl BuildPlan {
    /// Checks `options` against the engine at `engine_dir` and lists the work.
    pub fn new(
        engine_dir: &Path,
        manifest: &Manifest,
        options: &BuildOptions,
    ) -> Result<BuildPlan> {
        let exported = manifest.precision;
        let precision = precision_for(options.target, exported, options.precision)?;
        if options.profile.is_some() && options.target != Target::TensorRt {
            return Err(invalid(
                "--profile only applies to --target tensorrt",
                "drop --profile",
            ));
        }
        let profile = match (options.target, &options.profile) {
            (Target::TensorRt, Some(path)) => Some(ProfileConfig::load(path)?),
            (Target::TensorRt, None) => {
                Some(ProfileConfig::for_model(manifest, &ModelVariant::builtin()))
            }
            _ => None,
        };
        let mut jobs: Vec<GraphJob> = Vec::new();
        let mut warnings = Vec::new();
        let operators = TensorRtOperators::builtin();
        for (component, entry) in graph_entries(manifest) {
            if jobs.iter().any(|j| j.entry.file == entry.file) {
                continue;
            }
            if !engine_dir.join(&entry.file).is_file() {
                return Err(invalid(
                    format!(
                        "graph file {} of {component} `{}` is missing in {}",
                        entry.file,
                        entry.name,
                        engine_dir.display()
                    ),
                    "re-export the engine with skyreels-export",
                ));
            }
            let profile = match &profile {
                Some(config) => {
                    let coverage = coverage_of_file(&engine_dir.join(&entry.file), &operators)?;
                    if !coverage.unsupported_nodes.is_empty() {
                        let nodes: Vec<String> = coverage
                            .unsupported_nodes
                            .iter()
                            .map(|(node, op)| format!("{node} ({op})"))
                            .collect();
                        warnings.push(format!(
                            "{}: {} node(s) that TensorRT {} does not parse run on ONNX Runtime's CUDA provider: {}; re-export with skyreels-export --target tensorrt to keep every node in TensorRT",
                            entry.file,
                            nodes.len(),
                            operators.version,
                            nodes.join(", ")
                        ));
                    }
                    if !coverage.float64.is_empty() {
                        warnings.push(format!(
                            "{}: TensorRT computes float64 values in float32: {}",
                            entry.file,
                            coverage.float64.join(", ")
                        ));
                    }
                    Some(config.shapes(manifest, entry)?)
                }
                None => None,
            };
            jobs.push(GraphJob {
                component,
                entry: entry.clone(),
                output: output_name(&entry.file, options.target, "onnx"),
                weights: output_name(&entry.file, options.target, "weights"),
                profile,
            });
        }
        if jobs.is_empty() {
            return Err(invalid(
                format!("{} lists no graphs", engine_dir.display()),
                "export a checkpoint into it with skyreels-export",
            ));
        }
        Ok(BuildPlan {
            engine_dir: engine_dir.to_path_buf(),
            target: options.target,
            precision,
            device: options.device,
            jobs,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_rules() {
        use Precision::*;
        assert_eq!(
            precision_for(Target::Cpu, Fp32, None).expect("cpu fp32"),
            Fp32
        );
        assert!(
            precision_for(Target::Cpu, Bf16, None)
                .unwrap_err()
                .to_string()
                .contains("no fp16/bf16 kernels")
        );
        assert!(
            precision_for(Target::Cpu, Fp32, Some(Fp16))
                .unwrap_err()
                .to_string()
                .contains("CPU engines are fp32")
        );
        assert_eq!(
            precision_for(Target::Cuda, Bf16, None).expect("cuda bf16"),
            Bf16
        );
        assert_eq!(
            precision_for(Target::Cuda, Bf16, Some(Bf16)).expect("cuda bf16"),
            Bf16
        );
        let error = precision_for(Target::Cuda, Fp32, Some(Fp16))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("skyreels-export --target cuda --dtype fp16"),
            "{error}"
        );
        assert_eq!(
            precision_for(Target::TensorRt, Fp32, Some(Fp16)).expect("trt fp16 kernels"),
            Fp16
        );
        assert_eq!(
            precision_for(Target::TensorRt, Bf16, None).expect("trt bf16"),
            Bf16
        );
        assert!(precision_for(Target::TensorRt, Bf16, Some(Fp16)).is_err());
    }

    #[test]
    fn output_names_sit_next_to_the_originals() {
        assert_eq!(
            output_name("dit_blocks.onnx", Target::Cpu, "onnx"),
            "dit_blocks.cpu.onnx"
        );
        assert_eq!(
            output_name("vae_decode_chunk.onnx", Target::Cuda, "weights"),
            "vae_decode_chunk.cuda.weights"
        );
        assert_eq!(
            output_name("text_encoder.onnx", Target::TensorRt, "onnx"),
            "text_encoder.tensorrt.onnx"
        );
    }
}
