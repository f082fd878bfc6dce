//! VAE parity: the tiny seeded diffusers `AutoencoderKLWan` (both checkpoint layouts) exported with
//! `skyreels-export`'s library, run chunk by chunk on ONNX Runtime CPU, against diffusers 0.42.1.

use std::path::Path;

use skyreels_exporter::vae::{self, VaeExportOptions};
use skyreels_runtime::Tensor;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::Backend;
use skyreels_runtime::vae::{DecodeState, VaeDecoder, VaeEncoder, clamp_video};
use skyreels_runtime::vae_tiling::{VaeTiling, decode_tiled};
use skyreels_tests::{fixtures_dir, float, read_safetensors, require_onnxruntime};

const TOLERANCE: f32 = 1e-4;

fn export_engine(checkpoint: &Path) -> tempfile::TempDir {
    export_engine_as(checkpoint, skyreels_graph::DType::F32)
}

fn export_engine_as(checkpoint: &Path, compute: skyreels_graph::DType) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let export = vae::export(
        checkpoint,
        out.path(),
        &VaeExportOptions {
            compute,
            link_weights: true,
        },
    )
    .expect("export");
    let manifest = skyreels_contract::Manifest {
        vae: Some(export.component),
        ..skyreels_tests::cpu_manifest(skyreels_contract::Attention::MatMul)
    };
    manifest.save(out.path()).expect("manifest");
    out
}

fn checkpoint(layout: &str) -> std::path::PathBuf {
    let root = fixtures_dir().join("vae");
    match layout {
        "diffusers" => root.join("diffusers"),
        _ => root.join("original").join("Wan2.1_VAE.safetensors"),
    }
}

fn backend() -> Backend {
    Backend::Cpu { threads: 2 }
}

/// Encodes and decodes the cases of `cases_file` with the engine exported from `checkpoint`.
fn assert_parity(label: &str, checkpoint: &Path, cases_file: &str) {
    require_onnxruntime();
    let (cases, _) = read_safetensors(&fixtures_dir().join("vae").join(cases_file)).expect("cases");
    let case =
        |name: &str| float(&cases, name).unwrap_or_else(|| panic!("fixture tensor `{name}`"));
    let engine_dir = export_engine(checkpoint);
    let engine = Engine::open(engine_dir.path()).expect("engine");

    let mut encoder = VaeEncoder::load(&engine, &backend()).expect("load encoder");
    let latents = encoder.encode(case("encode_video")).expect("encode");
    let error = latents.max_abs_diff(case("encode_latents"));
    eprintln!(
        "vae parity {label}: encode {:?} max-abs {error:.3e}",
        latents.shape
    );
    assert!(
        error <= TOLERANCE,
        "{label}: encode max-abs {error} > {TOLERANCE}"
    );

    let mut decoder = VaeDecoder::load(&engine, &backend()).expect("load decoder");
    let unclamped = decoder
        .decode_unclamped(case("decode_latents"))
        .expect("decode");
    let expected = case("decode_video_unclamped");
    let error = unclamped.max_abs_diff(expected);
    eprintln!(
        "vae parity {label}: decode {:?} before the clamp max-abs {error:.3e}",
        unclamped.shape
    );
    assert!(
        error <= TOLERANCE,
        "{label}: decode (unclamped) max-abs {error} > {TOLERANCE}"
    );

    let video = decoder.decode(case("decode_latents")).expect("decode");
    let mut expected_clamped = expected.clone();
    clamp_video(&mut expected_clamped);
    let error = video.max_abs_diff(&expected_clamped);
    eprintln!("vae parity {label}: decode clamped max-abs {error:.3e}");
    assert!(
        error <= TOLERANCE,
        "{label}: decode (clamped) max-abs {error} > {TOLERANCE}"
    );
    assert!(video.data.iter().all(|v| (-1.0..=1.0).contains(v)));
}

/// `--vae-tiling`: diffusers' `tiled_decode` with tiles of 32x32 pixels every 24 (rows) x 16
/// (columns) over a 7x9 latent: 3 rows and 5 columns of tiles, the last ones cut short.
#[test]
fn vae_tiled_decode_matches_diffusers_tiled_decode() {
    require_onnxruntime();
    let (cases, metadata) =
        read_safetensors(&fixtures_dir().join("vae/tiled_cases.safetensors")).expect("cases");
    let tiling: serde_json::Value =
        serde_json::from_str(&metadata["tiling"]).expect("tiling metadata");
    let size = |key: &str| tiling[key].as_u64().expect(key) as usize;
    let tiling = VaeTiling {
        tile: [
            size("tile_sample_min_height"),
            size("tile_sample_min_width"),
        ],
        stride: [
            size("tile_sample_stride_height"),
            size("tile_sample_stride_width"),
        ],
    };
    let engine_dir = export_engine(&checkpoint("diffusers"));
    let engine = Engine::open(engine_dir.path()).expect("engine");
    let mut decoder = VaeDecoder::load(&engine, &backend()).expect("load decoder");
    let latents = float(&cases, "decode_latents").expect("latents");
    let video = decode_tiled(&mut decoder, latents, &tiling).expect("tiled decode");
    let expected = float(&cases, "decode_video").expect("video");
    let error = video.max_abs_diff(expected);
    let whole = decoder.decode(latents).expect("decode");
    let seams = whole.max_abs_diff(expected);
    eprintln!(
        "vae tiled parity {:?}: max-abs {error:.3e} (the untiled decode differs by {seams:.3e})",
        video.shape
    );
    assert!(
        error <= TOLERANCE,
        "tiled decode max-abs {error} > {TOLERANCE}"
    );
    assert!(seams > 0.1, "the fixture's tiles should matter ({seams})");
}

#[test]
fn vae_matches_diffusers_in_both_layouts() {
    for layout in ["diffusers", "original"] {
        assert_parity(layout, &checkpoint(layout), "cases.safetensors");
    }
}

#[test]
fn vae_pth_checkpoint_matches_diffusers() {
    let folder = fixtures_dir().join("vae").join("pth");
    let located = vae::locate(&folder).expect("Wan2.1_VAE.pth is found in its folder");
    assert_eq!(located, folder.join("Wan2.1_VAE.pth"));
    assert_parity("pth", &located, "pth_cases.safetensors");
}

/// Frames `start..start + count` of a `[B, C, T, H, W]` tensor.
fn frames(tensor: &Tensor, start: usize, count: usize) -> Tensor {
    let [b, c, t, h, w] = [
        tensor.shape[0],
        tensor.shape[1],
        tensor.shape[2],
        tensor.shape[3],
        tensor.shape[4],
    ];
    let plane = h * w;
    let mut data = Vec::new();
    for bc in 0..b * c {
        data.extend_from_slice(
            &tensor.data[(bc * t + start) * plane..(bc * t + start + count) * plane],
        );
    }
    Tensor::new(vec![b, c, count, h, w], data).expect("frames")
}

#[test]
fn vae_is_causal_and_streams_frame_by_frame() {
    require_onnxruntime();
    let (cases, _) =
        read_safetensors(&fixtures_dir().join("vae").join("cases.safetensors")).expect("cases");
    let latents = float(&cases, "decode_latents").expect("decode_latents");
    let engine_dir = export_engine(&checkpoint("diffusers"));
    let engine = Engine::open(engine_dir.path()).expect("engine");
    let mut decoder = VaeDecoder::load(&engine, &backend()).expect("load decoder");
    let full = decoder.decode_unclamped(latents).expect("decode all");
    let shorter = decoder
        .decode_unclamped(&frames(latents, 0, 3))
        .expect("decode three");
    assert_eq!(shorter.shape[2], 9);
    assert_eq!(
        shorter,
        frames(&full, 0, 9),
        "decoding F-1 latents must give the first frames of decoding F"
    );

    let mut state = DecodeState::default();
    let mut produced = Vec::new();
    for index in 0..latents.shape[2] {
        let chunk = decoder
            .decode_frame(&mut state, &frames(latents, index, 1))
            .expect("decode frame");
        assert_eq!(chunk.shape[2], if index == 0 { 1 } else { 4 });
        produced.push((index, chunk));
    }
    let mut start = 0;
    for (_, chunk) in &produced {
        assert_eq!(chunk, &frames(&full, start, chunk.shape[2]));
        start += chunk.shape[2];
    }

    let video = float(&cases, "encode_video").expect("encode_video");
    let mut encoder = VaeEncoder::load(&engine, &backend()).expect("load encoder");
    let all = encoder.encode(video).expect("encode all");
    let prefix = encoder.encode(&frames(video, 0, 5)).expect("encode five");
    assert_eq!(
        prefix,
        frames(&all, 0, 2),
        "encoding the first 5 frames must give the first 2 latents"
    );
    assert!(
        encoder.encode(&frames(video, 0, 4)).is_err(),
        "4 frames are not 1 + 4k"
    );
}

#[test]
fn vae_graph_structure() {
    let out = tempfile::tempdir().expect("tempdir");
    let export = vae::export(
        &checkpoint("diffusers"),
        out.path(),
        &VaeExportOptions {
            compute: skyreels_graph::DType::F32,
            link_weights: false,
        },
    )
    .expect("export");
    for entry in &export.component.graphs {
        let graph = skyreels_graph::Model::load(&out.path().join(&entry.file)).expect("load");
        insta::assert_snapshot!(
            format!("vae_tiny_{}", entry.name),
            skyreels_graph::dump_model(&graph)
        );
    }
}

/// The float16 export (the CUDA default) against diffusers' float32 results. ONNX Runtime's CPU
/// provider runs its float16 convolutions, so the precision loss is measured here; the GPU runs
/// the same graphs. For scale: diffusers' own VAE cast to bf16 misses the same float32 results by
/// 2.2e-2 (encode) and 0.29 (clamped decode; fp16: 1.5e-2 and 0.16) on this model, whose
/// unclamped output reaches 5.9.
#[test]
fn vae_float16_export_stays_close_to_the_reference() {
    require_onnxruntime();
    let (cases, _) =
        read_safetensors(&fixtures_dir().join("vae").join("cases.safetensors")).expect("cases");
    let case =
        |name: &str| float(&cases, name).unwrap_or_else(|| panic!("fixture tensor `{name}`"));
    let engine_dir = export_engine_as(&checkpoint("diffusers"), skyreels_graph::DType::F16);
    let engine = Engine::open(engine_dir.path()).expect("engine");
    let latents = VaeEncoder::load(&engine, &backend())
        .expect("encoder")
        .encode(case("encode_video"))
        .expect("encode");
    let encode_error = latents.max_abs_diff(case("encode_latents"));
    let video = VaeDecoder::load(&engine, &backend())
        .expect("decoder")
        .decode_unclamped(case("decode_latents"))
        .expect("decode");
    let decode_error = video.max_abs_diff(case("decode_video_unclamped"));
    eprintln!(
        "vae float16: encode max-abs {encode_error:.3e}, decode before the clamp max-abs {decode_error:.3e}"
    );
    assert!(
        encode_error <= 1e-2 && decode_error <= 6e-2,
        "float16 VAE: encode {encode_error}, decode {decode_error}"
    );
}
