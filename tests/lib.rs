//! Shared helpers for the integration tests: fixture paths and safetensors reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use skyreels_runtime::Tensor;

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A tensor read from a fixture file.
pub enum FixtureTensor {
    /// Float data (f32, or f16/bf16 upcast).
    Float(Tensor),
    /// Integer data.
    Int(Vec<usize>, Vec<i64>),
}

/// All tensors of a safetensors file plus its `__metadata__`.
pub fn read_safetensors(
    path: &Path,
) -> anyhow::Result<(HashMap<String, FixtureTensor>, HashMap<String, String>)> {
    let bytes = fs_err::read(path)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)?;
    let tensors = SafeTensors::deserialize(&bytes)?;
    let mut out = HashMap::new();
    for (name, view) in tensors.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => FixtureTensor::Float(Tensor::new(
                shape,
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )?),
            Dtype::BF16 => FixtureTensor::Float(Tensor::new(
                shape,
                data.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            )?),
            Dtype::F16 => FixtureTensor::Float(Tensor::new(
                shape,
                data.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            )?),
            Dtype::I64 => FixtureTensor::Int(
                shape,
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            other => anyhow::bail!(
                "{}: unsupported dtype {other:?} for `{name}`",
                path.display()
            ),
        };
        out.insert(name, tensor);
    }
    Ok((out, metadata.metadata().clone().unwrap_or_default()))
}

/// The float tensor `name` of a fixture.
pub fn float<'a>(tensors: &'a HashMap<String, FixtureTensor>, name: &str) -> Option<&'a Tensor> {
    match tensors.get(name) {
        Some(FixtureTensor::Float(t)) => Some(t),
        _ => None,
    }
}

/// The integer tensor `name` of a fixture.
pub fn int<'a>(tensors: &'a HashMap<String, FixtureTensor>, name: &str) -> Option<&'a [i64]> {
    match tensors.get(name) {
        Some(FixtureTensor::Int(_, v)) => Some(v),
        _ => None,
    }
}

/// A CPU fp32 manifest with no components, for tests to fill with struct-update syntax.
pub fn cpu_manifest(attention: skyreels_contract::Attention) -> skyreels_contract::Manifest {
    skyreels_contract::Manifest {
        format_version: skyreels_contract::manifest::FORMAT_VERSION,
        producer: "test".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention,
        dit: None,
        vae: None,
        text_encoder: None,
        image_encoder: None,
        build: None,
        source: None,
    }
}

/// Exports the DiT checkpoint at `checkpoint` (fp32) into a fresh engine directory.
pub fn export_dit_engine(
    checkpoint: &Path,
    attention: skyreels_contract::Attention,
) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let options = skyreels_exporter::dit::DitExportOptions {
        compute: skyreels_graph::DType::F32,
        attention,
        link_weights: true,
    };
    let export = skyreels_exporter::dit::export(checkpoint, out.path(), &options).expect("export");
    let manifest = skyreels_contract::Manifest {
        dit: Some(export.component),
        ..cpu_manifest(attention)
    };
    manifest.save(out.path()).expect("manifest");
    out
}

/// Adds the tiny diffusers-layout VAE fixture to an engine directory (graphs and manifest entry).
pub fn add_vae_to_engine(engine: &Path) {
    let options = skyreels_exporter::vae::VaeExportOptions {
        compute: skyreels_graph::DType::F32,
        link_weights: true,
    };
    let export = skyreels_exporter::vae::export(
        &fixtures_dir().join("vae").join("diffusers"),
        engine,
        &options,
    )
    .expect("vae export");
    let mut manifest = skyreels_contract::Manifest::load(engine).expect("manifest");
    manifest.vae = Some(export.component);
    manifest.save(engine).expect("manifest");
}

/// Panics with the set-up instruction when ONNX Runtime is not installed.
pub fn require_onnxruntime() {
    if let Err(e) = skyreels_runtime::onnxruntime::library_path() {
        panic!("{e}");
    }
}
