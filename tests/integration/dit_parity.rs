//! DiT parity: tiny seeded diffusers models (both checkpoint layouts) exported with
//! `skyreels-export`'s library and run on ONNX Runtime CPU against diffusers 0.42.1 outputs.

use skyreels_contract::Attention;
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::Backend;
use skyreels_tests::{
    export_dit_engine, fixtures_dir, float, int, read_safetensors, require_onnxruntime,
};

const TOLERANCE: f32 = 1e-4;

/// Runs every case of `model` for one layout and attention form; returns (case, max-abs error).
fn run_cases(model: &str, layout: &str, attention: Attention) -> Vec<(String, f32)> {
    let root = fixtures_dir().join("dit").join(model);
    let engine_dir = export_dit_engine(&root.join(layout), attention);
    let engine = Engine::open(engine_dir.path()).expect("engine");
    let mut cases: Vec<_> = fs_err::read_dir(root.join("cases"))
        .expect("cases dir")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases for {model}");
    let mut results = Vec::new();
    for case in cases {
        let (tensors, _) = read_safetensors(&case).expect("fixture");
        let causal = int(&tensors, "causal_block_size").map(|v| v[0] as usize);
        let mut model_runner =
            Dit::load(&engine, &Backend::Cpu { threads: 2 }, causal).expect("load");
        let inputs = DitInputs {
            latents: float(&tensors, "latents").expect("latents"),
            timesteps: float(&tensors, "timesteps").expect("timesteps"),
            context: float(&tensors, "context").expect("context"),
            fps: int(&tensors, "fps"),
            image_context: float(&tensors, "image_context"),
        };
        let velocity = model_runner.forward(&inputs).expect("forward");
        let expected = float(&tensors, "velocity").expect("velocity");
        let error = velocity.max_abs_diff(expected);
        let name = case
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        eprintln!(
            "dit parity {model}/{layout}/{} {name}: max-abs {error:.3e}",
            attention.name()
        );
        results.push((name, error));
    }
    results
}

fn assert_parity(model: &str) {
    require_onnxruntime();
    for layout in ["diffusers", "original"] {
        for attention in [
            Attention::MatMul,
            Attention::ContribMha,
            Attention::OnnxAttention,
        ] {
            for (case, error) in run_cases(model, layout, attention) {
                assert!(
                    error <= TOLERANCE,
                    "{model}/{layout}/{case} ({}): max-abs {error} > {TOLERANCE}",
                    attention.name()
                );
            }
        }
    }
}

#[test]
fn dit_df_model_matches_diffusers() {
    assert_parity("df");
}

#[test]
fn dit_t2v_bf16_checkpoint_matches_diffusers() {
    assert_parity("t2v");
}

#[test]
fn dit_i2v_model_matches_diffusers() {
    assert_parity("i2v");
}

/// The block graphs' structure (signature, with the weight inputs, and op counts), for both
/// attention forms of the self-attention graph.
#[test]
fn dit_block_graph_structure() {
    let root = fixtures_dir().join("dit").join("df").join("diffusers");
    for attention in [Attention::MatMul, Attention::ContribMha] {
        let engine = export_dit_engine(&root, attention);
        for name in ["block_qkv", "attention", "block_out"] {
            let graph =
                skyreels_graph::Model::load(&engine.path().join(format!("dit_{name}.onnx")))
                    .expect("load");
            insta::assert_snapshot!(
                format!("dit_df_{}_{name}", attention.name()),
                skyreels_graph::dump_model(&graph)
            );
        }
    }
}
