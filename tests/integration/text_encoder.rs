//! umT5 text encoder parity: prompt cleaning against ftfy 6.3.1 + `html.unescape`, token ids
//! against transformers' tokenizer call, and hidden states of a tiny seeded `UMT5EncoderModel`
//! (HF and Wan layouts, Wan also as a torch.save `.pth`; both attention forms) on ONNX Runtime CPU.

use std::path::Path;

use skyreels_contract::Attention;
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_graph::DType;
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::placement::WeightPlacement;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::{Backend, GraphSession, TensorPool};
use skyreels_runtime::text::{PromptTokenizer, TextEncoder, clean_prompt, fix_text, html_unescape};
use skyreels_tests::{fixtures_dir, float, int, read_safetensors, require_onnxruntime};

const TOLERANCE: f32 = 1e-4;

fn cases() -> serde_json::Value {
    let text = fs_err::read_to_string(fixtures_dir().join("text/cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("json")
}

fn export_engine(layout: &str, attention: Attention) -> tempfile::TempDir {
    let root = fixtures_dir().join("text");
    let out = tempfile::tempdir().expect("tempdir");
    let options = TextExportOptions {
        compute: DType::F32,
        attention,
        link_weights: true,
    };
    let export = text::export(
        &root.join(layout),
        &root.join("tokenizer.json"),
        out.path(),
        &options,
    )
    .expect("export");
    let manifest = skyreels_contract::Manifest {
        text_encoder: Some(export.component),
        ..skyreels_tests::cpu_manifest(attention)
    };
    manifest.save(out.path()).expect("manifest");
    out
}

#[test]
fn text_buckets_match_transformers() {
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("text/buckets.safetensors")).expect("buckets");
    let relative = int(&tensors, "relative").expect("relative");
    let bucket = int(&tensors, "bucket").expect("bucket");
    for (r, b) in relative.iter().zip(bucket) {
        assert_eq!(
            text::config::relative_position_bucket(*r, 32, 128),
            *b,
            "relative position {r}"
        );
    }
}

#[test]
fn text_cleaning_matches_ftfy_and_html_unescape() {
    let cases = cases();
    for case in cases["encode"].as_array().expect("encode") {
        let prompt = case["prompt"].as_str().expect("prompt");
        assert_eq!(
            clean_prompt(prompt),
            case["cleaned"].as_str().expect("cleaned"),
            "case {}",
            case["name"]
        );
    }
    for case in cases["clean"].as_array().expect("clean") {
        let prompt = case["prompt"].as_str().expect("prompt");
        assert_eq!(
            fix_text(prompt),
            case["fix_text"].as_str().expect("fix_text"),
            "fix_text({prompt:?})"
        );
        assert_eq!(
            html_unescape(prompt),
            case["html_unescape"].as_str().expect("html"),
            "html_unescape({prompt:?})"
        );
        assert_eq!(
            clean_prompt(prompt),
            case["cleaned"].as_str().expect("cleaned"),
            "clean_prompt({prompt:?})"
        );
    }
}

#[test]
fn text_token_ids_match_transformers() {
    let cases = cases();
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("text/cases.safetensors")).expect("cases");
    let fixture_tokenizer =
        PromptTokenizer::from_file(&fixtures_dir().join("text/tokenizer.json"), 512)
            .expect("tokenizer");
    let tiny_dir = tempfile::tempdir().expect("tempdir");
    let tiny_path = tiny_dir.path().join("tokenizer.json");
    fs_err::write(&tiny_path, text::tiny::tiny_tokenizer_json()).expect("write");
    let tiny_tokenizer = PromptTokenizer::from_file(&tiny_path, 512).expect("tiny tokenizer");
    for case in cases["encode"].as_array().expect("encode") {
        let name = case["name"].as_str().expect("name");
        let cleaned = case["cleaned"].as_str().expect("cleaned");
        let expected_ids = int(&tensors, &format!("{name}.input_ids")).expect("ids");
        let expected_mask = int(&tensors, &format!("{name}.attention_mask")).expect("mask");
        for (which, tokenizer) in [
            ("fixture", &fixture_tokenizer),
            ("rust tiny", &tiny_tokenizer),
        ] {
            let tokens = tokenizer.tokenize(cleaned).expect("tokenize");
            assert_eq!(tokens.ids, expected_ids, "{which} tokenizer, case {name}");
            assert_eq!(tokens.mask, expected_mask, "{which} tokenizer, case {name}");
            assert_eq!(
                tokens.truncated_tokens as u64,
                case["truncated_tokens"].as_u64().expect("n"),
                "case {name}"
            );
        }
    }
}

fn batch_error(engine_dir: &Path) -> f32 {
    let engine = Engine::open(engine_dir).expect("engine");
    let component = engine.manifest.text_encoder.clone().expect("text encoder");
    let mut session = GraphSession::load(
        &engine.dir,
        &component.graphs[0],
        &Backend::Cpu { threads: 2 },
    )
    .expect("load");
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("text/batch.safetensors")).expect("batch");
    let mut pool = TensorPool::new();
    for name in ["input_ids", "attention_mask"] {
        pool.insert_i64(name, vec![2, 24], int(&tensors, name).expect(name).to_vec())
            .expect("insert");
    }
    session.run(&mut pool).expect("run");
    let hidden: Tensor = pool
        .to_host(skyreels_contract::text::TEXT_HIDDEN_STATES)
        .expect("hidden");
    hidden.max_abs_diff(float(&tensors, "hidden").expect("hidden"))
}

#[test]
fn text_encoder_matches_transformers() {
    require_onnxruntime();
    let cases = cases();
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("text/cases.safetensors")).expect("cases");
    for layout in ["hf", "wan", "wan_pth/model.pth"] {
        for attention in [
            Attention::MatMul,
            Attention::ContribMha,
            Attention::OnnxAttention,
        ] {
            let engine_dir = export_engine(layout, attention);
            let error = batch_error(engine_dir.path());
            eprintln!(
                "text parity {layout}/{} batch[2, 24]: max-abs {error:.3e}",
                attention.name()
            );
            assert!(
                error <= TOLERANCE,
                "{layout}/{} batch: max-abs {error}",
                attention.name()
            );
            let engine = Engine::open(engine_dir.path()).expect("engine");
            let mut encoder =
                TextEncoder::load(&engine, &Backend::Cpu { threads: 2 }).expect("load");
            let mut worst = 0.0f32;
            for case in cases["encode"].as_array().expect("encode") {
                let name = case["name"].as_str().expect("name");
                let hidden = encoder
                    .encode(case["prompt"].as_str().expect("prompt"))
                    .expect("encode");
                assert_eq!(hidden.shape, vec![1, 512, 32]);
                let error = hidden
                    .max_abs_diff(float(&tensors, &format!("{name}.hidden")).expect("hidden"));
                assert!(
                    error <= TOLERANCE,
                    "{layout}/{} case {name}: max-abs {error}",
                    attention.name()
                );
                worst = worst.max(error);
            }
            eprintln!(
                "text parity {layout}/{} prompts: worst max-abs {worst:.3e}",
                attention.name()
            );
        }
    }
}

/// `--offload`'s encoder (block by block, weights streamed through two slots, embedding rows read
/// on the host) against transformers and against the whole graph, for every layout and attention.
#[test]
fn text_encoder_streamed_block_by_block_matches_transformers_and_the_whole_graph() {
    require_onnxruntime();
    let cases = cases();
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("text/cases.safetensors")).expect("cases");
    let backend = Backend::Cpu { threads: 2 };
    for layout in ["hf", "wan", "wan_pth/model.pth"] {
        for attention in [
            Attention::MatMul,
            Attention::ContribMha,
            Attention::OnnxAttention,
        ] {
            let engine_dir = export_engine(layout, attention);
            let engine = Engine::open(engine_dir.path()).expect("engine");
            let text = engine.manifest.text_encoder.as_ref().expect("text encoder");
            assert!(text.has_layer_graphs(), "{layout}: no layer graphs");
            assert_eq!(text.layers.len(), text.config.num_layers);
            let mut whole = TextEncoder::load(&engine, &backend).expect("load whole");
            let mut streamed = TextEncoder::load_with(&engine, &backend, WeightPlacement::Streamed)
                .expect("load streamed");
            assert_eq!(streamed.placement(), WeightPlacement::Streamed);
            let (mut worst, mut worst_whole) = (0.0f32, 0.0f32);
            for case in cases["encode"].as_array().expect("encode") {
                let name = case["name"].as_str().expect("name");
                let prompt = case["prompt"].as_str().expect("prompt");
                let hidden = streamed.encode(prompt).expect("encode streamed");
                let error = hidden
                    .max_abs_diff(float(&tensors, &format!("{name}.hidden")).expect("hidden"));
                assert!(
                    error <= TOLERANCE,
                    "{layout}/{} case {name}: streamed max-abs {error}",
                    attention.name()
                );
                let reference = whole.encode(prompt).expect("encode whole");
                let to_whole = hidden.max_abs_diff(&reference);
                assert!(
                    to_whole <= 1e-6,
                    "{layout}/{} case {name}: streamed vs whole graph max-abs {to_whole}",
                    attention.name()
                );
                worst = worst.max(error);
                worst_whole = worst_whole.max(to_whole);
            }
            eprintln!(
                "text streamed {layout}/{}: worst max-abs {worst:.3e} to transformers, {worst_whole:.3e} to the whole graph",
                attention.name()
            );
        }
    }
}

#[test]
fn text_tiny_model_encodes_a_prompt() {
    require_onnxruntime();
    let model = tempfile::tempdir().expect("tempdir");
    text::tiny::write_tiny(model.path(), 0).expect("tiny");
    let found =
        text::locate(&model.path().join("transformer")).expect("located from a sibling folder");
    let out = tempfile::tempdir().expect("tempdir");
    let options = TextExportOptions {
        compute: DType::F32,
        attention: Attention::MatMul,
        link_weights: false,
    };
    let export =
        text::export(&found.checkpoint, &found.tokenizer, out.path(), &options).expect("export");
    let manifest = skyreels_contract::Manifest {
        text_encoder: Some(export.component),
        ..skyreels_tests::cpu_manifest(skyreels_contract::Attention::MatMul)
    };
    manifest.save(out.path()).expect("manifest");
    let engine = Engine::open(out.path()).expect("engine");
    let mut encoder = TextEncoder::load(&engine, &Backend::Cpu { threads: 2 }).expect("load");
    let tokens = encoder
        .tokenize("A red car on the beach")
        .expect("tokenize");
    let length = tokens.mask.iter().sum::<i64>() as usize;
    let hidden = encoder.encode("A red car on the beach").expect("encode");
    assert_eq!(hidden.shape, vec![1, 512, 32]);
    let row = |i: usize| &hidden.data[i * 32..(i + 1) * 32];
    assert!(
        row(length - 1).iter().any(|v| *v != 0.0),
        "the </s> row is encoded"
    );
    assert!(
        (length..512).all(|i| row(i).iter().all(|v| *v == 0.0)),
        "rows past the prompt are zero"
    );
}

#[test]
fn text_encoder_graph_structure() {
    let model = tempfile::tempdir().expect("tempdir");
    let (checkpoint, tokenizer) = text::tiny::write_tiny(model.path(), 0).expect("tiny");
    let out = tempfile::tempdir().expect("tempdir");
    for attention in [
        Attention::MatMul,
        Attention::ContribMha,
        Attention::OnnxAttention,
    ] {
        let options = TextExportOptions {
            compute: DType::F32,
            attention,
            link_weights: false,
        };
        text::export(&checkpoint, &tokenizer, out.path(), &options).expect("export");
        let graph = skyreels_graph::Model::load(&out.path().join(text::GRAPH_FILE)).expect("load");
        insta::assert_snapshot!(
            format!("text_encoder_tiny_{}", attention.name()),
            skyreels_graph::dump_model(&graph)
        );
    }
}
