//! CLIP image encoder parity: preprocessing against transformers' `CLIPImageProcessorPil` (and
//! upstream's squash interpolation against torch), and penultimate hidden states of a tiny seeded
//! `CLIPVisionModelWithProjection` (HF and Wan layouts, Wan also as a torch.save `.pth`; both
//! attention forms) on ONNX Runtime CPU.

use skyreels_contract::Attention;
use skyreels_contract::image::{ImagePreprocess, ImageResizeMode};
use skyreels_exporter::image::{self, CLIP_MEAN, CLIP_STD, ImageExportOptions};
use skyreels_graph::DType;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::image::{ImageEncoder, RgbImage, preprocess_image};
use skyreels_runtime::session::Backend;
use skyreels_tests::{fixtures_dir, float, read_safetensors, require_onnxruntime};

const TOLERANCE: f32 = 1e-4;
const IMAGES: [&str; 2] = ["downscale", "upscale"];

fn preprocess(resize: ImageResizeMode) -> ImagePreprocess {
    ImagePreprocess {
        resize,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    }
}

#[test]
fn clip_preprocessing_matches_transformers_pil_backend() {
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("clip/cases.safetensors")).expect("cases");
    for name in IMAGES {
        let image =
            RgbImage::open(&fixtures_dir().join(format!("clip/images/{name}.png"))).expect("image");
        let pixels = preprocess_image(
            &image,
            224,
            &preprocess(ImageResizeMode::ShortestSideCenterCrop),
        );
        let error =
            pixels.max_abs_diff(float(&tensors, &format!("{name}.pixel_values")).expect("pixels"));
        eprintln!(
            "clip preprocessing {name} ({}x{}): max-abs {error:.3e}",
            image.width, image.height
        );
        assert!(error <= 1e-5, "{name}: max-abs {error}");
        if let Some(expected) = float(&tensors, &format!("{name}.squash_pixel_values")) {
            let squashed = preprocess_image(&image, 224, &preprocess(ImageResizeMode::Squash));
            let error = squashed.max_abs_diff(expected);
            eprintln!("clip squash {name}: max-abs {error:.3e}");
            assert!(error <= 1e-4, "{name} squash: max-abs {error}");
        }
    }
}

#[test]
fn clip_encoder_matches_transformers() {
    require_onnxruntime();
    let (tensors, _) =
        read_safetensors(&fixtures_dir().join("clip/cases.safetensors")).expect("cases");
    for layout in ["hf", "wan", "wan_pth/model.pth"] {
        for attention in [
            Attention::MatMul,
            Attention::ContribMha,
            Attention::OnnxAttention,
        ] {
            let out = tempfile::tempdir().expect("tempdir");
            let options = ImageExportOptions {
                compute: DType::F32,
                attention,
                link_weights: true,
                preprocess: preprocess(ImageResizeMode::ShortestSideCenterCrop),
            };
            let export = image::export(
                &fixtures_dir().join("clip").join(layout),
                out.path(),
                &options,
            )
            .expect("export");
            assert_eq!(export.component.config.num_tokens(), 257);
            let manifest = skyreels_contract::Manifest {
                image_encoder: Some(export.component),
                ..skyreels_tests::cpu_manifest(attention)
            };
            manifest.save(out.path()).expect("manifest");
            let engine = Engine::open(out.path()).expect("engine");
            let mut encoder =
                ImageEncoder::load(&engine, &Backend::Cpu { threads: 2 }).expect("load");
            for name in IMAGES {
                let image = RgbImage::open(&fixtures_dir().join(format!("clip/images/{name}.png")))
                    .expect("image");
                let hidden = encoder.encode(&image).expect("encode");
                assert_eq!(hidden.shape, vec![1, 257, 32]);
                let error = hidden
                    .max_abs_diff(float(&tensors, &format!("{name}.hidden")).expect("hidden"));
                eprintln!(
                    "clip parity {layout}/{} {name}: max-abs {error:.3e}",
                    attention.name()
                );
                assert!(
                    error <= TOLERANCE,
                    "{layout}/{} {name}: max-abs {error}",
                    attention.name()
                );
            }
        }
    }
}

#[test]
fn clip_encoder_graph_structure() {
    for layout in ["hf", "wan"] {
        let out = tempfile::tempdir().expect("tempdir");
        let options = ImageExportOptions {
            compute: DType::F32,
            attention: Attention::MatMul,
            link_weights: false,
            preprocess: preprocess(ImageResizeMode::ShortestSideCenterCrop),
        };
        image::export(
            &fixtures_dir().join("clip").join(layout),
            out.path(),
            &options,
        )
        .expect("export");
        let graph = skyreels_graph::Model::load(&out.path().join(image::GRAPH_FILE)).expect("load");
        insta::assert_snapshot!(
            format!("image_encoder_tiny_{layout}"),
            skyreels_graph::dump_model(&graph)
        );
    }
}
