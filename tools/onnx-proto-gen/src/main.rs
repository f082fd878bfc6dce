//! Generates the prost types for `onnx.proto`; the output is committed so builds need no protoc.
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("crates/graph/proto");
    let out_dir = root.join("crates/graph/src");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.out_dir(&out_dir);
    config
        .compile_protos(&[proto_dir.join("onnx.proto")], &[proto_dir])
        .expect("compile onnx.proto");
    std::fs::rename(out_dir.join("onnx.rs"), out_dir.join("onnx_proto.rs")).expect("rename");
}
