//! The `skyreels-build` binary's exit status and messages (the library is tested in the workspace's
//! `tests/integration/engines.rs`; only this package's tests can run its binary).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use skyreels_contract::manifest::{DitComponent, FORMAT_VERSION};
use skyreels_contract::{DitConfig, GraphEntry, Manifest, ModelType, TensorSpec};
use skyreels_graph::{DType, Dim, Graph, Model};

/// An engine directory with one graph, `y = sigmoid(x)` over a `batch` axis.
fn engine_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut graph = Graph::new("sigmoid");
    let x = graph
        .input("x", DType::F32, vec![Dim::named("batch"), Dim::Known(4)])
        .expect("input");
    let y = graph.sigmoid(&x).expect("sigmoid");
    graph
        .output(
            "y",
            &y,
            DType::F32,
            vec![Dim::named("batch"), Dim::Known(4)],
        )
        .expect("output");
    Model::from_graph(graph, &BTreeMap::new())
        .save(&dir.path().join("g.onnx"))
        .expect("save");
    let spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: "float32".into(),
        shape: vec!["batch".into(), "4".into()],
    };
    let config = DitConfig {
        model_type: ModelType::T2v,
        in_dim: 16,
        out_dim: 16,
        dim: 32,
        ffn_dim: 64,
        num_heads: 2,
        num_layers: 1,
        freq_dim: 256,
        text_dim: 32,
        text_len: 512,
        image_dim: None,
        image_len: None,
        eps: 1e-6,
        inject_sample_info: false,
    };
    let entry = GraphEntry {
        name: "embed".into(),
        file: "g.onnx".into(),
        inputs: vec![spec("x")],
        outputs: vec![spec("y")],
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        producer: "test".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention: skyreels_contract::Attention::MatMul,
        dit: Some(DitComponent {
            config,
            graphs: vec![entry],
            layers: Vec::new(),
            teacache: Vec::new(),
        }),
        vae: None,
        text_encoder: None,
        image_encoder: None,
        build: None,
        source: None,
    };
    manifest.save(dir.path()).expect("manifest");
    dir
}

fn skyreels_build(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyreels-build"))
        .arg(dir)
        .args(args)
        .output()
        .expect("run skyreels-build")
}

#[test]
fn tensorrt_without_tensorrt_exits_non_zero_naming_the_library() {
    assert!(
        skyreels_engines::requirements::find_library("libnvinfer.so.10").is_none(),
        "expects a machine without TensorRT 10"
    );
    let dir = engine_dir();
    let output = skyreels_build(dir.path(), &["--target", "tensorrt"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot build for tensorrt here:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("libnvinfer.so.10 (TensorRT 10)"),
        "{stderr}"
    );
    assert!(stderr.contains("fix: "), "{stderr}");
    assert!(
        Manifest::load(dir.path())
            .expect("manifest")
            .build
            .is_none()
    );
}

#[test]
fn cuda_without_a_gpu_exits_non_zero() {
    if skyreels_runtime::engine::gpu_name(0).is_some() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let output = skyreels_build(engine_dir().path(), &["--target", "cuda"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no NVIDIA GPU 0"), "{stderr}");
}

#[test]
fn cpu_build_exits_zero_and_records_the_build() {
    if let Err(e) = skyreels_runtime::onnxruntime::library_path() {
        panic!("{e}");
    }
    let dir = engine_dir();
    let output = skyreels_build(dir.path(), &["--target", "cpu"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let record = Manifest::load(dir.path())
        .expect("manifest")
        .build
        .expect("record");
    assert_eq!(
        record.files.get("g.onnx").map(String::as_str),
        Some("g.cpu.onnx")
    );
    assert!(dir.path().join("g.cpu.onnx").is_file());
    let output = skyreels_build(dir.path(), &["--target", "cpu", "--dtype", "bf16"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--dtype bf16 does not apply to --target cpu")
    );
}
