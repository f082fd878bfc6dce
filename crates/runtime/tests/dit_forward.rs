//! `skyreels dit-forward` through the real binary: the DiT parity fixtures (diffusers 0.42.1
//! outputs, `tests/fixtures/dit`) in, `velocity` out within the parity tolerance; bad input files
//! refused with the tensor named and a fix (docs/BAD_INPUT.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use skyreels_contract::Attention;
use skyreels_exporter::dit::{self, DitExportOptions};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dit")
}

/// Exports the fixture model `model` (diffusers layout, fp32, MatMul attention) into `out`.
fn export(model: &str, out: &Path) {
    let options = DitExportOptions {
        compute: skyreels_graph::DType::F32,
        attention: Attention::MatMul,
        link_weights: true,
    };
    let export = dit::export(&fixtures().join(model).join("diffusers"), out, &options).unwrap();
    let manifest = skyreels_contract::Manifest {
        format_version: skyreels_contract::manifest::FORMAT_VERSION,
        producer: "test".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention: Attention::MatMul,
        dit: Some(export.component),
        vae: None,
        text_encoder: None,
        image_encoder: None,
        build: None,
        source: None,
    };
    manifest.save(out).unwrap();
}

fn dit_forward(engine: &Path, inputs: &Path, out: &Path, extra: &[&str]) -> Output {
    dit_forward_with_env(engine, inputs, out, extra, &[])
}

/// `dit_forward` with environment variables `env` set for the process.
fn dit_forward_with_env(
    engine: &Path,
    inputs: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .arg("dit-forward")
        .arg("--engines")
        .arg(engine)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The raw bytes of the `velocity` tensor `dit-forward` wrote to `out`.
fn velocity_bytes(out: &Path) -> Vec<u8> {
    let written = fs_err::read(out).unwrap();
    let written = SafeTensors::deserialize(&written).unwrap();
    written.tensor("velocity").unwrap().data().to_vec()
}

fn floats(view: &TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A copy of the fixture `case` with tensor `name` replaced by (dtype, shape, bytes), or removed.
fn edited(case: &Path, name: &str, replacement: Option<(Dtype, Vec<usize>, Vec<u8>)>, out: &Path) {
    let bytes = fs_err::read(case).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    match replacement {
        Some(tensor) => tensors.insert(name.to_string(), tensor),
        None => tensors.remove(name),
    };
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (dtype, shape, data))| {
            (
                n.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, out).unwrap();
}

/// The fixture cases of `model`, in name order.
fn fixture_cases(model: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs_err::read_dir(fixtures().join(model).join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

/// `--causal-block-size N` when the case records one.
fn causal_flags(fixture: &SafeTensors<'_>) -> Vec<String> {
    match fixture.tensor("causal_block_size") {
        Ok(view) => {
            let size = i64::from_le_bytes(view.data()[..8].try_into().unwrap());
            vec!["--causal-block-size".into(), size.to_string()]
        }
        Err(_) => Vec::new(),
    }
}

#[test]
fn dit_forward_matches_the_dit_fixtures() {
    let work = tempfile::tempdir().unwrap();
    for model in ["df", "t2v", "i2v"] {
        let engine = work.path().join(model);
        fs_err::create_dir(&engine).unwrap();
        export(model, &engine);
        for case in fixture_cases(model) {
            let bytes = fs_err::read(&case).unwrap();
            let fixture = SafeTensors::deserialize(&bytes).unwrap();
            let causal = causal_flags(&fixture);
            let causal: Vec<&str> = causal.iter().map(String::as_str).collect();
            let out = work.path().join("velocity.safetensors");
            let output = dit_forward(&engine, &case, &out, &causal);
            assert!(
                output.status.success(),
                "{}: {}",
                case.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            let written = fs_err::read(&out).unwrap();
            let written = SafeTensors::deserialize(&written).unwrap();
            let velocity = written.tensor("velocity").unwrap();
            let expected = fixture.tensor("velocity").unwrap();
            assert_eq!(velocity.shape(), expected.shape(), "{}", case.display());
            let error = floats(&velocity)
                .iter()
                .zip(floats(&expected))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("dit-forward {}: max-abs {error:.3e}", case.display());
            assert!(error <= TOLERANCE, "{}: max-abs {error}", case.display());
        }
    }
}

#[test]
fn dit_forward_without_an_arena_is_bitwise_the_arena_forward() {
    // The CPU's default allocator (every tensor from the C library through our allocator vtable,
    // src/direct_allocator.rs, the code the GPU's SKYREELS_CUDA_ARENA=direct runs) against
    // ONNX Runtime's arena (SKYREELS_CPU_ARENA=arena).
    let work = tempfile::tempdir().unwrap();
    let engine = work.path().join("df");
    fs_err::create_dir(&engine).unwrap();
    export("df", &engine);
    let case = fixtures().join("df/cases/df_fps0.safetensors");
    let mut velocities = Vec::new();
    for arena in ["arena", "direct"] {
        let out = work.path().join(format!("velocity-{arena}.safetensors"));
        let output =
            dit_forward_with_env(&engine, &case, &out, &[], &[("SKYREELS_CPU_ARENA", arena)]);
        assert!(
            output.status.success(),
            "SKYREELS_CPU_ARENA={arena}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        velocities.push(velocity_bytes(&out));
    }
    assert!(!velocities[0].is_empty());
    assert!(
        velocities[0] == velocities[1],
        "the direct allocator changed the velocity"
    );
}

#[test]
fn dit_forward_offloaded_is_bitwise_the_resident_forward() {
    let work = tempfile::tempdir().unwrap();
    for model in ["df", "i2v"] {
        let engine = work.path().join(model);
        fs_err::create_dir(&engine).unwrap();
        export(model, &engine);
        for case in fixture_cases(model) {
            let bytes = fs_err::read(&case).unwrap();
            let fixture = SafeTensors::deserialize(&bytes).unwrap();
            let causal = causal_flags(&fixture);
            let mut velocities = Vec::new();
            for offload in [&[][..], &["--offload"][..]] {
                let extra: Vec<&str> = causal
                    .iter()
                    .map(String::as_str)
                    .chain(offload.iter().copied())
                    .collect();
                let out = work.path().join("velocity.safetensors");
                let output = dit_forward(&engine, &case, &out, &extra);
                assert!(
                    output.status.success(),
                    "{} {extra:?}: {}",
                    case.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
                velocities.push(velocity_bytes(&out));
            }
            assert!(
                velocities[0] == velocities[1],
                "{}: --offload changed the velocity",
                case.display()
            );
        }
    }
    let engine = work.path().join("df");
    let case = fixtures().join("df/cases/df_fps0.safetensors");
    let out = work.path().join("refused.safetensors");
    let output = dit_forward(
        &engine,
        &case,
        &out,
        &["--offload", "--max-gpu-memory", "1K"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("--max-gpu-memory 1.0 KiB is too small")
            && stderr.contains("fix: pass --max-gpu-memory"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn dit_forward_refuses_bad_inputs_naming_the_tensor() {
    let work = tempfile::tempdir().unwrap();
    let engine = work.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    export("df", &engine);
    let case = fixtures().join("df/cases/df_fps0.safetensors");
    let nan: Vec<u8> = [0.0f32, f32::NAN]
        .iter()
        .cycle()
        .take(2)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f32_bytes = |count: usize| vec![0u8; count * 4];
    for (label, name, replacement, expected) in [
        ("missing latents", "latents", None, "missing"),
        ("missing fps", "fps", None, "fps embedding"),
        (
            "timesteps of another frame count",
            "timesteps",
            Some((Dtype::F32, vec![1, 3], f32_bytes(3))),
            "expected [1, 2]",
        ),
        (
            "float64 timesteps",
            "timesteps",
            Some((Dtype::F64, vec![1, 2], vec![0u8; 16])),
            "float32",
        ),
        (
            "latents with odd height",
            "latents",
            Some((Dtype::F32, vec![1, 16, 2, 3, 6], f32_bytes(16 * 2 * 3 * 6))),
            "even H and W",
        ),
        (
            "NaN timestep",
            "timesteps",
            Some((Dtype::F32, vec![1, 2], nan)),
            "element 1 is NaN",
        ),
        (
            "image context on a text-to-video model",
            "image_context",
            Some((Dtype::F32, vec![1, 257, 24], f32_bytes(257 * 24))),
            "not image-to-video",
        ),
    ] {
        let inputs = work.path().join("inputs.safetensors");
        edited(&case, name, replacement, &inputs);
        let out = work.path().join("out.safetensors");
        let output = dit_forward(&engine, &inputs, &out, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{label}: accepted");
        assert!(
            stderr.contains(&format!("`{name}`"))
                && stderr.contains(expected)
                && stderr.contains("fix:"),
            "{label}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
        assert!(!out.exists(), "{label}: wrote {}", out.display());
    }
    let manifest = engine.join("manifest.yaml");
    let text = fs_err::read_to_string(&manifest).unwrap();
    fs_err::write(
        &manifest,
        text.replacen("precision: fp32", "precision: bf16", 1),
    )
    .unwrap();
    let out = work.path().join("out.safetensors");
    let output = dit_forward(&engine, &case, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("bf16 weights") && stderr.contains("fix:"),
        "{stderr}"
    );
    fs_err::write(&manifest, text).unwrap();
    let output = dit_forward(&engine, &case, &out, &["--causal-block-size", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("causal block size 0")
            && stderr.contains("fix:"),
        "{stderr}"
    );
}
