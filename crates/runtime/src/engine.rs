//! An engine directory opened for running: its manifest plus checks that it fits this runtime.
//! When `skyreels-build` has recorded a build, the graphs resolve to the optimised files it wrote,
//! and loading refuses a backend, GPU or ONNX Runtime version other than the one it was built for.

use std::path::{Path, PathBuf};

use skyreels_contract::manifest::{BuildRecord, Component};
use skyreels_contract::{GraphEntry, Manifest, Target};

use crate::error::{Result, RuntimeError};
use crate::session::Backend;

/// An opened engine directory.
pub struct Engine {
    /// Directory path.
    pub dir: PathBuf,
    /// Its manifest; with a build record, graph `file`s already name the optimised graphs.
    pub manifest: Manifest,
}

impl Engine {
    /// Reads `dir/manifest.yaml` and, when it records a build, points every graph at its optimised file.
    pub fn open(dir: &Path) -> Result<Engine> {
        if !dir
            .join(skyreels_contract::manifest::MANIFEST_FILE)
            .is_file()
        {
            return Err(RuntimeError::Engine {
                path: dir.to_path_buf(),
                message: "no manifest.yaml here\n  fix: point --engines at a directory written by skyreels-export".into(),
            });
        }
        let mut manifest = Manifest::load(dir)?;
        if let Some(record) = manifest.build.clone() {
            for entry in graph_entries(&mut manifest) {
                if let Some(optimised) = record.files.get(&entry.file) {
                    if !dir.join(optimised).is_file() {
                        return Err(RuntimeError::Engine {
                            path: dir.to_path_buf(),
                            message: format!(
                                "optimised graph {optimised} (built from {}) is missing\n  fix: rebuild with skyreels-build {} --target {}",
                                entry.file,
                                dir.display(),
                                record.backend
                            ),
                        });
                    }
                    entry.file = optimised.clone();
                }
            }
        }
        Ok(Engine {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Refuses to run on `backend` an engine built for another backend, GPU or ONNX Runtime
    /// version. TensorRT runs only engines built for it, and first needs its libraries and a GPU.
    pub fn check_backend(&self, backend: &Backend) -> Result<()> {
        if let Backend::TensorRt { device } = backend {
            let library = crate::onnxruntime::library_path()?;
            crate::requirements::check(Target::TensorRt, &library, *device).map_err(
                |unavailable| RuntimeError::BackendUnavailable(unavailable.describe("run on")),
            )?;
        }
        let Some(record) = &self.manifest.build else {
            if backend.target() == Target::TensorRt {
                return Err(self.error(format!(
                    "is not built for tensorrt: TensorRT runs the engines skyreels-build writes\n  fix: skyreels-build {} --target tensorrt",
                    self.dir.display()
                )));
            }
            return Ok(());
        };
        let run = RunTarget::of(backend)?;
        check_build(record, &run).map_err(|message| {
            self.error(format!(
                "{message}\n  fix: rebuild with skyreels-build {} --target {}",
                self.dir.display(),
                run.backend
            ))
        })
    }

    /// The error for a component this engine lacks: where the export looked for it and for what
    /// (when the manifest records it), and how to get an engine that has it.
    pub fn missing(&self, component: Component) -> RuntimeError {
        let files = match component {
            Component::Dit => {
                "a DiT checkpoint (a diffusers snapshot's transformer/, or the original *.safetensors with config.json)"
            }
            Component::Vae => "a VAE (a diffusers snapshot's vae/, or Wan2.1_VAE.pth)",
            Component::TextEncoder => {
                "a text encoder (a diffusers snapshot's text_encoder/ and tokenizer/, or models_t5_umt5-xxl-enc-bf16.pth with google/umt5-xxl/)"
            }
            Component::ImageEncoder => {
                "an image encoder (an I2V diffusers snapshot's image_encoder/, or models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth)"
            }
        };
        let out = self.dir.display();
        let source = self.manifest.source.as_ref();
        let message = match source.and_then(|s| Some((s, s.missing(component)?))) {
            Some((source, missing)) => {
                let get = match (&source.revision, &source.commit) {
                    (Some(revision), Some(_)) => format!(
                        "complete the cached snapshot (`hf download {} --revision {revision}`)",
                        source.checkpoint
                    ),
                    _ => format!("add {} to {}", missing.looked_for, missing.looked_in),
                };
                format!(
                    "has no {component}: skyreels-export found none in {} (looked for {}) and exported without it (--require dit)\n  fix: {get}, then export again: skyreels-export {} --out {out} --force",
                    missing.looked_in,
                    missing.looked_for,
                    source.export_arguments()
                )
            }
            None => format!(
                "has no {component}\n  fix: export a checkpoint with {files}: skyreels-export CHECKPOINT --out {out} --force"
            ),
        };
        self.error(message)
    }

    /// An error about this engine.
    pub fn error(&self, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Engine {
            path: self.dir.clone(),
            message: message.into(),
        }
    }

    /// Graph `name` of `component`'s `graphs`, or the error saying the manifest lacks it.
    pub fn graph<'g>(
        &self,
        graphs: &'g [GraphEntry],
        component: Component,
        name: &str,
    ) -> Result<&'g GraphEntry> {
        graphs.iter().find(|g| g.name == name).ok_or_else(|| {
            self.error(format!(
                "manifest lists no {component} graph `{name}`\n  fix: re-export the engine with skyreels-export"
            ))
        })
    }
}

/// Every graph entry of every component, in manifest order.
fn graph_entries(manifest: &mut Manifest) -> impl Iterator<Item = &mut GraphEntry> {
    let dit = manifest
        .dit
        .as_mut()
        .into_iter()
        .flat_map(|d| d.graphs.iter_mut().chain(d.teacache.iter_mut()));
    let vae = manifest
        .vae
        .as_mut()
        .into_iter()
        .flat_map(|c| c.graphs.iter_mut());
    let text = manifest
        .text_encoder
        .as_mut()
        .into_iter()
        .flat_map(|c| c.graphs.iter_mut());
    let image = manifest
        .image_encoder
        .as_mut()
        .into_iter()
        .flat_map(|c| c.graphs.iter_mut());
    dit.chain(vae).chain(text).chain(image)
}

/// What this run executes on, in the terms of a [`BuildRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTarget {
    /// The backend.
    pub backend: Target,
    /// The GPU's name (`nvidia-smi`), for GPU backends.
    pub gpu: Option<String>,
    /// ONNX Runtime version of the loaded library.
    pub onnxruntime_version: String,
}

impl RunTarget {
    /// The target of `backend` in this process (loads ONNX Runtime to read its version).
    pub fn of(backend: &Backend) -> Result<RunTarget> {
        let onnxruntime_version = onnxruntime_version()?;
        Ok(RunTarget {
            backend: backend.target(),
            gpu: backend.device().and_then(gpu_name),
            onnxruntime_version,
        })
    }
}

/// Version of the ONNX Runtime library this process loads, from its file name (the official
/// packages ship `libonnxruntime.so.<version>`; a `libonnxruntime.so` link is followed).
pub fn onnxruntime_version() -> Result<String> {
    let path = crate::onnxruntime::library_path()?;
    let resolved = fs_err::canonicalize(&path)?;
    let name = resolved
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match name.strip_prefix("libonnxruntime.so.") {
        Some(version)
            if version.split('.').count() == 3
                && version.split('.').all(|p| p.parse::<u32>().is_ok()) =>
        {
            Ok(version.to_string())
        }
        _ => Err(RuntimeError::OnnxRuntimeLoad(format!(
            "cannot tell the ONNX Runtime version of {}: its file name carries none\n  fix: point ORT_DYLIB_PATH at the versioned library, libonnxruntime.so.<major>.<minor>.<patch>",
            resolved.display()
        ))),
    }
}

/// Name of NVIDIA GPU `device` as `nvidia-smi` reports it (`NVIDIA H100 80GB HBM3`); `None` without one.
pub fn gpu_name(device: i32) -> Option<String> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            "-i",
            &device.to_string(),
        ])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !name.is_empty()).then_some(name)
}

fn describe(backend: Target, gpu: Option<&str>, onnxruntime_version: &str) -> String {
    match gpu {
        Some(gpu) => format!("{backend} on {gpu} with ONNX Runtime {onnxruntime_version}"),
        None => format!("{backend} with ONNX Runtime {onnxruntime_version}"),
    }
}

/// Whether an engine built as `record` may run as `run`: same backend, same GPU model, same ONNX
/// Runtime version (optimised graphs hold backend- and version-specific fused operators). The error
/// reads "built for cuda on NVIDIA H100 with ONNX Runtime 1.31.1; this run uses cpu with …".
pub fn check_build(record: &BuildRecord, run: &RunTarget) -> std::result::Result<(), String> {
    if record.backend == run.backend
        && record.gpu == run.gpu
        && record.onnxruntime_version == run.onnxruntime_version
    {
        return Ok(());
    }
    Err(format!(
        "built for {}; this run uses {}",
        describe(
            record.backend,
            record.gpu.as_deref(),
            &record.onnxruntime_version
        ),
        describe(run.backend, run.gpu.as_deref(), &run.onnxruntime_version)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(backend: Target, gpu: Option<&str>, version: &str) -> BuildRecord {
        BuildRecord {
            backend,
            precision: skyreels_contract::Precision::Fp32,
            onnxruntime_version: version.into(),
            gpu: gpu.map(String::from),
            files: Default::default(),
        }
    }

    fn run(backend: Target, gpu: Option<&str>, version: &str) -> RunTarget {
        RunTarget {
            backend,
            gpu: gpu.map(String::from),
            onnxruntime_version: version.into(),
        }
    }

    #[test]
    fn same_backend_gpu_and_version_pass() {
        assert_eq!(
            check_build(
                &record(Target::Cpu, None, "1.31.1"),
                &run(Target::Cpu, None, "1.31.1")
            ),
            Ok(())
        );
        let h100 = Some("NVIDIA H100 80GB HBM3");
        assert_eq!(
            check_build(
                &record(Target::Cuda, h100, "1.31.1"),
                &run(Target::Cuda, h100, "1.31.1")
            ),
            Ok(())
        );
    }

    #[test]
    fn another_backend_is_refused_with_both_sides_named() {
        let error = check_build(
            &record(Target::Cuda, Some("NVIDIA H100"), "1.31.1"),
            &run(Target::Cpu, None, "1.31.1"),
        )
        .unwrap_err();
        assert_eq!(
            error,
            "built for cuda on NVIDIA H100 with ONNX Runtime 1.31.1; this run uses cpu with ONNX Runtime 1.31.1"
        );
    }

    #[test]
    fn another_gpu_or_version_is_refused() {
        let built = record(Target::Cuda, Some("NVIDIA H100 80GB HBM3"), "1.31.1");
        let error = check_build(
            &built,
            &run(Target::Cuda, Some("NVIDIA A100-SXM4-80GB"), "1.31.1"),
        )
        .unwrap_err();
        assert!(
            error.contains("this run uses cuda on NVIDIA A100-SXM4-80GB"),
            "{error}"
        );
        let error = check_build(
            &record(Target::Cpu, None, "1.31.1"),
            &run(Target::Cpu, None, "1.32.0"),
        )
        .unwrap_err();
        assert!(
            error.contains(
                "built for cpu with ONNX Runtime 1.31.1; this run uses cpu with ONNX Runtime 1.32.0"
            ),
            "{error}"
        );
    }
}
